"""A Registry V2 push client for replication: the registry API (the proxy) of a remote cluster.

What the replicator needs of it: whether it holds a blob or manifest (HEAD), a blob's upload
streamed from an iterator (POST, then one PUT with the body), a manifest's PUT. Credentials are
a bearer ``token``, or ``username`` and ``password`` sent as basic auth or traded at the token
realm of a Bearer challenge for the scope ``repository:<name>:pull,push`` (as docker push asks);
they are sent to the remote's own scheme, host and port only, never to another host an upload's
``Location`` may name. Every failure is a SwarmregError whose message names the remote and what it
answered (quoting at most a few hundred characters of its error), never a credential; no answer
body is read past a small limit, and no request without a body waits past the rule's timeout.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

import httpx
import trio

from swarmreg.config import ReplicateRule
from swarmreg.digest import Digest
from swarmreg.errors import UNAUTHORIZED, UPSTREAM_ERROR, UPSTREAM_UNAVAILABLE, SwarmregError
from swarmreg.http.client import transport_reason
from swarmreg.registry.wire import BASE, blob_path, manifest_path
from swarmreg.upstream.client import ACCEPT, fetch_token, parse_challenge, tls_context

log = logging.getLogger(__name__)

# Bytes of an error answer read for its message; the rest is never read.
ERROR_BODY = 8 << 10
# Characters of the remote's own error message quoted in ours.
QUOTED = 300
# A blob goes to the remote in writes of at most this much: the timeout of each write then bounds
# a stall, not the time a large write takes over a slow link.
WRITE = 256 << 10


class RemoteRegistry:
    """The registry API at ``rule.remote``; use as ``async with``. ``cluster_tls`` is this node's
    cluster client context ([tls]), used when the rule asks for it (``cluster_tls``)."""

    def __init__(self, rule: ReplicateRule, *, cluster_tls: ssl.SSLContext | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.rule = rule
        self.url = rule.remote
        self.who = f"remote {rule.remote}"
        verify: ssl.SSLContext | bool = True
        if rule.cluster_tls:
            assert cluster_tls is not None, "the configuration checks that [tls] is set"
            verify = cluster_tls
        elif rule.remote.startswith("https://"):
            verify = tls_context(rule.tls, self.who)
        self._http = httpx.AsyncClient(base_url=rule.remote, verify=verify, transport=transport,
                                       timeout=httpx.Timeout(rule.timeout), follow_redirects=False)
        self._origin = self._http.base_url.copy_with(path="/", query=None, fragment=None)
        self._basic = httpx.BasicAuth(rule.username, rule.password) if rule.username else None
        self._basic_header = "Basic " + base64.b64encode(f"{rule.username}:{rule.password}".encode()).decode()
        self._scheme: str | None = None  # what the remote's last challenge asked for: "basic" or "bearer"
        self._tokens: dict[str, tuple[str, float]] = {}  # repository -> (token, monotonic renewal time)

    async def __aenter__(self) -> RemoteRegistry:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the API -------------------------------------------------------------------------

    async def check(self) -> None:
        """That the remote answers the Registry V2 API (``GET /v2/``: 200, or 401 asking for
        credentials); an index URL, or anything else, is a clear error."""
        response = await self._call("GET", BASE, None, (200, 401, 404))
        if response is None or response.status_code == 404:
            raise SwarmregError(UPSTREAM_ERROR, f"{self.who}: GET /v2/ answered 404, not the Registry V2 API: name "
                                "the remote cluster's proxy (its registry port), not its index or another port")

    async def has_blob(self, repository: str, digest: Digest) -> bool:
        """Whether the repository holds the blob there (HEAD)."""
        return await self._call("HEAD", blob_path(repository, digest), repository, (200,), missing=True) is not None

    async def has_manifest(self, repository: str, reference: str) -> bool:
        """Whether the repository holds the manifest (a digest or a tag) there (HEAD)."""
        path = manifest_path(repository, reference)
        return await self._call("HEAD", path, repository, (200,), missing=True, headers={"Accept": ACCEPT}) is not None

    async def upload_blob(self, repository: str, digest: Digest, chunks: AsyncIterable[bytes], size: int) -> None:
        """Upload ``size`` bytes from ``chunks`` as ``digest``: POST an upload, then one PUT with the
        body streamed (the POST settled the credentials: a body streamed once cannot be sent twice).
        The PUT has no deadline of its own (a large blob to a slow remote takes long); the rule's
        timeout bounds each read and write of it."""
        started = await self._call("POST", f"/v2/{repository}/blobs/uploads/", repository, (202,))
        assert started is not None
        location = started.headers.get("Location", "")
        try:
            session = self._http.base_url.join(location)
        except (httpx.InvalidURL, ValueError, TypeError):
            session = None
        if not location or session is None or session.scheme not in ("http", "https"):
            raise SwarmregError(UPSTREAM_ERROR, f"{self.who}: the upload's POST gave no usable Location")
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        try:
            response = await self._request("PUT", session.copy_merge_params({"digest": str(digest)}), repository,
                                           headers=headers, content=_pieces(chunks))
            async with aclosing(response):
                if response.status_code == 401:
                    raise self._refused(f"PUT of blob {digest}")
                with trio.move_on_after(self.rule.timeout):  # the answer to a failed PUT, if it comes
                    await self._expect(response, (201, 204), f"PUT of blob {digest}")
                    return
                raise SwarmregError(UPSTREAM_ERROR, f"{self.who}: PUT of blob {digest} answered "
                                    f"{response.status_code}")
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._cancel(session, repository)
            raise

    async def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> None:
        """PUT the manifest's exact bytes under ``reference`` (its digest, or a tag)."""
        await self._call("PUT", manifest_path(repository, reference), repository, (200, 201, 204),
                         headers={"Content-Type": media_type}, content=data)

    # -- requests -----------------------------------------------------------------------

    async def _call(self, method: str, path: str, repository: str | None, statuses: tuple[int, ...], *,
                    missing: bool = False, headers: Mapping[str, str] | None = None,
                    content: bytes | None = None) -> httpx.Response | None:
        """The answer (closed: its status and headers) to a request whose body, if any, is bytes,
        with credentials as a 401 asks; None for a 404 when ``missing`` is allowed, the error the
        remote answered for any status not in ``statuses``. It all takes at most the rule's
        timeout: a remote that trickles its answer cannot hold the replicator longer."""
        with trio.move_on_after(self.rule.timeout):
            response = await self._send(method, path, repository, headers, content)
            async with aclosing(response):
                if missing and response.status_code == 404:
                    return None
                await self._expect(response, statuses, f"{method} {path}")
                return response
        raise SwarmregError(UPSTREAM_UNAVAILABLE, f"{self.who}: {method} {path}: no answer within "
                            f"{self.rule.timeout:g} s")

    async def _send(self, method: str, path: str, repository: str | None, headers: Mapping[str, str] | None,
                    content: bytes | None) -> httpx.Response:
        response = await self._request(method, path, repository, headers=headers, content=content)
        if response.status_code != 401 or repository is None:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        await response.aclose()
        await self._authenticate(challenge, repository)
        response = await self._request(method, path, repository, headers=headers, content=content)
        if response.status_code == 401:
            await response.aclose()
            self._tokens.pop(repository, None)
            raise self._refused(f"{method} {path}")
        return response

    async def _request(self, method: str, url: str | httpx.URL, repository: str | None, *,
                       headers: Mapping[str, str] | None = None,
                       content: bytes | AsyncIterable[bytes] | None = None) -> httpx.Response:
        request = self._http.build_request(method, url, headers=headers, content=content)
        if repository is not None and request.url.copy_with(path="/", query=None, fragment=None) == self._origin:
            request.headers.update(self._authorization(repository))
        try:
            return await self._http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise self._unavailable(method, request.url.path, error) from None

    async def _cancel(self, session: httpx.URL, repository: str) -> None:
        """Best effort: cancel an upload whose PUT failed (the remote would drop it at its TTL)."""
        try:
            response = await self._request("DELETE", session, repository)
            await response.aclose()
        except SwarmregError:
            pass

    def _authorization(self, repository: str) -> dict[str, str]:
        if self.rule.token:
            return {"Authorization": f"Bearer {self.rule.token}"}
        if self._scheme == "bearer":
            held = self._tokens.get(repository)
            return {"Authorization": f"Bearer {held[0]}"} if held and time.monotonic() < held[1] else {}
        if self._scheme == "basic" and self._basic is not None:
            return {"Authorization": self._basic_header}
        return {}

    async def _authenticate(self, challenge: str, repository: str) -> None:
        """Settle the credentials a 401's challenge asks for (a token from its realm, or basic)."""
        scheme, params = parse_challenge(challenge)
        if self.rule.token:
            raise self._refused("the token")
        if scheme == "bearer":
            self._scheme = "bearer"
            self._tokens = {kept: held for kept, held in self._tokens.items() if held[1] > time.monotonic()}
            self._tokens[repository] = await fetch_token(
                self._http, params, f"repository:{repository}:pull,push", self._basic, who=self.who,
                secure=self.url.startswith("https://"), unavailable=lambda error: self._unavailable(
                    "GET", "its token realm", error))
        elif scheme in ("basic", "") and self._basic is not None:
            self._scheme = "basic"
        else:
            raise SwarmregError(UNAUTHORIZED, f"{self.who} asks for credentials and the rule has none "
                                "(username and password, or token)")

    async def _expect(self, response: httpx.Response, statuses: tuple[int, ...], what: str) -> None:
        """Nothing if ``response`` has one of ``statuses``; else the error it answers."""
        if response.status_code in statuses:
            return
        quoted = await _error_text(response)
        code = UPSTREAM_UNAVAILABLE if response.status_code in (429, 502, 503, 504) else UPSTREAM_ERROR
        raise SwarmregError(code, f"{self.who}: {what} answered {response.status_code}"
                            + (f": {quoted}" if quoted else ""))

    def _refused(self, what: str) -> SwarmregError:
        return SwarmregError(UNAUTHORIZED, f"{self.who} refused the credentials (401) for {what}: check the "
                             "rule's username and password, or token, and the remote's access rules")

    def _unavailable(self, method: str, path: str, error: httpx.HTTPError) -> SwarmregError:
        if isinstance(error, httpx.TimeoutException):
            reason = f"{type(error).__name__} (timeout {self.rule.timeout:g} s)"
        else:
            reason = transport_reason(error)
        return SwarmregError(UPSTREAM_UNAVAILABLE, f"{self.who}: {method} {path}: {reason}"[:QUOTED * 2])


async def _pieces(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` cut into writes of at most WRITE bytes."""
    async for chunk in chunks:
        for start in range(0, len(chunk), WRITE):
            yield chunk[start:start + WRITE]


async def _error_text(response: httpx.Response) -> str:
    """The remote's own error (``CODE: message`` from the registry's envelope, else the start of
    the body), from at most ERROR_BODY bytes of it, on one line."""
    data = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) >= ERROR_BODY:
                break
    except httpx.HTTPError:
        pass
    text = bytes(data[:ERROR_BODY]).decode("utf-8", "replace")
    try:
        entry: Any = json.loads(text)["errors"][0]
        text = f"{entry['code']}: {entry.get('message', '')}"
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    text = " ".join(text.split())
    return text if len(text) <= QUOTED else text[:QUOTED] + "..."
