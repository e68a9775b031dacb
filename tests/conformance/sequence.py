"""The declarative conformance sequence: the OCI distribution spec's four workflows, in order.

Order: base and errors on an empty registry, push (every upload method), pull, cross-repository
mount, manifests, content discovery (tags, catalog), referrers, then content management
(deletes) and the errors that follow them. Probes whose answer may differ between correct
registries (an out-of-order PATCH, a failed digest check) run on uploads of their own that are
then cancelled, so no target's answer changes what later steps see.
"""

from __future__ import annotations

from functools import partial

from .content import (
    ACCEPT_ALL,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    SBOM,
    SIGNATURE,
    Content,
    digest,
    digest512,
    image_index,
)
from .steps import Step

APP = "conformance/app"
MIRROR = "conformance/mirror"
MISSING = "conformance/missing"
OCTET = {"Content-Type": "application/octet-stream"}
ACCEPT = {"Accept": ACCEPT_ALL}
CHUNK = 65536
ZERO_DIGEST = "sha256:" + "0" * 64


def blob(repo: str, data_or_digest: bytes | str) -> str:
    ref = data_or_digest if isinstance(data_or_digest, str) else digest(data_or_digest)
    return f"/v2/{repo}/blobs/{ref}"


def manifest(repo: str, ref: str | bytes) -> str:
    return f"/v2/{repo}/manifests/{ref if isinstance(ref, str) else digest(ref)}"


def uploads(repo: str) -> str:
    return f"/v2/{repo}/blobs/uploads/"


def put_manifest(name: str, repo: str, ref: str | bytes, body: bytes, media_type: str,
                 expect: int = 201, **kw: object) -> Step:
    return Step(name, "push", "PUT", manifest(repo, ref), expect, body=body,
                headers={"Content-Type": media_type}, **kw)  # type: ignore[arg-type]


def base_and_errors(c: Content) -> list[Step]:
    s = partial(Step, workflow="errors")
    return [
        Step("base.v2", "base", "GET", "/v2/", 200, note="API version check"),
        s(name="errors.blob-head-unknown-repo", method="HEAD", url=blob(MISSING, c.config), expect=404),
        s(name="errors.blob-get-unknown-repo", method="GET", url=blob(MISSING, c.config), expect=404),
        s(name="errors.manifest-get-unknown-repo", method="GET", url=manifest(MISSING, "latest"),
          expect=404, headers=ACCEPT),
        s(name="errors.manifest-head-unknown-repo", method="HEAD", url=manifest(MISSING, "latest"),
          expect=404, headers=ACCEPT),
        s(name="errors.tags-unknown-repo", method="GET", url=f"/v2/{MISSING}/tags/list", expect=404),
        s(name="errors.upload-status-unknown-id", method="GET",
          url=uploads(APP) + "00000000-0000-4000-8000-000000000000", expect=404),
    ]


def monolithic(name: str, data: bytes, ref: str | None = None) -> list[Step]:
    """A single-POST upload, and the PUT a client sends if the registry opened an upload instead.

    ``ref`` is the digest to push it under (default: its sha256)."""
    ref = ref or digest(data)
    created = {"docker-content-digest": ref, "location": blob(APP, ref)}
    return [
        Step(name, "push", "POST", uploads(APP), (201, 202), params={"digest": ref}, body=data,
             headers=OCTET, save=name, spec_headers=created if ref.startswith("sha512:") else {}),
        Step(f"{name}.fallback-put", "push", "PUT", f"${name}", 201, params={"digest": ref},
             body=data, headers=OCTET, note="skipped when the POST stored the blob (201)"),
    ]


