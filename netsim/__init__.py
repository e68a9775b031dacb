"""netsim: load tests of real swarmreg swarms.

``python -m netsim run configs/netsim/<name>.toml`` starts a herd and the scenario's agents as real
daemons, pulls one blob through every agent (checking each by digest), applies the scenario's
arrivals and faults, and reports completion times against the lower bound T*. Built so far:
loopback mode (link caps from libtorrent's rate limits); network namespaces with tc shaping and
the PNG plot are still to come (docs/netsim.md).
"""
