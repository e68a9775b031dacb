"""The Docker Registry HTTP API V2 / OCI distribution API, shared by the proxy and the agents."""