def push_blobs(c: Content) -> list[Step]:
    s = partial(Step, workflow="push")
    chunks = [c.layer_chunked[:CHUNK], c.layer_chunked[CHUNK:2 * CHUNK], c.layer_chunked[2 * CHUNK:]]
    return [
        # Monolithic: a single POST with ?digest= (a registry MAY instead open an upload with
        # 202, as a client then PUTs the blob there: the fallback step runs only in that case).
        *monolithic("push.monolithic-post", c.config),
        *monolithic("push.monolithic-post-arm64", c.config_arm64),
        *monolithic("push.monolithic-post-empty-blob", c.empty),
        # POST then PUT with the whole blob.
        s(name="push.post-put.open", method="POST", url=uploads(APP), expect=202, save="put"),
        s(name="push.post-put.status", method="GET", url="$put", expect=204),
        s(name="push.post-put.put", method="PUT", url="$put", expect=201,
          params={"digest": digest(c.layer_post_put)}, body=c.layer_post_put, headers=OCTET),
        # Chunked: PATCH with Content-Range, status, PATCH, PUT carrying the last chunk.
        s(name="push.chunked.open", method="POST", url=uploads(APP), expect=202, save="chunked"),
        s(name="push.chunked.patch-1", method="PATCH", url="$chunked", expect=202, save="chunked",
          body=chunks[0], headers={**OCTET, "Content-Range": f"0-{CHUNK - 1}"}),
        s(name="push.chunked.status-1", method="GET", url="$chunked", expect=204),
        s(name="push.chunked.patch-2", method="PATCH", url="$chunked", expect=202, save="chunked",
          body=chunks[1], headers={**OCTET, "Content-Range": f"{CHUNK}-{2 * CHUNK - 1}"}),
        s(name="push.chunked.status-2", method="GET", url="$chunked", expect=204),
        s(name="push.chunked.put-last-chunk", method="PUT", url="$chunked", expect=201,
          params={"digest": digest(c.layer_chunked)}, body=chunks[2],
          headers={**OCTET, "Content-Range": f"{2 * CHUNK}-{len(c.layer_chunked) - 1}"}),
        s(name="push.chunked.status-after-commit", method="GET", url="$chunked", expect=404),
        # Streamed: one PATCH, chunked transfer encoding, no Content-Range (what docker push does).
        s(name="push.streamed.open", method="POST", url=uploads(APP), expect=202, save="streamed"),
        s(name="push.streamed.patch", method="PATCH", url="$streamed", expect=202, save="streamed",
          body=c.layer_streamed, stream=True, headers=OCTET),
        s(name="push.streamed.status", method="GET", url="$streamed", expect=204),
        s(name="push.streamed.put", method="PUT", url="$streamed", expect=201,
          params={"digest": digest(c.layer_streamed)}),
        # An out-of-order chunk is refused with 416 and leaves the upload as it was.
        s(name="push.out-of-order.open", method="POST", url=uploads(APP), expect=202, save="ooo"),
        s(name="push.out-of-order.patch-1", method="PATCH", url="$ooo", expect=202, save="ooo",
          body=c.out_of_order[:1000], headers={**OCTET, "Content-Range": "0-999"}),
        s(name="push.out-of-order.patch-gap", method="PATCH", url="$ooo", expect=416,
          body=c.out_of_order[2000:3000], headers={**OCTET, "Content-Range": "2000-2999"}),
        s(name="push.out-of-order.cancel", method="DELETE", url="$ooo", expect=204),
        # A chunk must hold exactly the bytes its Content-Range names (one byte here, three sent),
        # and a closing PUT's chunk must continue the upload, not land after a gap: 416 for both.
        s(name="push.bad-range.open", method="POST", url=uploads(APP), expect=202, save="range"),
        s(name="push.bad-range.patch-length", method="PATCH", url="$range", expect=416,
          body=b"abc", headers={**OCTET, "Content-Range": "0-0"}),
        s(name="push.bad-range.patch-1", method="PATCH", url="$range", expect=202, save="range",
          body=c.out_of_order[:1000], headers={**OCTET, "Content-Range": "0-999"}),
        s(name="push.bad-range.put-gap", method="PUT", url="$range", expect=416,
          params={"digest": digest(c.out_of_order[:1000] + c.out_of_order[2000:3000])},
          body=c.out_of_order[2000:3000], headers={**OCTET, "Content-Range": "2000-2999"}),
        s(name="push.bad-range.cancel", method="DELETE", url="$range", expect=(204, 404)),
        # A PUT whose digest does not match the data.
        s(name="push.wrong-digest.open", method="POST", url=uploads(APP), expect=202, save="bad"),
        s(name="push.wrong-digest.patch", method="PATCH", url="$bad", expect=202, save="bad",
          body=c.wrong_digest_data,
          headers={**OCTET, "Content-Range": f"0-{len(c.wrong_digest_data) - 1}"}),
        s(name="push.wrong-digest.put", method="PUT", url="$bad", expect=400,
          params={"digest": digest(c.cancelled)}),
        s(name="push.wrong-digest.blob-absent", method="HEAD", url=blob(APP, c.cancelled), expect=404),
        # Cancelling an upload.
        s(name="push.cancel.open", method="POST", url=uploads(APP), expect=202, save="cancel"),
        s(name="push.cancel.patch", method="PATCH", url="$cancel", expect=202, save="cancel",
          body=c.cancelled, headers={**OCTET, "Content-Range": f"0-{len(c.cancelled) - 1}"}),
        s(name="push.cancel.delete", method="DELETE", url="$cancel", expect=204),
        s(name="push.cancel.status-after", method="GET", url="$cancel", expect=404),
        s(name="push.cancel.patch-after", method="PATCH", url="$cancel", expect=404,
          body=b"x", headers={**OCTET, "Content-Range": f"{len(c.cancelled)}-{len(c.cancelled)}"}),
    ]


