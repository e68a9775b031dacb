"""The proxy role: the whole Docker Registry V2 / OCI distribution API, pushes included.

Layers go to the origin, manifests too (stored as blobs), and tags, manifest records
and per-repository blob links go to the index; the proxy itself keeps only upload
sessions in progress.
"""
