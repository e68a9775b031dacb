"""Differential conformance: one request sequence, the reference registry and each target."""
