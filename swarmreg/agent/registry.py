"""The agent's read-only Docker registry port: `docker pull localhost:16000/repo:tag`.

Tags and manifest records come from the index; manifests and layers come through
the swarm (or the local store, once held). Every method but GET and HEAD is 405.
"""

from __future__ import annotations

from quart import request
from quart_trio import QuartTrio

from swarmreg.errors import UNSUPPORTED, SwarmregError
from swarmreg.http.app import create_base_app
from swarmreg.registry.lookup import IndexReader
from swarmreg.registry.read import Content, add_read_routes


def create_registry_app(content: Content, index: IndexReader, *, default_registry: str = "") -> QuartTrio:
    """The agent's registry app: the pull side of the registry API, nothing else; repositories
    addressed as clients send them (``?ns=``, ``/v2/<host>/<repo>``, bare names falling back to
    ``default_registry``: swarmreg.registry.addressing)."""
    app = create_base_app("agent-registry")

    @app.before_request
    async def _read_only() -> None:
        if request.method not in ("GET", "HEAD"):
            raise SwarmregError(UNSUPPORTED, "this agent's registry is read-only: push to the proxy")

    add_read_routes(app, index, content, default_registry=default_registry)
    return app
