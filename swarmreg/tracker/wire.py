"""The tracker's wire contract: the channel's path, and its frames (attrs classes carried as msgpack,
each with a protocol version), imported by the tracker and by every peer's client.

A frame on the wire is a msgpack map ``{"v": version, "t": type, "b": body}``.
Anything else (truncated, oversized, an unknown version or type, a body that
does not structure, a frame the receiving side never accepts) raises
ProtocolError, and the receiver closes that one connection with the reason.
"""

from __future__ import annotations

import math
import re
from typing import Any

import attrs
import cattrs
import msgpack
from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.v import format_exception

from swarmreg.digest import MAX_DIGEST_LENGTH

PROTOCOL_VERSION = 1
# The websocket path of the announce channel.
PATH = "/announce"
# A websocket handshake at this path is accepted and closed at once: the tracker's health check
# (its port speaks only websocket), which cluster rings of trackers probe.
HEALTH_PATH = "/health"
# A reply (metainfo of a big blob included) is at most this big.
MAX_REPLY = 16 << 20
_HEX = re.compile(r"[0-9a-f]+")
# The re-announce interval a reply may set, in seconds: a peer never re-announces in a tight
# loop (or not at all) because a tracker said so.
MIN_INTERVAL = 1.0
MAX_INTERVAL = 86400.0
# A receiver keeps this many peers of a reply or push, the first ones (complete peers and origins
# come first). libtorrent keeps a bounded list anyway, and a 16 MB frame of ~220,000 peers cost
# an agent 0.8 s of structuring plus 1.3 s of handing them over, its event loop blocked.
MAX_PEERS = 1000


class ProtocolError(Exception):
    """A frame that breaks the protocol; the connection that sent it is closed."""