def pull_blobs(c: Content) -> list[Step]:
    s = partial(Step, workflow="pull", content=True)
    layer = c.layer_post_put
    return [
        s(name="pull.blob-head", method="HEAD", url=blob(APP, layer), expect=200),
        s(name="pull.blob-get", method="GET", url=blob(APP, layer), expect=200),
        s(name="pull.blob-get-chunked-upload", method="GET", url=blob(APP, c.layer_chunked), expect=200),
        s(name="pull.blob-get-streamed-upload", method="GET", url=blob(APP, c.layer_streamed),
          expect=200),
        s(name="pull.blob-range", method="GET", url=blob(APP, layer), expect=206,
          headers={"Range": "bytes=10-99"}),
        s(name="pull.blob-range-open-ended", method="GET", url=blob(APP, layer), expect=206,
          headers={"Range": f"bytes={len(layer) - 100}-"}),
        s(name="pull.blob-range-unsatisfiable", method="GET", url=blob(APP, layer), expect=416,
          headers={"Range": f"bytes={len(layer) + 10}-"}),
        s(name="pull.blob-unknown", method="GET", url=blob(APP, c.never_pushed), expect=404),
        s(name="pull.blob-head-unknown", method="HEAD", url=blob(APP, c.never_pushed), expect=404),
    ]


def mount_blobs(c: Content) -> list[Step]:
    s = partial(Step, workflow="push")
    return [
        s(name="push.mount", method="POST", url=uploads(MIRROR), expect=201,
          params={"mount": digest(c.layer_post_put), "from": APP}),
        s(name="push.mount.head", method="HEAD", url=blob(MIRROR, c.layer_post_put), expect=200,
          content=True),
        s(name="push.mount-config", method="POST", url=uploads(MIRROR), expect=201,
          params={"mount": digest(c.config), "from": APP}),
        s(name="pull.blob-not-in-this-repo", method="GET", url=blob(MIRROR, c.layer_chunked),
          expect=404, note="a blob is visible only in the repositories it was pushed or mounted to"),
        s(name="push.mount-unknown-blob", method="POST", url=uploads(MIRROR), expect=202,
          params={"mount": digest(c.never_pushed), "from": APP}, save="mountfail",
          note="the registry falls back to opening an upload"),
        s(name="push.mount-unknown-blob.cancel", method="DELETE", url="$mountfail", expect=204),
    ]


