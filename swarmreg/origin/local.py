"""The origin client's interface over the origin service of the same daemon: no second hop.

A herd runs the proxy and the origin in one process. Over HTTP every pushed byte would cross
hypercorn and h11 twice (into the proxy, then into the origin) and httpx once; in-process the
proxy's body chunks go straight into the origin's upload session, hashed and written once.
Whichever origin the ring picks for a session or a digest is asked as over HTTP; only when that
origin is this daemon's own is the call made in-process, with the same checks its route makes.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING

import trio

from swarmreg.cluster.ring import Ring
from swarmreg.config import Address
from swarmreg.digest import Digest
from swarmreg.errors import BLOB_EXISTS, BLOB_UPLOAD_UNKNOWN, SwarmregError
from swarmreg.names import validate_namespace
from swarmreg.origin.client import ABANDON_TIMEOUT, OriginClient, _tag
from swarmreg.store.files import ByteRange

if TYPE_CHECKING:
    from swarmreg.origin.service import OriginService

log = logging.getLogger(__name__)


class LocalOrigin(OriginClient):
    """An OriginClient whose upload sessions and small uploads at ``local`` (the address this
    daemon's origin bound) are made on ``service`` directly; everything else goes over HTTP."""

    def __init__(self, service: OriginService, local: Address, target: Address | Ring, *,
                 timeout: float = 60.0, tls: ssl.SSLContext | None = None, secret: str = "") -> None:
        super().__init__(target, timeout=timeout, tls=tls, secret=secret)
        self.service = service
        self.local = local
        self.calls = 0  # the calls made in-process (tests read it: the hop really went)

    def _picks_local(self, key: Digest) -> bool:
        """Whether a request keyed by ``key`` would go to this daemon's origin first."""
        order = self.ring.order(str(key))
        return bool(order) and order[0] == self.local

    def _local_session(self, uid: str) -> str | None:
        """The bare id of session ``uid`` when it is held here, else None."""
        member, _ = self._session(uid)  # checks the id as the HTTP path does
        if (member or self.address) != self.local:
            return None
        self.calls += 1
        return uid.partition(".")[0]

    async def open_session(self, namespace: str, digest: Digest | None = None) -> str:
        if not self._picks_local(digest or Digest.of(os.urandom(16))):
            return await super().open_session(namespace, digest)
        self.calls += 1
        uid = (await self.service.open_session(validate_namespace(namespace))).uid
        return f"{uid}.{_tag(self.local)}" if self._tagged() else uid

    async def append(self, uid: str, namespace: str, chunks: AsyncIterable[bytes], length: int | None) -> int:
        if (bare := self._local_session(uid)) is None:
            return await super().append(uid, namespace, chunks, length)
        upload = self.service.upload(bare, validate_namespace(namespace))
        await self.service.write_upload(upload, None, chunks)
        return upload.meta.size

    async def status(self, uid: str, namespace: str) -> int:
        if (bare := self._local_session(uid)) is None:
            return await super().status(uid, namespace)
        return self.service.upload(bare, validate_namespace(namespace)).meta.size

    async def finish(self, uid: str, namespace: str, digest: Digest, *, through: bool = True) -> int:
        if (bare := self._local_session(uid)) is None:
            return await super().finish(uid, namespace, digest, through=through)
        upload = self.service.upload(bare, validate_namespace(namespace))
        return await self.service.commit_upload(upload, digest, through=through)

    async def cancel(self, uid: str, namespace: str) -> None:
        if (bare := self._local_session(uid)) is None:
            return await super().cancel(uid, namespace)
        await self.service.cancel_upload(self.service.upload(bare, validate_namespace(namespace)))

    async def abandon(self, uid: str, namespace: str) -> None:
        if self._local_session(uid) is None:
            return await super().abandon(uid, namespace)
        # As OriginClient.abandon: shielded (the request may be failing because it is cancelled), bounded.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + ABANDON_TIMEOUT):
            try:
                await self.cancel(uid, namespace)
            except SwarmregError as error:
                if error.code is not BLOB_UPLOAD_UNKNOWN:
                    log.warning("cannot cancel upload session %s: %s", uid, error.message)

    async def upload_bytes(self, namespace: str, digest: Digest, data: bytes, *, through: bool = True) -> None:
        """A small blob (a manifest) into this daemon's origin when it owns the digest first."""
        if not self._picks_local(digest):
            return await super().upload_bytes(namespace, digest, data, through=through)
        self.calls += 1
        namespace = validate_namespace(namespace)
        try:
            uid = await self.service.start_upload(namespace, digest)
        except SwarmregError as error:
            if error.code is BLOB_EXISTS:  # held (and written through): nothing to upload
                return None
            raise
        upload = self.service.upload(uid, namespace, digest)
        try:
            if data:
                await self.service.write_upload(upload, ByteRange(0, len(data)), _once(data))
            await self.service.commit_upload(upload, digest, through=through)
        except BaseException:
            with trio.CancelScope(shield=True):
                try:
                    await self.service.cancel_upload(upload)
                except SwarmregError:
                    pass  # committed or gone already
            raise
        return None


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
