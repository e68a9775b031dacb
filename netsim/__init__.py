"""netsim: load tests of real swarmreg swarms on a simulated network.

Not built yet: the scenarios, namespaces and reports arrive with the netsim issue.
"""
