"""Blobs an agent fetches ahead of a pull, when the proxy's preheat asks (Kraken's prefetch,
Dragonfly's preheat): the download runs in the agent service's nursery, the request is answered
at once, and the outcome is kept (a bounded number of them) for the proxy to read."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import trio

from swarmreg.agent.content import EMPTY
from swarmreg.agent.downloads import Downloads
from swarmreg.agent.relay import Relays
from swarmreg.agent.wire import (
    KEPT_PREFETCHES,
    MAX_PREFETCHES,
    PREFETCH_DONE,
    PREFETCH_FAILED,
    PREFETCH_RUNNING,
)
from swarmreg.digest import Digest
from swarmreg.errors import TOOMANYREQUESTS, SwarmregError, internal_error
from swarmreg.store.blobstore import BlobStore

log = logging.getLogger(__name__)


class Prefetch:
    """One blob asked for ahead of a pull, and how its fetch went."""

    def __init__(self, namespace: str, digest: Digest) -> None:
        self.namespace = namespace
        self.digest = digest
        self.state = PREFETCH_RUNNING
        self.error: str | None = None
        self.done = trio.Event()

    def finish(self, error: str | None) -> None:
        self.state = PREFETCH_FAILED if error else PREFETCH_DONE
        self.error = error
        self.done.set()

    def document(self) -> dict[str, Any]:
        """The answer to a prefetch request or status read."""
        body: dict[str, Any] = {"namespace": self.namespace, "digest": str(self.digest), "state": self.state}
        if self.error:
            body["error"] = self.error
        return body


class Prefetches:
    """The agent's prefetches: at most ``limit`` running (TOOMANYREQUESTS beyond), the latest
    ``kept`` finished ones remembered."""

    def __init__(self, store: BlobStore, downloads: Downloads, relays: Relays, nursery: trio.Nursery, *,
                 limit: int = MAX_PREFETCHES, kept: int = KEPT_PREFETCHES) -> None:
        self.store = store
        self.downloads = downloads
        self.relays = relays
        self.nursery = nursery
        self.limit = limit
        self.kept = kept
        self._running: dict[Digest, Prefetch] = {}
        self._finished: OrderedDict[Digest, Prefetch] = OrderedDict()

    def start(self, namespace: str, digest: Digest) -> Prefetch:
        """The blob's prefetch: done at once for a blob held, the one running, or a new one."""
        if (running := self._running.get(digest)) is not None:
            return running
        prefetch = Prefetch(namespace, digest)
        if digest in EMPTY or digest in self.store:
            self.downloads.reseed(namespace, digest)  # released for being idle: in the swarm again
            self._keep(prefetch, None)
            return prefetch
        if len(self._running) >= self.limit:
            raise SwarmregError(TOOMANYREQUESTS, f"this agent runs {self.limit} prefetches at once",
                                {"limit": self.limit, "retry_after": 1}, headers={"Retry-After": "1"})
        self._running[digest] = prefetch
        self.nursery.start_soon(self._run, prefetch)
        return prefetch

    def status(self, digest: Digest) -> Prefetch | None:
        """The blob's prefetch, running or among the latest finished; None if unknown."""
        found = self._running.get(digest) or self._finished.get(digest)
        if found is None and digest in self.store:
            found = Prefetch("", digest)
            found.finish(None)
        return found

    def _keep(self, prefetch: Prefetch, error: str | None) -> None:
        prefetch.finish(error)
        self._finished[prefetch.digest] = prefetch
        self._finished.move_to_end(prefetch.digest)
        while len(self._finished) > self.kept:
            self._finished.popitem(last=False)

    async def _run(self, prefetch: Prefetch) -> None:
        """Fetch the blob into the store (a small one comes inline with its metainfo). Background
        work: every failure is kept as the prefetch's error and logged, never raised."""
        error: str | None = "interrupted: the agent is stopping"  # unless it ends below
        try:
            await self._fetch(prefetch.namespace, prefetch.digest)
            error = None
            log.info("prefetched %s of %s", prefetch.digest, prefetch.namespace)
        except SwarmregError as failure:
            error = failure.message
            log.warning("prefetch of %s of %s failed: %s", prefetch.digest, prefetch.namespace, error)
        except Exception:
            error = internal_error(log, f"prefetch of {prefetch.digest}").message
        finally:
            del self._running[prefetch.digest]
            self._keep(prefetch, error)

    async def _fetch(self, namespace: str, digest: Digest) -> None:
        await self.downloads.metainfo(namespace, digest)
        await self.relays.settle(digest)  # a client's relay of it, started meanwhile
        if digest in self.store:  # it came inline, or relayed
            return
        download = await self.downloads.start(namespace, digest)
        await download.done.wait()
        if download.error is not None:
            raise download.error
