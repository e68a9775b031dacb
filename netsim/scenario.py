"""A netsim scenario: the nodes, their links, the blob, when agents arrive and what breaks.

Structured from ``configs/netsim/<name>.toml`` into frozen attrs classes, with the same strict
converter as the daemon's configuration (unknown keys and bad values are refused by key path).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import attrs

from swarmreg.config import ByteSize, ConfigError, MiB, structure

# Each agent is a daemon process with its own libtorrent session (and a namespace in netns mode):
# two cores carry about 60 of them at the shipped caps, not hundreds.
MAX_RUN_AGENTS = 200


@attrs.frozen
class Links:
    """Rate caps in bytes per second (0: uncapped)."""

    origin_up: ByteSize = ByteSize(20 * MiB)
    agent_up: ByteSize = ByteSize(10 * MiB)
    agent_down: ByteSize = ByteSize(40 * MiB)


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


@attrs.frozen
class Fault:
    """At ``at`` seconds, ``kill`` a node (SIGKILL) or ``restart`` it (SIGKILL, then start it again
    on its data directory). ``node`` is "tracker", "origin" or "agent-<n>" (numbered from 0)."""

    at: float = attrs.field(validator=attrs.validators.ge(0))
    node: str
    action: Literal["kill", "restart"] = "restart"


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
    """One run: ``agents`` pull one blob of ``blob_size`` from a herd (origin + tracker).

    ``origins`` and ``layers`` (an image of that many blobs of ``blob_size`` each, pulled at once,
    each seeded by one origin) are for ``netsim model``: ``netsim run`` starts one origin and pulls
    one blob, and refuses a scenario that asks for more (``runnable``)."""

    name: str
    agents: int = attrs.field(validator=attrs.validators.ge(1))
    blob_size: ByteSize = ByteSize(16 * MiB)
    origins: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    layers: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    links: Links = Links()
    arrivals: Arrivals = Arrivals()
    faults: tuple[Fault, ...] = ()
    # A pull that has not finished by then fails the run.
    timeout: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    # Extra `--set` overrides for every agent, and for the herd (tuning experiments).
    agent_settings: tuple[str, ...] = ()
    herd_settings: tuple[str, ...] = ()
    reference: Reference | None = None

    def lower_bound(self) -> float:
        """T* = max(F/U_origins, F/d_agent, N*F/(U_origins + N*u_agent)), in seconds (0: uncapped),
        where F is every layer's bytes together and U_origins the origins' caps summed."""
        size, links, n = self.blob_size * self.layers, self.links, self.agents
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
        if self.origins != 1 or self.layers != 1:
            return (f"netsim run starts one origin and pulls one blob; this scenario has {self.origins} "
                    f"origins and {self.layers} layers: run it with `netsim model`")
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
    return structure(document, Scenario)
