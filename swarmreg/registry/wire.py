"""The registry API's wire contract (OCI distribution / Docker Registry V2): routes, headers and
limits shared by the ports that serve it (the proxy, all of it; every agent, its read side)."""

from __future__ import annotations

from swarmreg.oci.pagination import MAX_PAGE

__all__ = ["MAX_PAGE"]  # the page bound (swarmreg.oci.pagination), part of this contract

BASE = "/v2/"
CATALOG_PATH = "/v2/_catalog"
TOKEN = "/token"
# Quart routes; ``name`` is a repository name, which may contain slashes.
MANIFEST_ROUTE = "/v2/<path:name>/manifests/<reference>"
BLOB_ROUTE = "/v2/<path:name>/blobs/<digest>"
UPLOADS_ROUTE = "/v2/<path:name>/blobs/uploads"
TAGS_ROUTE = "/v2/<path:name>/tags/list"
REFERRERS_ROUTE = "/v2/<path:name>/referrers/<digest>"

# containerd's query parameter on every request to a mirror: the upstream registry (host[:port])
# whose repository the path names.
NS = "ns"

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
CONTENT_DIGEST = "Docker-Content-Digest"
UPLOAD_UUID = "Docker-Upload-UUID"
OCI_SUBJECT = "OCI-Subject"
FILTERS_APPLIED = "OCI-Filters-Applied"

# A POST /token form (grant_type, username, password, scope, service, client_id) is small: at
# most this many bytes and fields.
TOKEN_FORM_LIMIT = 8 << 10
TOKEN_FORM_FIELDS = 100


def blob_path(repository: str, digest: object) -> str:
    return f"/v2/{repository}/blobs/{digest}"


def manifest_path(repository: str, reference: object) -> str:
    return f"/v2/{repository}/manifests/{reference}"


def upload_path(repository: str, uid: str) -> str:
    return f"/v2/{repository}/blobs/uploads/{uid}"


def tags_path(repository: str) -> str:
    return f"/v2/{repository}/tags/list"
