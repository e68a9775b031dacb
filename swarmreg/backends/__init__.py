"""Storage backends: where blobs live durably, chosen per namespace.

``base`` is the interface, ``types`` the registry of backend types (the built-in
ones included), ``router`` the per-namespace choice; each backend has its module.
"""
