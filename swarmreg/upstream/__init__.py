"""Client side of pull-through caching: reaching upstream registries (see docs/upstreams.md)."""
