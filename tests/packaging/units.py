"""systemd unit files read as systemd reads the parts the tests use: sections, repeated keys,
comments and backslash continuations; ExecStart split into its argv; time spans in seconds."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import attrs

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
# Where the units put the binary (the Containerfile's venv) and read their configs from.
INSTALLED_BINARY = "/opt/swarmreg/bin/swarmreg"
CONFIG_DIR = "/etc/swarmreg"


@attrs.frozen
class Unit:
    name: str
    path: Path
    # section -> key -> every value assigned, in order (a key may be set several times).
    sections: dict[str, dict[str, list[str]]]

    @classmethod
    def read(cls, path: Path) -> Unit:
        sections: dict[str, dict[str, list[str]]] = {}
        section: dict[str, list[str]] | None = None
        pending = ""
        for raw in path.read_text().splitlines():
            line = pending + raw.strip()
            pending = ""
            if not line or line.startswith(("#", ";")):
                continue
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            if line.startswith("[") and line.endswith("]"):
                section = sections.setdefault(line[1:-1], {})
                continue
            assert section is not None, f"{path}: {line!r} outside a section"
            key, sep, value = line.partition("=")
            assert sep, f"{path}: {line!r} is no assignment"
            section.setdefault(key.strip(), []).append(value.strip())
        return cls(path.name, path, sections)

    def get(self, key: str, section: str = "Service") -> str:
        """The value in force: the last assignment (every key the tests read is set once)."""
        return self.sections[section][key][-1]

    def all(self, key: str, section: str = "Service") -> list[str]:
        return self.sections.get(section, {}).get(key, [])

    @property
    def exec_start(self) -> list[str]:
        """ExecStart's command line (no prefixes such as '-' or '+', no specifiers: asserted)."""
        command = self.get("ExecStart")
        assert command[0] not in "-@:+!" and "%" not in command and "$" not in command, command
        return shlex.split(command)

    def seconds(self, key: str) -> float:
        """A time span such as ``20s``, ``20`` or ``1min 30s``, in seconds."""
        units = {"": 1.0, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "ms": 0.001}
        total = 0.0
        for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", self.get(key)):
            total += float(number) * units[unit]
        return total


def unit(name: str) -> Unit:
    """A unit of deploy/systemd by name (``swarmreg-herd.service``)."""
    return Unit.read(SYSTEMD_DIR / name)
