"""The package's shape: clients load no server frameworks, and no module imports itself back.

The import graph is read from the source, every import counted: top level, under
``TYPE_CHECKING`` and inside functions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "swarmreg"

# Modules that roles load to talk to another role, and the configuration command's.
CLIENTS = ["swarmreg.tracker.client", "swarmreg.origin.client", "swarmreg.index.client",
           "swarmreg.tracker.wire", "swarmreg.origin.wire", "swarmreg.index.wire", "swarmreg.agent.wire",
           "swarmreg.config", "swarmreg.store.blobstore", "swarmreg.backends.router", "swarmreg.index.gc_client",
           "swarmreg.gc", "swarmreg.cluster.rings",
           "swarmreg.upstream.client", "swarmreg.upstream.names",
           # preheat's clients: the proxy's side of prefetch, the job, and `swarmreg load`
           "swarmreg.agent.client", "swarmreg.proxy.wire", "swarmreg.proxy.preheat", "swarmreg.load",
           # the admin API's command line, and what the index and the proxy share to select manifests
           "swarmreg.admin_cli", "swarmreg.index.selection", "swarmreg.proxy.admin_text", "swarmreg.durations",
           # replication's push client and its status command
           "swarmreg.index.remote", "swarmreg.replication_cli",
           # `swarmreg blob push` / `pull`: the origin's and an agent's clients, with rich's progress
           "swarmreg.transfer.cli", "swarmreg.transfer.push", "swarmreg.transfer.pull"]
SERVER_FRAMEWORKS = ("libtorrent", "quart", "quart_trio", "hypercorn", "werkzeug")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from a import b`` imports module a.b when there is one, else a name of a.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in modules and target != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "swarmreg.tracker.wire" in graph["swarmreg.tracker.client"]  # a top-level from-import
    assert "swarmreg.daemon" in graph["swarmreg.cli"]  # imported inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_servers_are_not_imported_by_clients():
    graph = import_graph()
    for client in ("swarmreg.tracker.client", "swarmreg.origin.client", "swarmreg.index.client",
                   "swarmreg.agent.client"):
        role = client.rsplit(".", 2)[1]
        assert not {m for m in graph[client] if m.endswith((".service", ".app"))}, client
        assert f"swarmreg.{role}.wire" in graph[client], f"{client} speaks its role's wire contract"


@pytest.mark.parametrize("module", CLIENTS)
def test_a_client_module_loads_no_server_framework(module):
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print(' '.join(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True).stdout.split()
    assert not [name for name in loaded if name.split(".")[0] in SERVER_FRAMEWORKS]


def test_config_show_loads_no_server_framework(tmp_path):
    script = ("import sys, runpy; sys.argv = ['swarmreg', 'config', 'show', '--set', f'data_dir={sys.argv[1]}'];"
              "code = 0\n"
              "try:\n    runpy.run_module('swarmreg', run_name='__main__')\n"
              "except SystemExit as exit:\n    code = exit.code or 0\n"
              "print('LOADED', ' '.join(sorted(sys.modules)), file=sys.stderr); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "[agent]" in done.stdout
    loaded = done.stderr.rsplit("LOADED", 1)[1].split()
    assert not [name for name in loaded if name.split(".")[0] in SERVER_FRAMEWORKS]
