"""The OCI/Docker content layer: media types, repository names and tags, manifest parsing and the
referrers index. Pure functions and frozen values only; nothing here does I/O."""
