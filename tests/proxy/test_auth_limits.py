"""Passwords cost the attacker, not the daemon (issue 11, point 3): scrypt off the event loop,
the same work for unknown users, 429 for an address that keeps failing, a bounded /token form."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import pytest
import trio

from swarmreg.config import load_config
from swarmreg.errors import SwarmregError
from swarmreg.registry.auth import BasicAuth, FailureThrottle, hash_password
from swarmreg.registry.wire import TOKEN_FORM_LIMIT
from tests.conftest import PORT_ZERO, start_daemon

PASSWORD = "alice-pw"
HASH = hash_password(PASSWORD)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def start_proxy(nursery: trio.Nursery, tmp_path: Path, *settings: str) -> str:
    """A daemon with the proxy, user alice, and ``settings`` lines in its [proxy] section."""
    config_file = tmp_path / "proxy.toml"
    config_file.write_text("[proxy]\n" + "\n".join(settings) + f'\n\n[proxy.users]\nalice = "{HASH}"\n')
    config = load_config(config_file, [*PORT_ZERO, "shutdown_timeout=5"], data_dir=str(tmp_path / "herd"))
    herd = await start_daemon(nursery, config, ["origin", "index", "proxy"])
    return herd.url("proxy")


def client_from(base_url: str, source: str) -> httpx.AsyncClient:
    """A client whose connections come from ``source`` (any 127/8 address is this host's loopback)."""
    return httpx.AsyncClient(base_url=base_url, timeout=30,
                             transport=httpx.AsyncHTTPTransport(local_address=source))


async def refused(auth: BasicAuth, header: str, client: str = "") -> SwarmregError:
    with pytest.raises(SwarmregError) as error:
        await auth.user(header, client)
    return error.value


# --- scrypt off the event loop -------------------------------------------------------------------

async def test_a_password_check_leaves_the_event_loop_running() -> None:
    """While a wrong password is checked, other tasks keep running: scrypt is in a worker thread."""
    auth = BasicAuth({"alice": HASH}, limiter=trio.CapacityLimiter(2))
    ticks = 0
    checking = True

    async def ticker() -> None:
        nonlocal ticks
        while checking:
            ticks += 1
            await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(0.01)
        before = ticks
        started = time.perf_counter()
        await refused(auth, basic("alice", "wrong"))
        elapsed = time.perf_counter() - started
        during = ticks - before
        checking = False
    # One scrypt takes tens of milliseconds; a loop blocked by it ticks at most once.
    assert during >= 3, f"{during} ticks in {elapsed * 1000:.0f} ms of password checking"


async def test_the_limiter_bounds_how_many_checks_run_at_once() -> None:
    limiter = trio.CapacityLimiter(1)
    auth = BasicAuth({"alice": HASH}, limiter=limiter)
    busiest = 0

    async def watch() -> None:
        nonlocal busiest
        while True:
            busiest = max(busiest, limiter.borrowed_tokens)
            await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        async with trio.open_nursery() as guesses:
            for n in range(4):
                guesses.start_soon(refused, auth, basic("alice", f"wrong{n}"))
        nursery.cancel_scope.cancel()
    assert busiest == 1


async def test_unknown_users_cost_as_much_as_known_ones() -> None:
    """An unknown user's password is checked against a dummy hash, in the same worker thread as a
    known one's, so timing does not tell users apart (before, an unknown user was refused without
    any scrypt, 20x faster). How long a check takes is scripts/bench_auth.py's to measure."""
    limiter = trio.CapacityLimiter(1)
    auth = BasicAuth({"alice": HASH}, limiter=limiter)
    for user in ("alice", "nobody"):
        held = False

        async def watch() -> None:
            nonlocal held
            while True:
                held = held or limiter.borrowed_tokens > 0
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            error = await refused(auth, basic(user, "guess"))
            nursery.cancel_scope.cancel()
        assert error.status == 401 and error.message == "invalid username or password"
        assert held, f"{user}'s password was refused without a scrypt check"


# --- failures per client address -----------------------------------------------------------------

def test_the_throttle_window_and_its_bounded_table() -> None:
    now = [1000.0]
    throttle = FailureThrottle(3, 60, max_addresses=5, clock=lambda: now[0])
    for _ in range(2):
        throttle.failed("a")
    assert throttle.retry_after("a") == 0, "two failures of three allowed"
    now[0] += 10
    throttle.failed("a")
    assert throttle.retry_after("a") == 50  # the first failure ages out 60 s after it happened
    assert throttle.retry_after("b") == 0
    now[0] += 50
    assert throttle.retry_after("a") == 0  # the first two aged out
    throttle.failed("a")
    assert throttle.retry_after("a") == 0, "two failures in the window"
    throttle.failed("a")
    assert throttle.retry_after("a") == 10  # three again: until the one at +10 s ages out
    now[0] += 61
    assert throttle.retry_after("a") == 0
    for n in range(100):  # many addresses: the table keeps the most recent few
        throttle.failed(f"10.0.0.{n}")
    assert len(throttle) <= 5
    assert FailureThrottle(0, 60).retry_after("a") == 0


async def test_repeated_failures_get_429_and_other_addresses_do_not() -> None:
    auth = BasicAuth({"alice": HASH, "bob": HASH}, throttle=FailureThrottle(3, 60))
    assert await auth.user(basic("bob", PASSWORD), "10.0.0.9") == "bob"  # verified before the guessing
    for n in range(3):
        assert (await refused(auth, basic("alice", f"wrong{n}"), "10.0.0.1")).status == 401
        assert (await refused(auth, basic("alice", f"wrong{n}"), "10.0.0.9")).status == 401
    error = await refused(auth, basic("alice", PASSWORD), "10.0.0.1")  # even the right one: no scrypt
    assert error.status == 429 and error.code.code == "TOOMANYREQUESTS"
    assert 1 <= int(error.headers["Retry-After"]) <= 60 and error.detail["retry_after"] >= 1
    assert await auth.user(basic("alice", PASSWORD), "10.0.0.2") == "alice"
    # Credentials verified before cost no scrypt and tell a guesser nothing new: they still work.
    assert await auth.user(basic("bob", PASSWORD), "10.0.0.9") == "bob"
    assert (await refused(auth, basic("bob", "wrong"), "10.0.0.9")).status == 429


async def test_guesses_sent_at_once_get_no_more_checks_than_the_limit() -> None:
    """Checks in progress count: twenty guesses at once from one address cost three scrypts."""
    auth = BasicAuth({"alice": HASH}, limiter=trio.CapacityLimiter(1), throttle=FailureThrottle(3, 60))
    statuses: list[int] = []

    async def guess(n: int) -> None:
        statuses.append((await refused(auth, basic("alice", f"wrong{n}"), "10.0.0.1")).status)

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(guess, n)
    assert sorted(statuses) == [401] * 3 + [429] * 17


async def test_the_same_credentials_sent_at_once_are_checked_once() -> None:
    """A client sends the same credentials on parallel requests (docker pulls layers three at a
    time with basic auth; CI jobs start together behind one address): they share one check, and
    none of them is a failure in progress, so none gets 429. The same wrong password sent at
    once is one failure."""
    auth = BasicAuth({"alice": HASH}, limiter=trio.CapacityLimiter(1), throttle=FailureThrottle(3, 60))
    users: list[str | None] = []
    statuses: list[int] = []

    async def pull() -> None:
        users.append(await auth.user(basic("alice", PASSWORD), "10.0.0.1"))

    async def mistype() -> None:
        statuses.append((await refused(auth, basic("alice", "typo"), "10.0.0.2")).status)

    async with trio.open_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(pull)
            nursery.start_soon(mistype)
    assert users == ["alice"] * 12
    assert statuses == [401] * 12
    assert auth.throttle.retry_after("10.0.0.2") == 0  # one failure of three


async def test_parallel_pulls_with_basic_auth_get_no_429(nursery: trio.Nursery, tmp_path: Path) -> None:
    proxy = await start_proxy(nursery, tmp_path, "auth_failure_limit = 3")
    async with client_from(proxy, "127.0.0.3") as docker:
        async def pull(statuses: list[int]) -> None:
            statuses.append((await docker.get("/v2/team/a/tags/list", auth=("alice", PASSWORD))).status_code)

        statuses: list[int] = []
        async with trio.open_nursery() as pulls:
            for _ in range(10):
                pulls.start_soon(pull, statuses)
        assert statuses == [404] * 10  # NAME_UNKNOWN: signed in, nothing pushed yet


@pytest.mark.parametrize("mode", ["basic", "token"])
async def test_the_proxy_answers_429_in_the_envelope(nursery: trio.Nursery, tmp_path: Path, mode: str) -> None:
    proxy = await start_proxy(nursery, tmp_path, f'auth = "{mode}"', "auth_failure_limit = 3",
                              "auth_failure_window = 60.0")
    path = "/v2/" if mode == "basic" else "/token"
    async with client_from(proxy, "127.0.0.2") as guesser, client_from(proxy, "127.0.0.1") as other:
        for n in range(3):
            assert (await guesser.get(path, auth=("alice", f"wrong{n}"))).status_code == 401
        throttled = await guesser.get(path, auth=("alice", PASSWORD))
        assert throttled.status_code == 429, throttled.text
        error = throttled.json()["errors"][0]
        assert error["code"] == "TOOMANYREQUESTS" and error["detail"]["retry_after"] >= 1
        assert 1 <= int(throttled.headers["Retry-After"]) <= 60
        # Another address signs in as usual.
        assert (await other.get(path, auth=("alice", PASSWORD))).status_code == 200
        assert (await other.get(path, auth=("alice", "wrong"))).status_code == 401


# --- the /token form -----------------------------------------------------------------------------

async def test_an_oversized_token_form_is_413_before_its_body_is_read(nursery: trio.Nursery,
                                                                        tmp_path: Path) -> None:
    proxy = await start_proxy(nursery, tmp_path, 'auth = "token"')
    host, port = proxy.removeprefix("http://").rsplit(":", 1)
    form = "application/x-www-form-urlencoded"
    with trio.fail_after(20):
        # A 20 MB form of which the client sends only the first KiB, then waits: answered at once.
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(f"POST /token HTTP/1.1\r\nHost: {host}\r\nContent-Type: {form}\r\n"
                                  f"Content-Length: {20 << 20}\r\n\r\n".encode() + b"a" * 1024)
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.endswith(b"}]}"):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"connection: close" in head.lower()
        assert b'"code":"TOO_LARGE"' in body

        async def chunked() -> object:  # no length declared: read up to the limit, then refused
            for _ in range(64):
                yield b"scope=" + b"x" * 4096 + b"&"

        async with httpx.AsyncClient(base_url=proxy, timeout=30) as client:
            response = await client.post("/token", content=chunked(), headers={"Content-Type": form})
            assert response.status_code == 413 and response.json()["errors"][0]["code"] == "TOO_LARGE"
            for malformed in ("&".join(f"f{n}=1" for n in range(200)).encode(), b"scope=\xff\xfe"):
                bad = await client.post("/token", content=malformed, headers={"Content-Type": form})
                assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "BAD_REQUEST"
            # A form of the right size still trades a password for a token.
            grant = {"grant_type": "password", "username": "alice", "password": PASSWORD,
                     "service": "swarmreg", "scope": "repository:a/b:pull", "pad": "x" * (TOKEN_FORM_LIMIT // 2)}
            token = await client.post("/token", data=grant)
            assert token.status_code == 200, token.text
            assert token.json()["token"]


async def test_verified_credentials_do_not_vouch_for_another_split_of_them() -> None:
    """The cache of verified credentials tells "a\\0b" with "c" from "a" with "b\\0c"."""
    auth = BasicAuth({"a": hash_password("b\0c")})
    assert await auth.user(basic("a", "b\0c")) == "a"
    assert (await refused(auth, basic("a\0b", "c"))).status == 401
