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


@attrs.frozen
class Scenario:
    """One run: ``agents`` pull one blob of ``blob_size`` from a herd (origin + tracker)."""

    name: str
    agents: int = attrs.field(validator=attrs.validators.ge(1))
    blob_size: ByteSize = ByteSize(16 * MiB)
    links: Links = Links()
    arrivals: Arrivals = Arrivals()
    faults: tuple[Fault, ...] = ()
    # A pull that has not finished by then fails the run.
    timeout: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    # Extra `--set` overrides for every agent, and for the herd (tuning experiments).
    agent_settings: tuple[str, ...] = ()
    herd_settings: tuple[str, ...] = ()

    def lower_bound(self) -> float:
        """T* = max(F/u_origin, F/d_agent, N*F/(u_origin + N*u_agent)), in seconds (0: uncapped)."""
        size, links, n = self.blob_size, self.links, self.agents
        terms = []
        if links.origin_up:
            terms.append(size / links.origin_up)
        if links.agent_down:
            terms.append(size / links.agent_down)
        if links.origin_up and links.agent_up:
            terms.append(n * size / (links.origin_up + n * links.agent_up))
        return max(terms, default=0.0)


def load_scenario(path: Path) -> Scenario:
    """Read a scenario file; ConfigError names what is wrong."""
    try:
        document = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read scenario {path}: {error}") from None
    document.setdefault("name", Path(path).stem)
    return structure(document, Scenario)