def push_manifests(c: Content) -> list[Step]:
    s = partial(Step, workflow="pull", headers=ACCEPT)
    return [
        put_manifest("push.manifest-oci-by-tag", APP, "v1", c.oci_amd64, OCI_MANIFEST),
        put_manifest("push.manifest-oci-by-digest", APP, c.oci_arm64, c.oci_arm64, OCI_MANIFEST),
        put_manifest("push.manifest-docker-by-tag", APP, "docker", c.docker_v2, DOCKER_MANIFEST),
        put_manifest("push.manifest-index-by-tag", APP, "multi", c.index, OCI_INDEX),
        put_manifest("push.manifest-tag-a", APP, "t-a", c.oci_arm64, OCI_MANIFEST),
        put_manifest("push.manifest-tag-b", APP, "t-b", c.oci_arm64, OCI_MANIFEST),
        put_manifest("push.manifest-tag-c", APP, "t-c", c.oci_amd64, OCI_MANIFEST),
        put_manifest("push.manifest-mirror", MIRROR, "docker", c.docker_v2, DOCKER_MANIFEST),
        put_manifest("push.manifest-blob-unknown", APP, "broken", c.missing_blob, OCI_MANIFEST,
                     expect=400),
        put_manifest("push.manifest-invalid-json", APP, "invalid", b"{not json", OCI_MANIFEST,
                     expect=400),
        put_manifest("push.manifest-digest-mismatch", APP, c.oci_arm64, c.oci_amd64,
                     OCI_MANIFEST, expect=400),
        put_manifest("push.manifest-at-4mib", APP, "at-limit", c.at_limit, OCI_MANIFEST,
                     note="registries SHOULD accept manifests of up to 4 MiB"),
        put_manifest("push.manifest-over-4mib", APP, "over-limit", c.over_limit, OCI_MANIFEST,
                     expect=(201, 413), note="registries MAY refuse larger manifests with 413"),
        s(name="pull.manifest-by-tag", method="GET", url=manifest(APP, "v1"), expect=200, content=True),
        s(name="pull.manifest-head-by-tag", method="HEAD", url=manifest(APP, "v1"), expect=200,
          content=True),
        s(name="pull.manifest-by-digest", method="GET", url=manifest(APP, c.oci_arm64), expect=200,
          content=True),
        s(name="pull.manifest-head-by-digest", method="HEAD", url=manifest(APP, c.oci_arm64),
          expect=200, content=True),
        s(name="pull.manifest-docker", method="GET", url=manifest(APP, "docker"), expect=200,
          content=True),
        s(name="pull.manifest-index", method="GET", url=manifest(APP, "multi"), expect=200,
          content=True),
        s(name="pull.manifest-head-index", method="HEAD", url=manifest(APP, "multi"), expect=200,
          content=True),
        s(name="pull.manifest-at-4mib", method="GET", url=manifest(APP, "at-limit"), expect=200,
          content=True),
        s(name="pull.manifest-over-4mib", method="GET", url=manifest(APP, "over-limit"),
          expect=(200, 404),
          content=True),
        s(name="pull.manifest-unknown-tag", method="GET", url=manifest(APP, "nope"), expect=404),
        s(name="pull.manifest-unknown-digest", method="GET", url=manifest(APP, ZERO_DIGEST),
          expect=404),
        s(name="pull.manifest-head-unknown", method="HEAD", url=manifest(APP, "nope"), expect=404),
        s(name="pull.manifest-refused-not-stored", method="GET", url=manifest(APP, "broken"),
          expect=404),
    ]


def _bytes(data: bytes) -> dict[str, object]:
    """The normalized body of content steps that return exactly ``data``."""
    return {"sha256": digest(data).removeprefix("sha256:"), "length": len(data)}


