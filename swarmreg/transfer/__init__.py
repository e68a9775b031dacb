"""``swarmreg blob push`` and ``swarmreg blob pull``: blobs moved by hand, resumable, with progress."""
