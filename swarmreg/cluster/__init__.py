"""Cluster membership: the members of each role (origins, trackers, indexes), which are up, and
which of them own a key (rendezvous hashing). Clients import it; it imports no server."""
