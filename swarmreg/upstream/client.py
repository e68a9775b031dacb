"""An async Registry V2 client for upstream registries (pull-through caching's fetch side).

One ``UpstreamClient`` per upstream: basic auth or Docker's Bearer token flow, TLS with an own
CA, a client certificate (mTLS) or no verification, connect and read timeouts. Every failure is
a SwarmregError naming the upstream, never a credential. ``Upstreams`` holds one client per
upstream name, anonymous HTTPS for names without a ``[[registries]]`` entry.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import attrs
import httpx

from swarmreg.digest import Digest
from swarmreg.errors import (
    BLOB_UNKNOWN,
    MANIFEST_UNKNOWN,
    NAME_INVALID,
    UPSTREAM_ERROR,
    UPSTREAM_UNAVAILABLE,
    SwarmregError,
)
from swarmreg.upstream.names import canonical_registry, registry_endpoint
from swarmreg.upstream.settings import RegistryConfig, UpstreamTlsConfig

_log = logging.getLogger(__name__)

# Docker's and OCI's manifest and index types, in the order docker asks for them.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
# A manifest larger than this is refused (the proxy's default max_manifest_size).
MAX_MANIFEST_SIZE = 4 << 20
# A token realm's answer is a small JSON document (a JWT or two).
MAX_TOKEN_RESPONSE = 256 << 10
# expires_in when a token realm gives none (Docker's token spec says 60 seconds).
DEFAULT_TOKEN_TTL = 60.0
CHUNK_SIZE = 1 << 20
# Clients kept for upstreams without a [[registries]] entry (anonymous HTTPS).
MAX_ANONYMOUS = 64


@attrs.frozen
class Manifest:
    """A manifest as an upstream serves it: its digest, media type and exact bytes."""

    digest: str
    media_type: str
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")


@attrs.frozen
class ManifestHead:
    """What a HEAD on a manifest says: digest (None if the upstream sent none), type, size."""

    digest: str | None
    media_type: str
    size: int | None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate`` as (scheme lowercased, parameters with lowercased names).

    Values may be quoted, and a quoted value may hold commas and escaped quotes
    (``scope="repository:a:pull,push"``).
    """
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        start = i
        while i < n and rest[i] not in "= \t,":
            i += 1
        name = rest[start:i].lower()
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n or rest[i] != "=":
            continue  # a token68 or a stray word: nothing to keep
        i += 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            value = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(rest[i])
                i += 1
            i += 1  # the closing quote
            params[name] = "".join(value)
        else:
            start = i
            while i < n and rest[i] != ",":
                i += 1
            params[name] = rest[start:i].strip()
    return scheme.lower(), params


@functools.cache
def _system_roots() -> ssl.SSLContext:
    # One context for every upstream with the default TLS settings: each new one loads the system's
    # roots again (some 850 KB), and a client may name any number of upstreams in ?ns=.
    return ssl.create_default_context()


def ssl_context(config: RegistryConfig) -> ssl.SSLContext:
    """The TLS settings ``config.tls`` asks for; a missing or bad file is a clear error."""
    return tls_context(config.tls, f"upstream {config.name}")


def tls_context(tls: UpstreamTlsConfig, who: str) -> ssl.SSLContext:
    """A client context for ``tls`` (the system's roots unless it names a CA); a missing or bad
    file is UPSTREAM_ERROR naming ``who`` (the registry it is for)."""
    if tls == UpstreamTlsConfig():
        return _system_roots()
    try:
        context = ssl.create_default_context(cafile=tls.ca or None)
        if tls.cert:
            context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or type(error).__name__
        raise SwarmregError(UPSTREAM_ERROR, f"{who}: cannot load its TLS files: {reason}") from None
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def fetch_token(http: httpx.AsyncClient, params: Mapping[str, str], scope: str, basic: httpx.BasicAuth | None,
                      *, who: str, secure: bool,
                      unavailable: Callable[[httpx.HTTPError], SwarmregError]) -> tuple[str, float]:
    """A token from the realm of a Bearer challenge (its ``params``) for ``scope`` unless the
    challenge names one, asked with ``basic`` credentials if any; returns it and the monotonic
    time to renew it by. Errors are UPSTREAM_ERROR naming ``who``; a realm out of reach is
    ``unavailable(error)``. ``secure``: the registry is HTTPS, so credentials go to no http realm."""
    realm = params.get("realm")
    if not realm or not realm.startswith(("https://", "http://")):
        raise SwarmregError(UPSTREAM_ERROR, f"{who}: a Bearer challenge without a usable realm")
    if basic is not None and secure and realm.startswith("http://"):
        # Our credentials would cross the network in the clear, though the registry is HTTPS.
        raise SwarmregError(UPSTREAM_ERROR, f"{who}: its token realm is plain http; credentials are not sent there")
    query = {"scope": params.get("scope") or scope}
    if params.get("service"):
        query["service"] = params["service"]
    try:
        response = await http.send(http.build_request("GET", realm, params=query), stream=True,
                                   auth=basic or httpx.USE_CLIENT_DEFAULT)
    except httpx.HTTPError as error:
        raise unavailable(error) from None
    except (httpx.InvalidURL, UnicodeError):
        raise SwarmregError(UPSTREAM_ERROR, f"{who}: its token realm is no URL to reach") from None
    async with _closing(response):
        if response.status_code != 200:
            raise SwarmregError(UPSTREAM_ERROR, f"{who}: its token realm answered {response.status_code}"
                                + (" (credentials refused)" if response.status_code in (401, 403) else ""))
        try:
            body = _json(await read_limited(response, MAX_TOKEN_RESPONSE, f"{who}: token response"))
        except httpx.HTTPError as error:
            raise unavailable(error) from None
    token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise SwarmregError(UPSTREAM_ERROR, f"{who}: its token realm gave no token")
    expires_in = body.get("expires_in")
    ttl = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else DEFAULT_TOKEN_TTL
    # Renew a little early so a token does not expire between our check and its use.
    return token, time.monotonic() + ttl - min(30.0, ttl / 10)