def sha512(c: Content) -> list[Step]:
    """Blobs and a manifest under sha512 digests: image-spec registers sha512, and the distribution
    spec lets a client choose the algorithm ("Pushing blobs": the digest parameter of the PUT)."""
    s = partial(Step, workflow="push")
    chunked = c.layer_sha512_chunked
    config, layer = digest512(c.config_sha512), digest512(c.layer_sha512_put)
    by_digest = digest512(c.oci_sha512)

    def named(ref: str, location: str | None = None) -> dict[str, str | None]:
        # What a registry that keeps the client's algorithm answers (held to it where it departs
        # from docker-registry, which names every blob by its sha256).
        return {"docker-content-digest": ref, **({"location": location} if location else {})}

    return [
        *monolithic("sha512.monolithic-post", c.config_sha512, config),
        s(name="sha512.post-put.open", method="POST", url=uploads(APP), expect=202, save="put512"),
        s(name="sha512.post-put.put", method="PUT", url="$put512", expect=201,
          params={"digest": layer}, body=c.layer_sha512_put, headers=OCTET,
          spec_headers=named(layer, blob(APP, layer))),
        s(name="sha512.chunked.open", method="POST", url=uploads(APP), expect=202, save="chunked512"),
        s(name="sha512.chunked.patch-1", method="PATCH", url="$chunked512", expect=202, save="chunked512",
          body=chunked[:CHUNK], headers={**OCTET, "Content-Range": f"0-{CHUNK - 1}"}),
        s(name="sha512.chunked.status", method="GET", url="$chunked512", expect=204),
        s(name="sha512.chunked.put-last-chunk", method="PUT", url="$chunked512", expect=201,
          params={"digest": digest512(chunked)}, body=chunked[CHUNK:],
          headers={**OCTET, "Content-Range": f"{CHUNK}-{len(chunked) - 1}"},
          spec_headers=named(digest512(chunked), blob(APP, digest512(chunked)))),
        # The sha256 of the same bytes is another digest: the check is sha512's, and it fails.
        s(name="sha512.wrong-digest.open", method="POST", url=uploads(APP), expect=202, save="bad512"),
        s(name="sha512.wrong-digest.put", method="PUT", url="$bad512", expect=400,
          params={"digest": digest512(c.cancelled)}, body=c.wrong_sha512_data, headers=OCTET),
        s(name="sha512.wrong-digest.blob-absent", method="HEAD", url=blob(APP, digest512(c.cancelled)),
          expect=404),
        s(name="sha512.blob-head", method="HEAD", url=blob(APP, layer), expect=200, content=True,
          spec_headers=named(layer)),
        s(name="sha512.blob-get", method="GET", url=blob(APP, layer), expect=200, content=True,
          spec_headers=named(layer), spec_body=_bytes(c.layer_sha512_put)),
        s(name="sha512.blob-get-chunked-upload", method="GET", url=blob(APP, digest512(chunked)),
          expect=200, content=True, spec_headers=named(digest512(chunked)), spec_body=_bytes(chunked)),
        s(name="sha512.blob-range", method="GET", url=blob(APP, layer), expect=206, content=True,
          headers={"Range": "bytes=100-199"}, spec_headers=named(layer),
          spec_body=_bytes(c.layer_sha512_put[100:200])),
        s(name="sha512.blob-under-sha256-unknown", method="GET", url=blob(APP, c.layer_sha512_put),
          expect=(200, 404), note="pushed under its sha512 only: 404, or 200 where blobs are kept by sha256"),
        put_manifest("sha512.manifest-by-digest", APP, by_digest, c.oci_sha512, OCI_MANIFEST,
                     spec_headers=named(by_digest, manifest(APP, by_digest))),
        put_manifest("sha512.manifest-by-tag", APP, "sha512", c.oci_sha512, OCI_MANIFEST),
        put_manifest("sha512.manifest-digest-mismatch", APP, digest512(c.oci_amd64), c.oci_sha512,
                     OCI_MANIFEST, expect=400),
        s(name="sha512.manifest-get-by-digest", method="GET", url=manifest(APP, by_digest), expect=200,
          workflow="pull", headers=ACCEPT, content=True,
          spec_headers={**named(by_digest), "content-type": OCI_MANIFEST}, spec_body=_bytes(c.oci_sha512)),
        s(name="sha512.manifest-head-by-digest", method="HEAD", url=manifest(APP, by_digest), expect=200,
          workflow="pull", headers=ACCEPT, content=True,
          spec_headers={**named(by_digest), "content-length": str(len(c.oci_sha512))}),
        s(name="sha512.manifest-get-by-tag", method="GET", url=manifest(APP, "sha512"), expect=200,
          workflow="pull", headers=ACCEPT, content=True, note="by tag the digest is the canonical sha256"),
        s(name="sha512.manifest-mismatch-not-stored", method="GET", url=manifest(APP, digest512(c.oci_amd64)),
          expect=404, workflow="pull", headers=ACCEPT),
    ]


