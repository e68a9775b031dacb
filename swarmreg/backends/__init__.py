"""Storage backends: where blobs live durably, chosen per namespace.

Importing this package registers every built-in backend type.
"""

from swarmreg.backends import filesystem as _filesystem  # noqa: F401  (registers "filesystem")
from swarmreg.backends.base import Backend, BlobStream, backend_type, backend_types, register_backend
from swarmreg.backends.router import BackendRouter

__all__ = ["Backend", "BackendRouter", "BlobStream", "backend_type", "backend_types", "register_backend"]