async def read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    """The response's body, UPSTREAM_ERROR past ``limit`` bytes (a registry, or a token realm it
    names, must not fill our memory)."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > limit:
            raise SwarmregError(UPSTREAM_ERROR, f"{what} is larger than {limit} bytes")
    return bytes(data)


class UpstreamClient:
    """Registry V2 reads from one upstream; use as ``async with`` (closes its connections)."""

    def __init__(self, config: RegistryConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.name = config.name
        self.base_url = f"{config.scheme}://{registry_endpoint(config.name)}"
        timeout = httpx.Timeout(config.read_timeout, connect=config.connect_timeout,
                                pool=config.connect_timeout)
        verify: ssl.SSLContext | bool = ssl_context(config) if config.scheme == "https" else True
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, verify=verify,
                                       follow_redirects=True, transport=transport)
        auth = config.auth
        self._basic = httpx.BasicAuth(auth.user, auth.password) if auth.user else None
        self._basic_header = "Basic " + base64.b64encode(f"{auth.user}:{auth.password}".encode()).decode()
        # What the upstream asked for at its last 401: "basic" or "bearer" (None: nothing yet).
        self._scheme: str | None = None
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (token, monotonic expiry)
        # How many tokens were fetched from a realm (tests count them to see reuse).
        self.token_requests = 0

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the API -------------------------------------------------------------------------

    async def head_manifest(self, repository: str, reference: str) -> ManifestHead:
        """HEAD the manifest ``reference`` (a tag or digest) of ``repository``."""
        response = await self._send("HEAD", f"/v2/{repository}/manifests/{reference}", repository,
                                    headers={"Accept": ACCEPT})
        async with _closing(response):
            self._check(response, MANIFEST_UNKNOWN, f"manifest {repository}:{reference}")
            length = response.headers.get("Content-Length")
            return ManifestHead(response.headers.get("Docker-Content-Digest"),
                                _media_type(response), int(length) if length and length.isdigit() else None)

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        """GET the manifest ``reference``: its exact bytes, checked against the digest asked
        for (a digest reference) or the one the upstream names."""
        response = await self._send("GET", f"/v2/{repository}/manifests/{reference}", repository,
                                    headers={"Accept": ACCEPT})
        async with _closing(response):
            self._check(response, MANIFEST_UNKNOWN, f"manifest {repository}:{reference}")
            data = await self._read_limited(response, MAX_MANIFEST_SIZE, f"manifest {repository}:{reference}")
            named = response.headers.get("Docker-Content-Digest")
            expected = reference if ":" in reference else named
            algorithm = expected.partition(":")[0] if expected else "sha256"
            digest = str(self._digest_of(data, algorithm))
            if expected and digest != expected:
                raise SwarmregError(UPSTREAM_ERROR, f"upstream {self.name}: manifest {repository}:{reference} "
                                    f"does not match its digest {expected}")
            media_type = _media_type(response)
            if not media_type:  # no Content-Type: the manifest's own mediaType field, if any
                body = _json(data)
                media_type = str(body.get("mediaType", "")) if isinstance(body, dict) else ""
            return Manifest(digest, media_type, data)

    async def resolve(self, repository: str, reference: str) -> Manifest:
        """The manifest a tag or digest names now: HEAD for its digest, then GET by that digest
        (so a tag moved in between cannot mix two manifests)."""
        head = await self.head_manifest(repository, reference)
        return await self.get_manifest(repository, head.digest or reference)

    async def blob_size(self, repository: str, digest: str) -> int:
        """The size of blob ``digest`` (HEAD)."""
        response = await self._send("HEAD", f"/v2/{repository}/blobs/{digest}", repository)
        async with _closing(response):
            self._check(response, BLOB_UNKNOWN, f"blob {repository}@{digest}")
            length = response.headers.get("Content-Length", "")
            if not length.isdigit():
                raise SwarmregError(UPSTREAM_ERROR, f"upstream {self.name}: blob {repository}@{digest} has no size")
            return int(length)

    async def blob_stream(self, repository: str, digest: str, *, verify: bool = True) -> AsyncIterator[bytes]:
        """Blob ``digest`` chunk by chunk (never whole in memory). The last chunk is yielded only
        once the bytes match the digest: a mismatch raises UPSTREAM_ERROR instead. A consumer that
        may stop early wraps it in ``contextlib.aclosing`` so the connection closes at once.

        ``verify=False`` is for a consumer that hashes the bytes itself as it stores them (the
        origin, in a worker thread): they pass as they come, unchecked here, and the event loop
        does not hash them a second time."""
        expected = Digest.parse(digest)
        hasher = expected.hasher() if verify else None
        response = await self._send("GET", f"/v2/{repository}/blobs/{digest}", repository)
        async with _closing(response):
            self._check(response, BLOB_UNKNOWN, f"blob {repository}@{digest}")
            pending = b""
            try:
                # Unchecked here, the bytes pass as they arrive (the origin relays them to the
                # clients that stream the blob during its fetch, see swarmreg.store.growing).
                async for chunk in response.aiter_bytes(None if hasher is None else CHUNK_SIZE):
                    if hasher is None:
                        yield chunk
                        continue
                    if pending:
                        yield pending
                    if hasher is not None:
                        hasher.update(chunk)
                    pending = chunk
            except httpx.HTTPError as error:
                raise self._unavailable(error) from None
            if hasher is not None and hasher.hexdigest() != expected.hex:
                raise SwarmregError(UPSTREAM_ERROR, f"upstream {self.name}: blob {repository}@{digest} "
                                    "does not match its digest")
            if pending:
                yield pending

    # -- requests and auth ----------------------------------------------------------------

    async def _send(self, method: str, path: str, repository: str,
                    headers: Mapping[str, str] | None = None) -> httpx.Response:
        """The response (streaming; the caller closes it), after at most one retry with the
        credentials a 401 asks for."""
        scope = f"repository:{repository}:pull"
        response = await self._request(method, path, headers, self._authorization(scope))
        if response.status_code != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        await response.aclose()
        scheme, params = parse_challenge(challenge)
        if scheme == "bearer":
            self._scheme = "bearer"
            await self._fetch_token(params, scope)
        elif scheme in ("basic", "") and self._basic is not None:  # no challenge at all: try basic
            self._scheme = "basic"
        else:
            raise SwarmregError(UPSTREAM_ERROR, f"upstream {self.name}: {method} {path} needs credentials"
                                + (" it refused" if self._basic else ", and none are configured"))
        response = await self._request(method, path, headers, self._authorization(scope))
        if response.status_code == 401:
            await response.aclose()
            self._tokens.pop(scope, None)
            raise SwarmregError(UPSTREAM_ERROR, f"upstream {self.name}: refused the credentials for {path}")
        return response

    def _authorization(self, scope: str) -> dict[str, str]:
        if self._scheme == "bearer":
            token = self._tokens.get(scope)
            if token and time.monotonic() < token[1]:
                return {"Authorization": f"Bearer {token[0]}"}
            return {}
        if self._scheme == "basic" and self._basic is not None:
            return {"Authorization": self._basic_header}
        return {}

    async def _request(self, method: str, url: str, headers: Mapping[str, str] | None,
                       auth: Mapping[str, str]) -> httpx.Response:
        try:
            request = self._http.build_request(method, url, headers={**(headers or {}), **auth})
            return await self._http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise self._unavailable(error) from None
        except (httpx.InvalidURL, UnicodeError) as error:  # a host IDNA refuses (xn--n3h.com): not a 500
            _log.debug("upstream %s: %s %s: %s", self.name, method, url, error)
            raise SwarmregError(UPSTREAM_UNAVAILABLE, f"upstream {self.name}: cannot connect "
                                "(its host name is not a valid DNS name)") from None

    async def _fetch_token(self, params: Mapping[str, str], scope: str) -> None:
        """A token from the challenge's realm (basic credentials if configured), kept for
        ``scope`` until shortly before it expires."""
        self.token_requests += 1
        token, renew_by = await fetch_token(self._http, params, scope, self._basic, who=f"upstream {self.name}",
                                            secure=self.config.scheme == "https", unavailable=self._unavailable)
        now = time.monotonic()
        # Expired tokens go as new ones come: one per repository scope asked for, and a client
        # may name any number of repositories.
        self._tokens = {kept: held for kept, held in self._tokens.items() if held[1] > now}
        self._tokens[scope] = (token, renew_by)

    async def _read_limited(self, response: httpx.Response, limit: int, what: str) -> bytes:
        return await read_limited(response, limit, f"upstream {self.name}: {what}")

    def _check(self, response: httpx.Response, unknown: Any, what: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status == 404:
            raise SwarmregError(unknown, f"upstream {self.name}: {what} not found")
        code = UPSTREAM_UNAVAILABLE if status in (502, 503, 504) else UPSTREAM_ERROR
        raise SwarmregError(code, f"upstream {self.name}: {what} answered {status}")

    def _unavailable(self, error: httpx.HTTPError) -> SwarmregError:
        if isinstance(error, httpx.ReadTimeout):
            reason = f"no answer within read_timeout ({self.config.read_timeout} s)"
        elif isinstance(error, httpx.TimeoutException):
            reason = f"timed out (connect_timeout {self.config.connect_timeout} s)"
        elif isinstance(error, httpx.RemoteProtocolError):  # say, a body cut short
            reason = "broke off its answer" + (f" ({_short(error)})" if _short(error) else "")
        elif isinstance(error, httpx.ConnectError):
            reason = "cannot connect" + (f" ({_short(error)})" if _short(error) else "")
        else:
            reason = type(error).__name__
        _log.debug("upstream %s: %s", self.name, reason)
        return SwarmregError(UPSTREAM_UNAVAILABLE, f"upstream {self.name} ({self.base_url}): {reason}")

    @staticmethod
    def _digest_of(data: bytes, algorithm: str) -> Digest:
        try:
            return Digest.of(data, algorithm)
        except SwarmregError:
            return Digest.of(data)


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) < 200 else text[:200] + "..."


def _media_type(response: httpx.Response) -> str:
    return str(response.headers.get("Content-Type", "").partition(";")[0].strip())


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


class _closing:
    """``async with`` a streaming response: closed however the block ends."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    async def __aenter__(self) -> httpx.Response:
        return self.response

    async def __aexit__(self, *_exc: object) -> None:
        await self.response.aclose()


