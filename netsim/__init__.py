"""netsim: load tests of real swarmreg swarms.

``python -m netsim run configs/netsim/<name>.toml`` starts a herd and the scenario's agents as real
daemons, pulls one blob through every agent (checking each by digest), applies the scenario's
arrivals and faults, and reports completion times against the lower bound T* (a table, ``--json``,
a ``--plot`` PNG). As root each node gets a network namespace with tc-shaped links; otherwise
every node runs on loopback, capped by libtorrent's rate limits (docs/netsim.md).
"""