def tag_list(*tags: str) -> dict[str, object]:
    """The tags/list body of APP the spec calls for: ``tags`` in lexical order."""
    return {"name": APP, "tags": sorted(tags)}


def discovery() -> list[Step]:
    s = partial(Step, workflow="discovery")
    tags = f"/v2/{APP}/tags/list"
    # APP's tags: at-limit, docker, multi, t-a, t-b, t-c, v1, and over-limit if the registry took
    # that manifest (the spec allows it): the pages below do not depend on that one.
    return [
        s(name="discovery.tags", method="GET", url=tags, expect=200),
        s(name="discovery.tags-n2", method="GET", url=tags, expect=200, params={"n": "2"},
          spec_body=tag_list("at-limit", "docker")),
        s(name="discovery.tags-n2-last", method="GET", url=tags, expect=200,
          params={"n": "2", "last": "docker"}),
        s(name="discovery.tags-last-page", method="GET", url=tags, expect=200,
          params={"n": "2", "last": "t-b"}, spec_body=tag_list("t-c", "v1")),
        s(name="discovery.tags-last-only", method="GET", url=tags, expect=200,
          params={"last": "t-a"}, spec_body=tag_list("t-b", "t-c", "v1")),
        s(name="discovery.tags-n0", method="GET", url=tags, expect=200, params={"n": "0"},
          spec_body=tag_list(), spec_headers={"link": None},
          note="an empty list and no Link header"),
        s(name="discovery.tags-mirror", method="GET", url=f"/v2/{MIRROR}/tags/list", expect=200),
        s(name="discovery.catalog", method="GET", url="/v2/_catalog", expect=200),
        s(name="discovery.catalog-n1", method="GET", url="/v2/_catalog", expect=200,
          params={"n": "1"}),
        s(name="discovery.catalog-n1-last", method="GET", url="/v2/_catalog", expect=200,
          params={"n": "1", "last": APP}),
    ]


def referrers(c: Content) -> list[Step]:
    """The OCI 1.1 referrers API, with the headers and bodies the spec requires of a registry
    that implements it (checked on a target when the reference lacks the API)."""
    s = partial(Step, workflow="discovery", feature="referrers")
    url = f"/v2/{APP}/referrers/{digest(c.oci_amd64)}"
    index = {"content-type": OCI_INDEX}
    filtered = {**index, "oci-filters-applied": "artifactType"}
    unfiltered = {**index, "oci-filters-applied": None}
    sbom = c.referrer(c.sbom, SBOM, "sbom")
    signature = c.referrer(c.signature, SIGNATURE, "signature")
    subject = {"oci-subject": digest(c.oci_amd64)}
    return [
        s(name="referrers.none-yet", method="GET", url=url, expect=200, probe=True,
          spec_headers=unfiltered, spec_body=image_index(),
          note="an empty image index when nothing refers to the digest"),
        put_manifest("referrers.push-sbom", APP, c.sbom, c.sbom, OCI_MANIFEST, feature="referrers",
                     spec_headers=subject,
                     note="OCI-Subject header when the registry processes the subject"),
        put_manifest("referrers.push-signature", APP, c.signature, c.signature, OCI_MANIFEST,
                     feature="referrers", spec_headers=subject),
        s(name="referrers.list", method="GET", url=url, expect=200, spec_headers=unfiltered,
          spec_body=image_index(sbom, signature)),
        s(name="referrers.filter-artifact-type", method="GET", url=url, expect=200,
          params={"artifactType": SBOM}, spec_headers=filtered, spec_body=image_index(sbom),
          note="a registry that filters (the spec: SHOULD) says so in OCI-Filters-Applied"),
        s(name="referrers.filter-no-match", method="GET", url=url, expect=200,
          params={"artifactType": "application/vnd.example.none"}, spec_headers=filtered,
          spec_body=image_index()),
        s(name="referrers.unknown-subject", method="GET", url=f"/v2/{APP}/referrers/{ZERO_DIGEST}",
          expect=200, spec_headers=unfiltered, spec_body=image_index(),
          note="200 and an empty index, never 404, for a subject nothing refers to"),
        s(name="referrers.artifact-manifest", method="GET", url=manifest(APP, c.sbom), expect=200,
          headers=ACCEPT, content=True, spec_headers={"content-type": OCI_MANIFEST},
          spec_body={"sha256": digest(c.sbom).removeprefix("sha256:"), "length": len(c.sbom)}),
    ]