class Upstreams:
    """One client per upstream name (``docker.io``'s aliases share one); names without a
    ``[[registries]]`` entry get anonymous HTTPS. Use as ``async with``."""

    def __init__(self, registries: Sequence[RegistryConfig] = ()) -> None:
        self._configs = {canonical_registry(config.name): config for config in registries}
        self._clients: dict[str, UpstreamClient] = {}
        # Clients of names without an entry, least recently used first: any client may name any
        # upstream, so at most MAX_ANONYMOUS are kept (a dropped one's idle connections close
        # when it is collected; a request using it keeps it alive till it ends).
        self._anonymous: OrderedDict[str, UpstreamClient] = OrderedDict()

    def config(self, name: str) -> RegistryConfig:
        """The configuration for upstream ``name``: its entry, or anonymous HTTPS."""
        key = canonical_registry(name)
        try:
            return self._configs.get(key) or RegistryConfig(name=key)
        except ValueError:  # a name no request could have reached a registry with
            raise SwarmregError(NAME_INVALID, f"{name[:255]} does not name a registry as host[:port]") from None

    def get(self, name: str) -> UpstreamClient:
        """The client for upstream ``name`` (made on first use)."""
        key = canonical_registry(name)
        client = self._clients.get(key)
        if client is None and key in self._configs:
            client = self._clients[key] = UpstreamClient(self._configs[key])
        elif client is None:
            client = self._anonymous.pop(key, None) or UpstreamClient(self.config(key))
            self._anonymous[key] = client
            while len(self._anonymous) > MAX_ANONYMOUS:
                self._anonymous.popitem(last=False)
        return client

    async def __aenter__(self) -> Upstreams:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        clients = [*self._clients.values(), *self._anonymous.values()]
        self._clients, self._anonymous = {}, OrderedDict()
        for client in clients:
            await client.aclose()