def _hex(length: int) -> Any:
    def check(_instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
        if len(value) != length or not _HEX.fullmatch(value):
            raise ValueError(f"{attribute.name} must be {length} hex digits")

    return check


def _port(_instance: Any, _attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 < value < 65536:
        raise ValueError("port must be 1-65535")


@attrs.frozen
class Peer:
    """Where a peer's BitTorrent wire listens, and what it has."""

    peer_id: str = attrs.field(validator=_hex(20))
    host: str = attrs.field(validator=attrs.validators.max_len(255))
    port: int = attrs.field(validator=_port)
    complete: bool = False
    origin: bool = False


@attrs.frozen
class Announce:
    """peer -> tracker: I take part in this torrent (reply: AnnounceReply)."""

    request_id: int
    info_hash: str = attrs.field(validator=_hex(64))
    digest: str = attrs.field(validator=attrs.validators.max_len(MAX_DIGEST_LENGTH))
    namespace: str = attrs.field(validator=attrs.validators.max_len(255))
    peer: Peer
    # Pieces the peer holds (a download's progress): the tracker notices a download that makes
    # none between announces and hands it the peers furthest along.
    progress: int = attrs.field(default=0, validator=attrs.validators.ge(0))


@attrs.frozen
class Leave:
    """peer -> tracker: I no longer take part in this torrent."""

    info_hash: str = attrs.field(validator=_hex(64))


@attrs.frozen
class MetainfoRequest:
    """peer -> tracker: the metainfo of a blob (reply: MetainfoReply)."""

    request_id: int
    namespace: str = attrs.field(validator=attrs.validators.max_len(255))
    digest: str = attrs.field(validator=attrs.validators.max_len(MAX_DIGEST_LENGTH))
    # The asker can stream the blob from an origin while the origin fetches it: the reply may
    # then be a Relay instead of the metainfo. Omitted on the wire when false (frames of peers
    # that predate it are the same bytes).
    relay: bool = False


@attrs.frozen
class Relay:
    """Where a blob that an origin is still fetching streams from: GET ``url`` + the blob's path
    (the origin's blob API, over this cluster's TLS when it has one); ``size`` bytes."""

    url: str = attrs.field(validator=attrs.validators.max_len(2048))
    size: int = attrs.field(validator=attrs.validators.ge(1))


@attrs.frozen
class Failure:
    """Why a request failed: an error code from swarmreg.errors and a message."""

    code: str
    message: str


@attrs.frozen
class AnnounceReply:
    """tracker -> peer: peers to connect to (complete peers and origins first)."""

    request_id: int
    info_hash: str
    peers: tuple[Peer, ...] = ()
    # Seconds until the next re-announce; decode() refuses one outside [MIN_INTERVAL, MAX_INTERVAL].
    interval: float = 30.0
    failure: Failure | None = None


@attrs.frozen
class PeersPush:
    """tracker -> peer: peers that just announced a torrent this connection announced."""

    info_hash: str
    peers: tuple[Peer, ...]


@attrs.frozen
class MetainfoReply:
    request_id: int
    metainfo: bytes | None = None
    failure: Failure | None = None
    # A small blob's bytes, so a manifest or config costs one round trip, not a torrent.
    content: bytes | None = None
    # Only to a request with relay: no torrent yet, stream the blob from this origin (omitted when None).
    relay: Relay | None = None


@attrs.frozen
class Hello:
    """agent -> tracker: this connection is an agent whose blob API listens on ``api_port`` (at the
    address the connection comes from, whatever else it might claim). No reply; sent on every
    (re)connect. The proxy's preheat asks agents there to fetch blobs ahead of a deploy."""

    api_port: int = attrs.field(validator=_port)


@attrs.frozen
class AgentsRequest:
    """proxy -> tracker: the agents connected now (reply: AgentsReply); for the proxy role or a
    holder of the cluster secret."""

    request_id: int


@attrs.frozen
class AgentAddress:
    """Where a live agent's blob API listens."""

    host: str = attrs.field(validator=attrs.validators.max_len(255))
    port: int = attrs.field(validator=_port)


@attrs.frozen
class AgentsReply:
    """tracker -> proxy: live agents, at most MAX_AGENTS of them (a random sample beyond)."""

    request_id: int
    agents: tuple[AgentAddress, ...] = ()
    failure: Failure | None = None


# A Forget names at most this many blobs (70 bytes each on the wire, 130 for sha512: within the
# tracker's default max_frame_size of 64 KiB).
MAX_FORGET = 400


@attrs.frozen
class Forget:
    """origin -> tracker: this origin no longer holds these blobs (hex of their digests: its garbage
    collector removed them); the tracker drops their cached metainfo and its origins' entries, so
    the next ask goes to the origins again (reply: Forgotten). For the origin role or a holder of
    the cluster secret; at most MAX_FORGET a frame."""

    request_id: int
    digests: tuple[str, ...] = attrs.field(validator=attrs.validators.max_len(MAX_FORGET))


@attrs.frozen
class Forgotten:
    """tracker -> origin: how many of the Forget's blobs it had cached."""

    request_id: int
    forgotten: int = 0
    failure: Failure | None = None

# An AgentsReply lists at most this many agents (about 60 bytes each on the wire).
MAX_AGENTS = 10_000


FRAME_TYPES: dict[str, type] = {
    "announce": Announce,
    "leave": Leave,
    "metainfo_request": MetainfoRequest,
    "announce_reply": AnnounceReply,
    "peers_push": PeersPush,
    "metainfo_reply": MetainfoReply,
    "hello": Hello,
    "agents_request": AgentsRequest,
    "agents_reply": AgentsReply,
    "forget": Forget,
    "forgotten": Forgotten,
}
_NAMES = {kind: name for name, kind in FRAME_TYPES.items()}


def _check_interval(reply: AnnounceReply) -> None:
    if not (math.isfinite(reply.interval) and MIN_INTERVAL <= reply.interval <= MAX_INTERVAL):
        raise ValueError(f"interval must be a finite number of seconds in "
                         f"[{MIN_INTERVAL:g}, {MAX_INTERVAL:g}], not {reply.interval!r}")


# Bounds a frame's fields must keep beyond their types, checked as it is decoded. Not attrs
# validators: a test's fake tracker must be able to build (and encode) a frame that breaks them.
_CHECKS: dict[type, Any] = {AnnounceReply: _check_interval}
TO_TRACKER = frozenset({Announce, Leave, MetainfoRequest, Hello, AgentsRequest, Forget})
TO_PEER = frozenset({AnnounceReply, PeersPush, MetainfoReply, AgentsReply, Forgotten})

_converter = cattrs.Converter(forbid_extra_keys=True)
# Fields added after a frame type shipped are left out while they hold their default, so that
# a receiver that predates them (forbid_extra_keys) still takes the frame.
for _frame in (MetainfoRequest, MetainfoReply):  # relay
    _converter.register_unstructure_hook(_frame, make_dict_unstructure_fn(
        _frame, _converter, relay=override(omit_if_default=True)))
_converter.register_unstructure_hook(Announce, make_dict_unstructure_fn(
    Announce, _converter, progress=override(omit_if_default=True)))


def _strict(kind: type[Any]) -> Any:
    def structure(value: Any, _type: Any) -> Any:
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise ValueError(f"expected {kind.__name__}")
        return kind(value)

    return structure


for _kind in (int, float, str, bool, bytes):
    _converter.register_structure_hook(_kind, _strict(_kind))


def _reason(error: BaseException, kind: Any) -> str:
    """cattrs' wording of a failed field, with a validator's own message (which names the bound)."""
    if type(error) is ValueError and str(error):
        return f"invalid value ({str(error)[:120]})"
    if isinstance(error, AttributeError):  # cattrs read a non-map as a map: say so, not Python's words
        return "expected a map"
    return format_exception(error, kind)


def _reasons(error: BaseException) -> str:
    """What was wrong with a body, field by field; never an error of its own (a map with a
    non-string key made cattrs' path joining raise TypeError here, which left decode() unchecked
    and cost the tracker's connection a 1011 and a traceback)."""
    if not isinstance(error, cattrs.BaseValidationError):
        return str(error)
    try:
        return "; ".join(cattrs.transform_error(error, format_exception=_reason))
    except Exception:
        return "a field has a key or value of the wrong type"


def encode(frame: Any) -> bytes:
    """A frame's bytes on the wire."""
    data: bytes = msgpack.packb({"v": PROTOCOL_VERSION, "t": _NAMES[type(frame)], "b": _converter.unstructure(frame)})
    return data


def decode(data: bytes | str, accepted: frozenset[type], max_size: int) -> Any:
    """Parse one frame the receiving side ``accepted``; ProtocolError on anything else."""
    if not isinstance(data, bytes):
        raise ProtocolError("frames are binary")
    if len(data) > max_size:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds {max_size}")
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException, TypeError) as error:
        raise ProtocolError(f"undecodable frame: {type(error).__name__}") from None
    if not isinstance(message, dict) or set(message) != {"v", "t", "b"}:
        raise ProtocolError("a frame is a map of v, t and b")
    if message["v"] != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {message['v']!r}")
    kind = FRAME_TYPES.get(message["t"]) if isinstance(message["t"], str) else None
    if kind is None or kind not in accepted:
        raise ProtocolError(f"unexpected frame type {str(message['t'])[:40]!r}")
    if not isinstance(message["b"], dict):
        raise ProtocolError(f"malformed {message['t']} frame: the body is not a map")
    if kind in (AnnounceReply, PeersPush) and isinstance(peers := message["b"].get("peers"), list):
        del peers[MAX_PEERS:]  # before structuring: the rest costs nothing
    if kind is AgentsReply and isinstance(agents := message["b"].get("agents"), list):
        del agents[MAX_AGENTS:]
    try:
        frame: Any = _converter.structure(message["b"], kind)
        if (check := _CHECKS.get(kind)) is not None:
            check(frame)
        return frame
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise ProtocolError(f"malformed {message['t']} frame: {_reasons(error)[:200]}") from None
