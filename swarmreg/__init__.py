"""swarmreg: a peer-to-peer Docker/OCI registry in Python."""

__version__ = "0.1.0"
