"""The HTTP backend's own cases (the shared suite covers the read contract), against real web
servers on 127.0.0.1: the exact requests it makes, bytes that do not match the digest or the size
(refused before the last chunk), a server that fails, refuses, is down or too slow."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio

from swarmreg.backends.http import HttpBackend, HttpOptions
from swarmreg.config import ConfigError, load_config
from swarmreg.digest import Digest
from swarmreg.errors import BACKEND_ERROR, BACKEND_UNAVAILABLE, DIGEST_INVALID, SwarmregError
from tests.backends.test_backend_suite import download
from tests.conftest import free_port, random_bytes
from tests.servers.http_files import file_server

NS = "library/web"
DATA = random_bytes(3 << 20, seed=1)
DIGEST = Digest.of(DATA)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[Path, int, list[tuple[str, str, int]]]]:
    root = tmp_path / "web"
    (root / "v1").mkdir(parents=True)
    with file_server(root) as (port, log):
        yield root / "v1", port, log


@pytest.fixture
async def backend(web) -> AsyncIterator[HttpBackend]:
    built = HttpBackend(HttpOptions(base=f"http://127.0.0.1:{web[1]}/v1"))
    try:
        yield built
    finally:
        await built.aclose()


async def failure(call: Any, code: Any) -> str:
    with pytest.raises(SwarmregError) as info:
        await call
    assert info.value.code is code, info.value.message
    return info.value.message


async def read_all(backend: HttpBackend, digest: Digest) -> list[bytes]:
    """The chunks a consumer got before the stream ended or failed (a failure is raised)."""
    stream = await backend.download(NS, digest)
    assert stream is not None
    got: list[bytes] = []
    async with stream:
        async for chunk in stream:
            got.append(chunk)
    return got


async def test_it_asks_for_head_and_get_of_base_slash_digest(web, backend) -> None:
    directory, _port, log = web
    (directory / str(DIGEST)).write_bytes(DATA)
    assert await backend.stat(NS, DIGEST) == len(DATA)
    assert await download(backend, DIGEST) == DATA
    assert log == [("HEAD", f"/v1/{DIGEST}", 200), ("HEAD", f"/v1/{DIGEST}", 200), ("GET", f"/v1/{DIGEST}", 200)]
    assert backend.describe(NS) == f"the HTTP backend at 127.0.0.1:{web[1]}", "the host, not the path"


async def test_bytes_that_do_not_match_the_digest_fail_before_the_last_chunk(web, backend) -> None:
    directory, _port, _log = web
    (directory / str(DIGEST)).write_bytes(DATA[:-1] + bytes([DATA[-1] ^ 1]))  # one bit off, same size
    with pytest.raises(SwarmregError) as info:
        await read_all(backend, DIGEST)
    assert info.value.code is DIGEST_INVALID and "does not match" in info.value.message


async def test_a_body_longer_or_shorter_than_its_head_is_refused(tmp_path: Path) -> None:
    """A server whose HEAD announces one size and whose GET sends another."""
    with lying_server(head_size=len(DATA), body=DATA[:1000]) as port:
        backend = HttpBackend(HttpOptions(base=f"http://127.0.0.1:{port}"))
        try:
            with pytest.raises(SwarmregError) as info:
                await read_all(backend, DIGEST)
            assert info.value.code is BACKEND_ERROR and f"sent 1000 of the {len(DATA)} bytes" in info.value.message
        finally:
            await backend.aclose()
    with lying_server(head_size=10, body=DATA) as port:
        backend = HttpBackend(HttpOptions(base=f"http://127.0.0.1:{port}"))
        try:
            with pytest.raises(SwarmregError) as info:
                await read_all(backend, DIGEST)
            assert info.value.code is BACKEND_ERROR and "more than the 10 bytes" in info.value.message
        finally:
            await backend.aclose()


@pytest.mark.parametrize(("status", "code"), [(500, BACKEND_UNAVAILABLE), (503, BACKEND_UNAVAILABLE),
                                               (403, BACKEND_ERROR), (401, BACKEND_ERROR)])
async def test_a_failing_or_refusing_server_is_named(status: int, code: Any) -> None:
    with lying_server(status=status) as port:
        backend = HttpBackend(HttpOptions(base=f"http://127.0.0.1:{port}/secret/path"))
        try:
            for call in (backend.stat(NS, DIGEST), backend.download(NS, DIGEST)):
                message = await failure(call, code)
                assert f"127.0.0.1:{port}" in message and str(status) in message and "secret" not in message
        finally:
            await backend.aclose()


async def test_a_server_that_is_down_or_silent_is_out_of_reach(nursery) -> None:
    backend = HttpBackend(HttpOptions(base=f"http://127.0.0.1:{free_port()}"))
    try:
        assert "cannot connect" in await failure(backend.stat(NS, DIGEST), BACKEND_UNAVAILABLE)
    finally:
        await backend.aclose()

    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    listeners = await nursery.start(trio.serve_tcp, silent, 0)
    port = listeners[0].socket.getsockname()[1]
    backend = HttpBackend(HttpOptions(base=f"http://127.0.0.1:{port}", read_timeout=0.5))
    try:
        with trio.fail_after(5):
            message = await failure(backend.stat(NS, DIGEST), BACKEND_UNAVAILABLE)
        assert "no answer within read_timeout (0.5 s)" in message
    finally:
        await backend.aclose()


async def test_an_https_base_is_checked_against_its_ca(tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / str(DIGEST)).write_bytes(DATA)
    with file_server(tmp_path, tls=server_tls) as (port, _log):
        base = f"https://127.0.0.1:{port}/v1"
        for ca_option, works in ((str(ca_file), True), ("", False), (str(tmp_path / "no-such-ca.pem"), False)):
            backend = HttpBackend(HttpOptions(base=base, ca=ca_option))
            try:
                if works:
                    assert await download(backend, DIGEST) == DATA
                    continue
                with pytest.raises(SwarmregError) as info:
                    await backend.stat(NS, DIGEST)
                assert info.value.code in (BACKEND_UNAVAILABLE, BACKEND_ERROR)
                assert str(tmp_path) not in info.value.message
                if ca_option:
                    assert "its ca file cannot be used" in info.value.message
            finally:
                await backend.aclose()


@pytest.mark.parametrize("base", ["ftp://host/x", "http://user:pw@host/x", "http://host/x?q=1", "http:///x",
                                  "https://host:notaport/"])
def test_a_bad_base_is_refused(base: str) -> None:
    with pytest.raises(ConfigError, match=r"backends\[0\]\.options\.base"):
        load_config(None, [f'backends=[{{type="http", options={{base="{base}"}}}}]'])


# -- a web server that lies --------------------------------------------------------------------------


@contextmanager
def lying_server(*, status: int = 200, head_size: int = 0, body: bytes = b"") -> Iterator[int]:
    """A web server answering every HEAD and GET with ``status``; HEAD says ``head_size`` bytes,
    GET sends ``body`` (with its own length) and closes."""

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 - http.server's names
            self.send_response(status)
            self.send_header("Content-Length", str(head_size if status == 200 else 0))
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if status == 200 else 0))
            self.end_headers()
            if status == 200:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
