"""HTTP plumbing shared by every role: app factory, serving, streaming bodies, ranges."""