def management(c: Content) -> list[Step]:
    s = partial(Step, workflow="management")
    return [
        s(name="management.delete-tag", method="DELETE", url=manifest(APP, "t-c"),
          expect=(202, 400, 405), note="400 or 405 if the registry does not delete tags"),
        s(name="management.deleted-tag-gone", method="GET", url=manifest(APP, "t-c"),
          expect=(404, 200), headers=ACCEPT, content=True, note="200 if tags cannot be deleted"),
        s(name="management.tag-target-still-there", method="GET", url=manifest(APP, "v1"),
          expect=200, headers=ACCEPT, content=True),
        s(name="management.delete-manifest", method="DELETE", url=manifest(APP, c.docker_v2),
          expect=202),
        s(name="management.deleted-manifest-gone", method="GET", url=manifest(APP, c.docker_v2),
          expect=404, headers=ACCEPT, content=True),
        s(name="management.deleted-manifest-head", method="HEAD", url=manifest(APP, c.docker_v2),
          expect=404, headers=ACCEPT),
        s(name="management.tag-of-deleted-manifest", method="GET", url=manifest(APP, "docker"),
          expect=404, headers=ACCEPT, content=True),
        s(name="management.other-repo-unaffected", method="GET", url=manifest(MIRROR, "docker"),
          expect=200, headers=ACCEPT, content=True),
        s(name="management.tags-after-deletes", method="GET", url=f"/v2/{APP}/tags/list", expect=200),
        s(name="management.delete-blob", method="DELETE", url=blob(APP, c.layer_post_put), expect=202),
        s(name="management.deleted-blob-head", method="HEAD", url=blob(APP, c.layer_post_put),
          expect=404),
        s(name="management.deleted-blob-get", method="GET", url=blob(APP, c.layer_post_put),
          expect=404),
        s(name="management.mounted-blob-unaffected", method="GET", url=blob(MIRROR, c.layer_post_put),
          expect=200, content=True),
        s(name="management.delete-blob-unknown", method="DELETE", url=blob(APP, c.never_pushed),
          expect=404),
        s(name="management.delete-manifest-unknown", method="DELETE", url=manifest(APP, ZERO_DIGEST),
          expect=404),
        s(name="management.delete-manifest-unknown-repo", method="DELETE",
          url=manifest(MISSING, ZERO_DIGEST), expect=404),
    ]


def build_sequence(content: Content | None = None) -> list[Step]:
    """The whole sequence, in execution order; step names are unique."""
    c = content or Content()
    steps = [*base_and_errors(c), *push_blobs(c), *pull_blobs(c), *mount_blobs(c),
             *push_manifests(c), *sha512(c), *discovery(), *referrers(c), *management(c)]
    names = [step.name for step in steps]
    assert len(names) == len(set(names)), "duplicate step names"
    return steps
