"""Making container runtimes pull through a swarmreg agent (``swarmreg containerd-config``)."""
