"""A herd with users and access rules for the admin API's tests, and what they inspect."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from swarmreg.config import load_config
from swarmreg.registry.auth import hash_password
from tests.conftest import PORT_ZERO, RunningDaemon, start_daemon

USERS = {"admin": "admin-pw", "carol": "carol-pw"}
# admin may do everything and use the admin API; carol may do everything else.
RULES = [("admin", ".*", ["pull", "push", "delete", "admin"]), ("carol", ".*", ["pull", "push", "delete"])]
HERD = ["origin", "tracker", "index", "proxy"]


def herd_config_text(auth: str = "basic", rules: list[tuple[str, str, list[str]]] | None = None,
                     users: dict[str, str] | None = None) -> str:
    """A configuration file's text: ``users`` (default USERS) with ``rules`` (default RULES)."""
    users = USERS if users is None else users
    rules = RULES if rules is None else rules
    lines = [f'[proxy]\nauth = "{auth}"\n']
    if users:
        lines.append("[proxy.users]\n" + "".join(f'{name} = "{hash_password(pw)}"\n' for name, pw in users.items()))
    lines += [f"[[proxy.access]]\nuser = {json.dumps(user)}\nrepositories = {json.dumps(pattern)}\n"
              f"actions = {json.dumps(actions)}\n" for user, pattern, actions in rules]
    return "\n".join(lines)


async def start_herd(nursery: trio.Nursery, tmp_path: Path, *overrides: str, auth: str = "basic",
                     rules: list[tuple[str, str, list[str]]] | None = None,
                     users: dict[str, str] | None = None, name: str = "herd") -> RunningDaemon:
    config_file = tmp_path / f"{name}.toml"
    config_file.write_text(herd_config_text(auth, rules, users))
    config = load_config(config_file, [*PORT_ZERO, "shutdown_timeout=5", *overrides], data_dir=str(tmp_path / name))
    return await start_daemon(nursery, config, HERD)


@contextmanager
def index_db(herd: RunningDaemon) -> Iterator[sqlite3.Connection]:
    """A second connection to the herd's SQLite file, as another writer would open one."""
    db = sqlite3.connect(Path(herd.config.data_dir) / herd.config.index.database, timeout=10)
    try:
        with db:
            yield db
    finally:
        db.close()


def backdate(herd: RunningDaemon, repository: str, days: float) -> None:
    """Make the repository's manifests as if recorded ``days`` ago."""
    when = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with index_db(herd) as db:
        db.execute("UPDATE manifests SET created = ? WHERE repository = ?", (when, repository))


def access_times(herd: RunningDaemon) -> dict[str, str | None]:
    """Each repository's manifest's ``accessed`` as written to the database."""
    with index_db(herd) as db:
        return dict(db.execute("SELECT repository, accessed FROM manifests"))


def table(text: str) -> list[list[str]]:
    """A columnar answer split into rows of fields (as ``awk`` would read it)."""
    return [line.split() for line in text.splitlines()]
