"""The agent role: on every host, fetches blobs from the swarm and seeds them to others."""
