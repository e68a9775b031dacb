"""A netsim scenario: the nodes, their links, the blob or image, when agents arrive and what breaks.

Structured from ``configs/netsim/<name>.toml`` into frozen attrs classes, with the same strict
converter as the daemon's configuration (unknown keys and bad values are refused by key path).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import attrs

from swarmreg.config import ByteSize, ConfigError, MiB, structure

# Each agent is a daemon process with its own libtorrent session (and a namespace in netns mode):
# two cores carry about 60 of them at the shipped caps, not hundreds.
MAX_RUN_AGENTS = 200


@attrs.frozen
class Links:
    """Rate caps in bytes per second (0: uncapped), and the links' MTU (netns mode)."""

    origin_up: ByteSize = ByteSize(20 * MiB)
    agent_up: ByteSize = ByteSize(10 * MiB)
    agent_down: ByteSize = ByteSize(40 * MiB)
    mtu: int = attrs.field(default=1500, validator=[attrs.validators.ge(576), attrs.validators.le(65535)])


@attrs.frozen
class Arrivals:
    """When agents start pulling: ``all`` at once, ``staggered`` one every ``interval`` seconds, or
    ``waves`` of ``wave_size`` agents every ``interval`` seconds."""

    mode: Literal["all", "staggered", "waves"] = "all"
    interval: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    wave_size: int = attrs.field(default=10, validator=attrs.validators.ge(1))

    def start_times(self, agents: int) -> list[float]:
        """Seconds after the start at which each agent begins its pull."""
        if self.mode == "all":
            return [0.0] * agents
        if self.mode == "staggered":
            return [i * self.interval for i in range(agents)]
        return [(i // self.wave_size) * self.interval for i in range(agents)]


def _refusal_lasts(instance: Fault, _attribute: attrs.Attribute[float], value: float) -> None:
    if (instance.action == "refuse") != (value > 0):
        raise ValueError("a refuse fault lasts for seconds > 0; kill and restart take none")


@attrs.frozen
class Fault:
    """At ``at`` seconds, ``kill`` a node (SIGKILL) or ``restart`` it (SIGKILL, then start it again
    on its data directory), or have it ``refuse`` every peer-wire connection, in and out, for
    ``duration`` seconds (netns mode: its dials and the dials to it are reset, as through a
    full or flapping link). ``node`` is "tracker", "origin" or "agent-<n>" (numbered from 0)."""

    at: float = attrs.field(validator=attrs.validators.ge(0))
    node: str
    action: Literal["kill", "restart", "refuse"] = "restart"
    duration: float = attrs.field(default=0.0, validator=[attrs.validators.ge(0), _refusal_lasts])


# Docker's overlay2 driver stacks at most 128 layers.
MAX_LAYERS = 128


def _layer_sizes(_instance: object, _attribute: attrs.Attribute[tuple[ByteSize, ...]],
                 value: tuple[ByteSize, ...]) -> None:
    if not 1 <= len(value) <= MAX_LAYERS:
        raise ValueError(f"'layers' must name from 1 to {MAX_LAYERS} layer sizes, not {len(value)}")
    if not all(value):
        raise ValueError("'layers' must be sizes above 0")


@attrs.frozen
class ImageSpec:
    """An image to pull instead of one blob: its layers' sizes. It is pushed to the herd's proxy
    with a config naming the layers, and each agent pulls it through its registry API."""

    layers: tuple[ByteSize, ...] = attrs.field(validator=_layer_sizes)

    @property
    def size(self) -> int:
        return sum(self.layers)


@attrs.frozen
class Reference:
    """Published figures to hold a model's prediction against (``netsim model`` prints them)."""

    name: str
    source: str
    p50_s: float = attrs.field(validator=attrs.validators.gt(0))
    p99_s: float = attrs.field(validator=attrs.validators.gt(0))
    p999_s: float = attrs.field(validator=attrs.validators.gt(0))


@attrs.frozen
class Scenario:
    """One run: ``agents`` pull one blob of ``blob_size`` from a herd (origin + tracker), or an
    ``image`` from a herd that also runs the index and the proxy.

    ``origins`` (each layer seeded by its own origin) is for ``netsim model``: ``netsim run``
    starts one origin, and refuses a scenario that asks for more (``runnable``)."""

    name: str
    agents: int = attrs.field(validator=attrs.validators.ge(1))
    blob_size: ByteSize = ByteSize(16 * MiB)
    origins: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    image: ImageSpec | None = None
    links: Links = Links()
    arrivals: Arrivals = Arrivals()
    faults: tuple[Fault, ...] = ()
    # A pull that has not finished by then fails the run.
    timeout: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    # Extra `--set` overrides for every agent, and for the herd (tuning experiments).
    agent_settings: tuple[str, ...] = ()
    herd_settings: tuple[str, ...] = ()
    reference: Reference | None = None

    @property
    def size(self) -> int:
        """F, the bytes each agent pulls: the blob, or the image's layers (they share the links)."""
        return self.blob_size if self.image is None else self.image.size

    def lower_bound(self) -> float:
        """T* = max(F/U_origins, F/d_agent, N*F/(U_origins + N*u_agent)), in seconds (0: uncapped),
        where F is the blob's bytes or every layer's together and U_origins the origins' caps summed."""
        size, links, n = self.size, self.links, self.agents
        origins_up = links.origin_up * self.origins
        terms = []
        if origins_up:
            terms.append(size / origins_up)
        if links.agent_down:
            terms.append(size / links.agent_down)
        if origins_up and links.agent_up:
            terms.append(n * size / (origins_up + n * links.agent_up))
        return max(terms, default=0.0)

    def runnable(self) -> str | None:
        """Why ``netsim run`` cannot run this scenario on this machine (None: it can)."""
        if self.origins != 1:
            return (f"netsim run starts one origin; this scenario has {self.origins} origins: "
                    f"run it with `netsim model`")
        if self.agents > MAX_RUN_AGENTS:
            return (f"{self.agents} agents are more daemons than this machine can run (at most "
                    f"{MAX_RUN_AGENTS}): run it with `netsim model`")
        return None


def load_scenario(path: Path) -> Scenario:
    """Read a scenario file; ConfigError names what is wrong."""
    try:
        document = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read scenario {path}: {error}") from None
    document.setdefault("name", Path(path).stem)
    if "image" in document:
        _check_image(document)
    return structure(document, Scenario)


def _check_image(document: dict[str, Any]) -> None:
    """What cattrs cannot tell about ``[image]``: whether blob_size was given too (it has a default),
    a string for the list of sizes (it would take its characters), a value that is no table."""
    image = document["image"]
    wrong = ("image: a scenario pulls one blob (blob_size) or an image ([image]), not both"
             if "blob_size" in document else
             "image: expected a table" if not isinstance(image, dict) else
             'image.layers: expected a list of sizes, such as ["8MiB", "16MiB"]'
             if isinstance(image.get("layers"), str) else None)
    if wrong:
        raise ConfigError(f"invalid configuration:\n  {wrong}")
