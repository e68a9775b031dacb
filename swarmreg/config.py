"""Configuration: frozen attrs classes structured from TOML by a strict cattrs converter.

Every option has a default, so an empty file (or none) is a valid configuration.
Unknown keys and wrongly typed values are refused with the key path that is wrong.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NewType, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

import attrs
import cattrs
import tomli_w

from swarmreg.backends.types import BackendType, backend_type, backend_types
from swarmreg.durations import parse_duration
from swarmreg.layout import DataLayout
from swarmreg.redaction import REDACTED as REDACTED
from swarmreg.redaction import redacted, secret_field, url_field
from swarmreg.sizes import ByteSize as ByteSize
from swarmreg.sizes import parse_size as parse_size
from swarmreg.upstream.settings import REGISTRY_NAME

# Defined in a module of their own so that storage backends can take them as options (a backend's
# module may not import this one, which imports every backend type); re-exported here.
from swarmreg.upstream.settings import RegistryConfig as RegistryConfig
from swarmreg.upstream.settings import UpstreamAuthConfig as UpstreamAuthConfig
from swarmreg.upstream.settings import UpstreamTlsConfig as UpstreamTlsConfig

MiB = 1 << 20
GiB = 1 << 30

# Seconds, written as a number or ociregistry's "30d", "12h", "90m" (swarmreg.durations).
Duration = NewType("Duration", float)
T = TypeVar("T")


class ConfigError(Exception):
    """The configuration cannot be used; the message names every wrong key path."""


@attrs.frozen
class Address:
    """A host and TCP port to listen on or connect to; port 0 asks the OS for a free one."""

    host: str
    port: int = attrs.field(validator=[attrs.validators.ge(0), attrs.validators.le(65535)])

    @classmethod
    def parse(cls, text: Any, _type: Any = None) -> Address:
        if not isinstance(text, str):
            raise ValueError(f"expected 'host:port', got {text!r}")
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"expected 'host:port' with a port from 0 to 65535, got {text!r}")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _regex(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        re.compile(value)
    except re.error as error:
        raise ValueError(f"'{attribute.name}' must be a regular expression: {error}") from None


def default_data_dir() -> str:
    """``$XDG_DATA_HOME/swarmreg``, or ``~/.local/share/swarmreg``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "swarmreg")


# A role's members: the addresses as written, or one DNS name (host:port) standing for its records.
Members = tuple[Address, ...] | Address


def _members(value: Any, _type: Any = None) -> Members:
    if isinstance(value, str):
        return Address.parse(value)
    if isinstance(value, list | tuple):
        members = tuple(Address.parse(item) for item in value)
        if len(set(members)) != len(members):
            raise ValueError("a member is listed twice")
        return members
    raise ValueError(f"expected a list of 'host:port' or one 'name:port', got {value!r}")


@attrs.frozen
class LogConfig:
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


@attrs.frozen
class StoreConfig:
    # fsync each blob and its directory before it becomes visible under its digest,
    # so a power cut cannot leave a torn file there either.
    fsync: bool = True
    # Reads and writes move this much per call; large chunks are what make streaming fast.
    chunk_size: ByteSize = attrs.field(default=ByteSize(4 * MiB), validator=attrs.validators.ge(ByteSize(MiB)))


@attrs.frozen
class HttpConfig:
    # A request body that delivers nothing for this long is abandoned.
    idle_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    keep_alive_timeout: float = attrs.field(default=75.0, validator=attrs.validators.gt(0))


def _filesystem() -> BackendType:
    # Registered by importing swarmreg.backends, which importing swarmreg.backends.base does.
    kind = backend_type("filesystem")
    assert kind is not None
    return kind


@attrs.frozen
class BackendConfig:
    """Which storage backend holds the blobs of the namespaces matching ``namespace``."""

    namespace: str = attrs.field(default=".*", validator=_regex)
    type: str = "filesystem"
    # Structured into the options class the backend type registered (see swarmreg.backends). It
    # may hold secrets (an S3 backend's keys): secret_keys counts in every registered type's options.
    options: Any = attrs.field(factory=lambda: _filesystem().options(),
                               metadata={"tables": lambda: [kind.options for kind in backend_types()]})


def _piece_lengths(_instance: object, _attribute: object, value: dict[ByteSize, ByteSize]) -> None:
    for length in value.values():
        if length < 16 << 10 or length & (length - 1) or length > 256 * MiB:
            raise ValueError(f"piece_lengths: a piece length is a power of two from 16KiB to 256MiB, not {length}")


@attrs.frozen
class OriginConfig:
    listen: Address = Address("127.0.0.1", 15002)
    # Upload sessions idle for longer than this are removed (checked every quarter of it, at
    # most every 5 minutes), so abandoned sessions give their disk and their slot back.
    upload_ttl: float = attrs.field(default=3600.0, validator=attrs.validators.gt(0))
    max_upload_size: ByteSize = ByteSize(64 * GiB)
    # Open upload sessions, in all and per namespace (a repository, for the proxy's pushes);
    # past either, opening one more answers 429 TOOMANYREQUESTS with Retry-After.
    max_sessions: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    max_sessions_per_namespace: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    # While a blob is fetched from its backend, this many agents asking for its metainfo are told
    # to stream it from this origin as it arrives (a relay: bytes to the first clients at once);
    # later ones wait for the torrent. More relays: less waiting, more of the origin's egress per
    # blob (each relay is a whole copy); 0: never relay.
    relay_limit: int = attrs.field(default=4, validator=attrs.validators.ge(0))
    # How many origins own each blob (rendezvous hashing over [cluster] origins; capped by their
    # number): an upload goes to the first live one, which replicates it to the others; reads
    # try them in turn; a tracker records each owner that holds a blob as its seeder (docs/cluster.md).
    replicas: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    # The index the garbage collector marks from (its collector routes, with this node's cluster
    # credentials: an origin role certificate); unset, the index role in the same daemon.
    index: Address | None = None
    # Trackers told of the blobs the garbage collector removed (they drop their metainfo and this
    # origin as a seeder), besides the tracker role in the same daemon, which is always told.
    trackers: tuple[Address, ...] = ()
    # The piece length of the torrents this origin makes, as Kraken's origins take it: a blob size
    # -> the length for blobs from that size on (the largest size <= the blob's applies), such as
    # {"0" = "256KiB", "64MiB" = "1MiB"}; empty: the table in docs/swarm.md. The length is part of
    # a blob's info-hash: every origin of a cluster must have the same table.
    piece_lengths: dict[ByteSize, ByteSize] = attrs.field(factory=dict, validator=_piece_lengths)


@attrs.frozen
class GcConfig:
    """The origin's garbage collector (docs/gc.md): what it keeps, and how often it runs."""

    # Seconds between scheduled collections; 0 never (run one with POST /gc or `swarmreg gc`).
    interval: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    # A blob committed, and an unreferenced blob link made or renewed, within this many seconds is
    # kept: longer than the longest push (its first layer's commit to its manifest PUT).
    grace: float = attrs.field(default=3600.0, validator=attrs.validators.ge(0))


@attrs.frozen
class SwarmConfig:
    """The daemon's one libtorrent session (used by the agent and origin roles)."""

    # The BitTorrent peer wire (TCP; uTP is off: it was 20x slower here).
    listen: Address = Address("127.0.0.1", 16001)
    # Bytes per second over all torrents; 0 means unlimited.
    upload_rate_limit: ByteSize = ByteSize(0)
    download_rate_limit: ByteSize = ByteSize(0)
    connections_limit: int = attrs.field(default=500, validator=attrs.validators.ge(2))
    # Seconds a peer connection may sit with nothing wanted either way before it closes.
    idle_peer_timeout: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    # Seconds a complete torrent may go without a peer or a read before it leaves the session
    # (its file stays; 0: never). An origin adds it back when asked for the blob's metainfo, as
    # the tracker does at least every tracker.metainfo_refresh while the blob is downloaded: keep
    # this longer than that. An agent adds it back when the blob is pulled from it again.
    idle_torrent_timeout: float = attrs.field(default=120.0, validator=attrs.validators.ge(0))
    # Peers served at once; the rest wait their turn (fewer spreads pieces wider).
    unchoke_slots: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    # Download pieces strictly in order (fast to first byte, but agents streaming
    # one blob then want the same pieces at once); off: the agent's stream window.
    sequential: bool = False
    # Peers served at once per torrent added as a complete seed (an origin's blobs).
    # One: the origin sends each piece about once and the agents spread it; 0: no limit.
    seed_upload_slots: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    # libtorrent settings by name, applied over swarmreg's own (swarmreg/swarm/settings.py), for
    # tuning and experiments: `--set swarm.libtorrent.aio_threads=2`. Each value has its setting's type.
    libtorrent: dict[str, Any] = attrs.field(factory=dict, validator=lambda _i, _a, v: _check_libtorrent(v))


def _check_libtorrent(settings: Mapping[str, Any]) -> None:
    if not settings:
        return
    # Only now: clients read the config too, and must not load the daemon's frameworks.
    import libtorrent as lt

    known: dict[str, Any] = dict(lt.default_settings())
    for name, value in settings.items():
        if name not in known:
            raise ValueError(f"{name!r} is not a libtorrent setting")
        if type(value) is not type(known[name]):
            raise ValueError(f"libtorrent setting {name!r} takes a {type(known[name]).__name__}, "
                             f"not {value!r}")


def _tracker_store(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("", "memory") and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError('tracker.store is "memory" or a redis://, rediss:// or unix:// URL')


@attrs.frozen
class TrackerConfig:
    listen: Address = Address("127.0.0.1", 15003)
    # Origins to fetch metainfo from (their HTTP API); they also seed every blob.
    # Empty: the origin role of this same daemon.
    origins: tuple[Address, ...] = ()
    # How often peers re-announce; a peer silent for three intervals expires. Within the bounds
    # a peer accepts in a reply (swarmreg.tracker.wire.MIN_INTERVAL, MAX_INTERVAL).
    announce_interval: float = attrs.field(
        default=30.0, validator=[attrs.validators.ge(1.0), attrs.validators.le(86400.0)])
    max_peers: int = attrs.field(default=50, validator=attrs.validators.ge(1))
    # Frames larger than this close the connection.
    max_frame_size: ByteSize = ByteSize(64 << 10)
    # A connection that has not completed its TLS and websocket handshakes by then is closed
    # (a client refused at the TLS handshake, a slow or silent one); so is one that does not
    # answer a ping in that time when another connection announces its peer id.
    handshake_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    # Frames one connection may send per second (up to frame_burst at once); faster senders
    # are slowed down, not cut off: an agent re-announcing all it holds after a reconnect is legit.
    frame_rate: float = attrs.field(default=500.0, validator=attrs.validators.gt(0))
    frame_burst: int = attrs.field(default=2000, validator=attrs.validators.ge(1))
    metainfo_cache_size: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    # Blobs up to this size (manifests, configs, small layers) travel inside the metainfo
    # reply: one round trip instead of a torrent. 0 turns it off.
    inline_max: ByteSize = ByteSize(1 * MiB)
    # Memory the tracker spends caching those small blobs (the most recently asked for). It is
    # for a fleet pulling the same image at once, whose manifest, config and small layers it
    # holds many times over; 64 MiB filled over 4-5 minutes of the registry load test, and was
    # most of the herd's growth there.
    inline_cache: ByteSize = ByteSize(16 * MiB)
    # A download announced for a blob whose metainfo is older than this asks the origin again,
    # so an origin that lost or stopped seeding a blob fetches it back from its backend.
    metainfo_refresh: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    # A download whose announced progress has not grown for this long is stalled: its announce
    # reply lists the peers furthest along first, and up to stall_helpers of the agents further
    # along hear of it (a push), so that they dial it (docs/swarm.md, "Stalled downloads").
    stall_after: float = attrs.field(default=4.0, validator=attrs.validators.gt(0))
    stall_helpers: int = attrs.field(default=8, validator=attrs.validators.ge(0))
    # Where the peer store lives: "" or "memory" (this process; one tracker), or a Redis URL
    # (redis://, rediss://, unix://) that several trackers share (docs/swarm.md, "Trackers on Redis").
    # A secret: the URL may carry Redis's password.
    store: str = secret_field(default="", validator=_tracker_store)


def _edge_pair(instance: EdgeTlsConfig, attribute: attrs.Attribute[str], value: str) -> None:
    if bool(instance.cert) != bool(instance.key):
        raise ValueError("cert and key go together")
    if instance.client_auth == "verify" and not (instance.ca and instance.cert):
        raise ValueError('client_auth = "verify" needs cert, key and the ca that signs client certificates')


@attrs.frozen
class EdgeTlsConfig:
    """TLS on a registry port, like ociregistry's serverTlsConfig: cert and key for one-way TLS;
    ``client_auth = "verify"`` also requires a client certificate signed by ``ca``."""

    cert: str = ""
    key: str = ""
    client_auth: Literal["none", "verify"] = "none"
    ca: str = attrs.field(default="", validator=_edge_pair)

    @property
    def enabled(self) -> bool:
        return bool(self.cert)


def _fraction(_instance: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    if value is not None and not 0 <= value <= 1:
        raise ValueError(f"'{attribute.name}' must be a fraction from 0 to 1, got {value!r}")


def _high(_instance: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    if value is not None and not 0 < value <= 1:
        raise ValueError(f"'{attribute.name}' must be a fraction above 0 and at most 1, got {value!r}")


def _low_below_high(instance: CacheConfig, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    _fraction(instance, attribute, value)
    if value is not None and instance.disk_high is None:
        raise ValueError("'disk_low' must come with disk_high (the usage that starts eviction)")
    if instance.disk_high is not None and value is not None and value > instance.disk_high:
        raise ValueError(f"'disk_low' must be at most disk_high ({instance.disk_high:g}), got {value:g}")


def _positive_size(_instance: object, attribute: attrs.Attribute[ByteSize | None], value: ByteSize | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"'{attribute.name}' must be above 0 (leave it unset for no limit)")


def _positive(_instance: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"'{attribute.name}' must be a number of seconds above 0, got {value!r}")


@attrs.frozen
class CacheConfig:
    """What an agent keeps of the blobs it pulled (docs/cache.md): every limit unset by default."""

    # The blobs, downloads in progress and temp files of the data directory stay within this.
    max_size: ByteSize | None = attrs.field(default=None, validator=_positive_size)
    # Fractions of the data directory's filesystem: past disk_high used, blobs go until disk_low.
    disk_high: float | None = attrs.field(default=None, validator=_high)
    disk_low: float | None = attrs.field(default=None, validator=_low_below_high)
    # Seconds: a blob not read for tti, or held for ttl, goes.
    tti: float | None = attrs.field(default=None, validator=_positive)
    ttl: float | None = attrs.field(default=None, validator=_positive)
    # Answer GET /cmd/blob/list and DELETE /cmd/evict from any address, not only loopback.
    admin_remote: bool = False

    @property
    def low(self) -> float | None:
        """The fraction disk pressure evicts down to: disk_low, else disk_high."""
        return self.disk_low if self.disk_low is not None else self.disk_high


@attrs.frozen
class AgentConfig:
    # The blob download API (Kraken's agent server port).
    listen: Address = Address("127.0.0.1", 16002)
    # The read-only Docker registry (`docker pull localhost:16000/repo:tag`).
    registry_listen: Address = Address("127.0.0.1", 16000)
    # HTTPS on the registry port (off: plain HTTP, as docker allows for localhost).
    registry_tls: EdgeTlsConfig = EdgeTlsConfig()
    tracker: Address = Address("127.0.0.1", 15003)
    index: Address = Address("127.0.0.1", 15004)
    # A download that gets no new piece for this long fails.
    stall_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    # Pieces from the next one the download hashes that are fetched first (rarest first among them).
    stream_window: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    # While a download runs it announces its progress this often, so that the tracker notices
    # one that makes none (tracker.stall_after); 0: only the announces every interval.
    progress_interval: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))
    # How long an answer of the index (a tag or blob link, found or not; a manifest record found) is
    # reused: a tag, manifest or blob deleted through the proxy stops being served within it.
    tag_ttl: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    # Attempts at reaching the tracker (with backoff) before a request fails with 503.
    tracker_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    # Eviction of held blobs: size, disk pressure and age limits ([agent.cache]).
    cache: CacheConfig = CacheConfig()

def _remote_url(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is not None and "@" in parts.netloc:  # refused before anything echoes the URL
        raise ValueError("'remote' must carry no credentials: set username and password, or token")
    try:
        port_ok = parts is not None and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is no number, or out of range
        port_ok = False
    if parts is None or not port_ok or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("'remote' must be the remote cluster's registry (proxy) URL, http://host:port or "
                         f"https://host[:port], got {value[:200]!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("'remote' must be the registry's root URL, no path (its API is at /v2/), "
                         f"got {value[:200]!r}")


def _without_slash(url: str) -> str:
    return url.rstrip("/")


def _remote_credentials(instance: ReplicateRule, _attribute: attrs.Attribute[str], value: str) -> None:
    if instance.password and not instance.username:
        raise ValueError("'username' must be set with password")
    if instance.token and (instance.username or instance.password):
        raise ValueError("'token' must be set alone: username and password, or a token, not both")


def _remote_tls(instance: ReplicateRule, _attribute: attrs.Attribute[bool], value: bool) -> None:
    custom = instance.tls != UpstreamTlsConfig()
    if value and custom:
        raise ValueError("'cluster_tls' must not be set with a [tls] table of the rule: use one of them")
    if (value or custom) and not instance.remote.startswith("https://"):
        raise ValueError("'cluster_tls' must go with an https:// remote, as must a [tls] table of the rule")


@attrs.frozen
class ReplicateRule:
    """One ``[[index.replicate]]`` rule (docs/replication.md): every tag pushed to a repository
    whose whole name matches ``repository`` is sent, with its manifest and blobs, to the registry
    API (the proxy) of the remote cluster at ``remote``."""

    repository: str = attrs.field(validator=_regex)
    # http(s)://host[:port] of the remote cluster's proxy (its Registry V2 push API).
    remote: str = attrs.field(converter=_without_slash, validator=_remote_url)
    # Credentials for the remote proxy: basic (its users, or its token realm's), or a bearer token.
    username: str = ""
    password: str = secret_field(default="")
    token: str = secret_field(default="", validator=_remote_credentials)
    # TLS towards an https remote: a CA of its own, a client certificate, no verification; or
    # cluster_tls, this node's [tls] certificate, verified against the cluster CA.
    tls: UpstreamTlsConfig = UpstreamTlsConfig()
    cluster_tls: bool = attrs.field(default=False, validator=_remote_tls)
    # Seconds to wait for a connection, and for each read or write of a request.
    timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    # A failed entry is tried again after 1 s, doubled per failure up to this.
    max_backoff: Duration = attrs.field(default=Duration(300.0), validator=attrs.validators.ge(Duration(1.0)))


def _one_rule_per_remote(_instance: object, _attribute: attrs.Attribute[Any], value: tuple[ReplicateRule, ...]) -> None:
    remotes = [rule.remote.lower() for rule in value]
    if len(set(remotes)) != len(remotes):
        raise ValueError("'replicate' must name each remote once (match several repositories with one "
                         "regular expression: 'team/.*|infra/.*')")


@attrs.frozen
class IndexConfig:
    """The index role: the registry's metadata (tags, manifests, blob links) in SQLite, or in
    PostgreSQL that several index nodes share."""

    listen: Address = Address("127.0.0.1", 15004)
    # The SQLite database file, relative to data_dir; or a PostgreSQL URL (postgresql://... or
    # postgres://...: libpq's, its password best in PGPASSWORD or a PGPASSFILE, not here).
    database: str = url_field(default="index.db")
    # Where manifests fetched from upstream registries are kept (pull-through): this origin's
    # upload API (the index's certificate then needs an origin write role); unset, the blob
    # store of the origin role in the same daemon.
    origin: Address | None = None
    # Replication to other clusters ([[index.replicate]], docs/replication.md).
    replicate: tuple[ReplicateRule, ...] = attrs.field(default=(), validator=_one_rule_per_remote)

    @database.validator
    def _check_database(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if not value:
            raise ValueError("'database' must name a file")
        if is_postgres_url(value):
            from psycopg.conninfo import conninfo_to_dict  # only an index on PostgreSQL needs it

            try:
                conninfo_to_dict(value)
            except Exception:  # libpq's message may quote the URL, password and all
                raise ValueError("'database' is no PostgreSQL URL libpq reads") from None


def is_postgres_url(database: str) -> bool:
    """Whether ``index.database`` names a PostgreSQL database (else it is a SQLite file)."""
    return database.startswith(("postgresql://", "postgres://"))


@attrs.frozen
class PruneConfig:
    """The index's scheduled pruning (ociregistry's pruneConfig): every ``frequency``, remove the
    manifests (and their tags) not pulled within ``duration`` (``type = "accessed"``; never
    pulled: since recorded) or recorded before it (``"created"``), at most ``count`` a run (-1: no
    limit); ``dry_run`` only logs what would go. Blobs are left to garbage collection."""

    enabled: bool = False
    type: Literal["accessed", "created"] = "accessed"
    duration: Duration = Duration(30 * 86400.0)
    frequency: Duration = attrs.field(default=Duration(86400.0), validator=attrs.validators.gt(Duration(0.0)))
    count: int = attrs.field(default=-1, validator=attrs.validators.ge(-1))
    dry_run: bool = False


@attrs.frozen
class AccessRuleConfig:
    """Who may do what on which repositories: ``user`` ("*": any signed-in user, "anonymous":
    no credentials), ``repositories`` (a regular expression matching whole names), ``actions``."""

    user: str
    repositories: str = attrs.field(validator=_regex)
    # "admin": the proxy's admin API (/cmd/...), which acts on the whole registry, so a rule
    # granting it must match every name (".*").
    actions: tuple[Literal["pull", "push", "delete", "admin"], ...] = attrs.field(default=("pull",))

    @actions.validator
    def _check_admin(self, _attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        if "admin" in value and self.repositories not in MATCH_EVERY_NAME:
            raise ValueError("'actions' must grant admin only in a rule for every repository (repositories = "
                             f"\".*\"): the admin API acts on the whole registry, not {self.repositories!r}")


# Patterns of an access rule that match every repository name.
MATCH_EVERY_NAME = (".*", ".+")


@attrs.frozen
class ProxyConfig:
    """The push side: the Docker Registry V2 / OCI distribution API."""

    listen: Address = Address("127.0.0.1", 15000)
    # The origin's API that pushed blobs go to, and the index; unset: this daemon's own role.
    origin: Address | None = None
    index: Address | None = None
    # Who may push and pull: user name -> hash from `swarmreg passwd`. Empty: no authentication.
    users: dict[str, str] = secret_field(factory=dict)
    # HTTPS on the registry port (off: plain HTTP, as docker allows for localhost).
    tls: EdgeTlsConfig = EdgeTlsConfig()
    # How clients authenticate when users are set: "basic" on every request, or Docker's token
    # flow ("token": a 401 points to /token, which trades basic credentials for a bearer token).
    auth: Literal["basic", "token"] = "basic"
    token_ttl: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    # The tokens' HMAC key; empty: a random one per start (set one shared by all proxies of a realm).
    token_secret: str = secret_field(default="")
    # Where the 401 sends clients for a token; empty: this proxy's /token, at the host they used.
    token_realm: str = ""
    # Permissions, the first rule that matches user and repository wins; none: users may do all.
    access: tuple[AccessRuleConfig, ...] = ()
    max_manifest_size: ByteSize = ByteSize(4 * MiB)
    # A client address with this many failed sign-ins within auth_failure_window seconds gets
    # 429 until the oldest one ages out (0: no limit).
    auth_failure_limit: int = attrs.field(default=10, validator=attrs.validators.ge(0))
    auth_failure_window: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    # The tracker (its announce channel) whose agents a preheat with "agents" asks to prefetch;
    # unset: the tracker role of the same daemon.
    tracker: Address | None = None
    # Preheat jobs (POST /preheat) running at once; one more is refused with 429.
    preheat_jobs: int = attrs.field(default=4, validator=attrs.validators.ge(1))


def _all_or_none(instance: TlsConfig, attribute: attrs.Attribute[str], value: str) -> None:
    if bool(instance.ca) != bool(instance.cert) or bool(instance.cert) != bool(instance.key):
        raise ValueError("tls.ca, tls.cert and tls.key go together: set all three or none")


def _peer_pair(instance: TlsConfig, attribute: attrs.Attribute[str], value: str) -> None:
    if bool(instance.peer_cert) != bool(instance.peer_key):
        raise ValueError("tls.peer_cert and tls.peer_key go together")
    if instance.peer_cert and not instance.ca:
        raise ValueError("tls.peer_cert needs the rest of [tls] (ca, cert, key)")


@attrs.frozen
class TlsConfig:
    """The cluster's mutual TLS: with ca, cert and key set, every inter-node channel (origin,
    index and tracker APIs, the tracker websocket, the peer wire) takes TLS with a client
    certificate from this CA."""

    # PEM files; relative paths are taken from the working directory.
    ca: str = ""
    cert: str = ""
    key: str = attrs.field(default="", validator=_all_or_none)
    # The peer wire's certificate (subjectAltName "*", signed by the CA): blobs become SSL
    # torrents. Needed by daemons that run the swarm (origin, agent) when [tls] is set.
    peer_cert: str = ""
    peer_key: str = attrs.field(default="", validator=_peer_pair)

    @property
    def enabled(self) -> bool:
        return bool(self.ca)


def _bearer_secret(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    # Our clients send it in an HTTP header: a space at either end, a control character or a
    # non-ASCII one made every internal request fail in the client (httpx refuses such a header)
    # or never match (the server strips the header). The value is never quoted: it is a secret.
    if value and not all("!" <= char <= "~" for char in value):
        raise ValueError("'secret' must be printable ASCII without spaces (e.g. `openssl rand -hex 32`)")


@attrs.frozen
class ClusterConfig:
    """What the internal ports ask of a writer when ``[tls]`` is not set (see swarmreg.authz)."""

    # Shared by every node: writes to the origin, index and tracker need it as a bearer token,
    # which our own clients send. Empty: no secret (writes unchecked without [tls]).
    secret: str = secret_field(default="", validator=_bearer_secret)
    # A file whose content (surrounding whitespace stripped) is the secret, read at start: keeps
    # the secret out of the configuration file and off command lines. Set this or secret, not both.
    secret_file: str = ""
    # Start even though internal ports listen beyond loopback with neither [tls] nor a secret.
    insecure: bool = False
    # The members of each role (docs/cluster.md): a list of addresses, or one "name:port" whose
    # A/AAAA records are the members (looked up again every resolve_interval). Set, a list takes
    # precedence over the role's own address keys (proxy.origin, agent.tracker, tracker.origins
    # ...), which stay the one-member ring used when the list is empty.
    origins: Members = ()
    trackers: Members = ()
    indexes: Members = ()
    # Every member of a ring is asked GET /health this often (0: never; passive checks only).
    health_interval: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    resolve_interval: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    # A member a request failed to reach is skipped for 1 s, doubled per failure up to this.
    max_backoff: float = attrs.field(default=30.0, validator=attrs.validators.ge(1))


def _default_registry(value: str) -> None:
    if value and not REGISTRY_NAME.fullmatch(value):
        raise ValueError(f"'default_registry' must be host[:port] (e.g. 'docker.io'), got {value!r}")


def _unique_registries(_instance: object, _attribute: attrs.Attribute[Any], value: tuple[RegistryConfig, ...]) -> None:
    names = [registry.name for registry in value]
    if len(set(names)) != len(names):
        raise ValueError("'registries' must name each upstream once")


def _replication_tls(config: Config, index: IndexConfig) -> None:
    for number, rule in enumerate(index.replicate):
        if rule.cluster_tls and not config.tls.enabled:
            raise ValueError(f"'index' must have the cluster's [tls] (ca, cert and key) for "
                             f"replicate[{number}].cluster_tls")


@attrs.frozen
class Config:
    data_dir: str = attrs.field(factory=default_data_dir)
    # SIGINT/SIGTERM give in-flight work this long before it is cancelled.
    shutdown_timeout: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))
    # Every this many seconds free pages inside glibc's heaps go back to the kernel (malloc_trim);
    # 0 never. See swarmreg.malloc.
    malloc_trim_interval: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))
    log: LogConfig = LogConfig()
    store: StoreConfig = StoreConfig()
    http: HttpConfig = HttpConfig()
    tls: TlsConfig = TlsConfig()
    cluster: ClusterConfig = ClusterConfig()
    backends: tuple[BackendConfig, ...] = (BackendConfig(),)
    origin: OriginConfig = OriginConfig()
    gc: GcConfig = GcConfig()
    swarm: SwarmConfig = SwarmConfig()
    tracker: TrackerConfig = TrackerConfig()
    agent: AgentConfig = AgentConfig()
    proxy: ProxyConfig = ProxyConfig()
    index: IndexConfig = attrs.field(default=IndexConfig(), validator=lambda i, _a, v: _replication_tls(i, v))
    prune: PruneConfig = PruneConfig()
    # Upstream registries (pull-through caching), one [[registries]] table each.
    registries: tuple[RegistryConfig, ...] = attrs.field(default=(), validator=_unique_registries)
    # Pull-through modes, top-level beside `registries` as in ociregistry's configuration.
    # air_gapped: never contact an upstream; serve what is cached, by tag and by digest.
    air_gapped: bool = False
    # A `latest` tag is resolved at its upstream on every pull.
    always_pull_latest: bool = False
    # Seconds an upstream's other tags are served from the cache before they are resolved again.
    tag_ttl: float = attrs.field(default=300.0, validator=attrs.validators.ge(0))
    # When an upstream fails or times out, serve the cached tag (and say so in the log).
    stale_if_error: bool = True
    # The upstream a bare name (no registry host in its first component) is pulled from when
    # swarmreg holds no such repository of its own; "" keeps bare names local.
    default_registry: str = attrs.field(default="", validator=lambda _i, _a, value: _default_registry(value))

    @property
    def layout(self) -> DataLayout:
        """Where everything lives under the data directory."""
        return DataLayout(self.data_dir)


def _strict(kind: type, check: Callable[[Any], bool]) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _type: Any) -> Any:
        if not check(value):
            raise ValueError(f"expected {kind.__name__}, got {value!r}")
        return kind(value)

    return structure


def make_converter() -> cattrs.Converter:
    """A converter that refuses unknown keys and never coerces between types."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(bool, _strict(bool, lambda v: isinstance(v, bool)))
    converter.register_structure_hook(
        int, _strict(int, lambda v: isinstance(v, int) and not isinstance(v, bool)))
    converter.register_structure_hook(
        float, _strict(float, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)))
    converter.register_structure_hook(str, _strict(str, lambda v: isinstance(v, str)))
    converter.register_structure_hook(ByteSize, parse_size)
    converter.register_structure_hook(Duration, parse_duration)
    converter.register_structure_hook(Address, Address.parse)
    converter.register_unstructure_hook(Address, str)
    converter.register_structure_hook_func(lambda kind: kind == Members, _members)
    converter.register_unstructure_hook_func(
        lambda kind: kind == Members, lambda value: str(value) if isinstance(value, Address) else list(map(str, value)))

    def structure_backend(value: Any, _type: Any) -> BackendConfig:
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a table, got {value!r}")
        value = dict(value)
        kind = backend_type(value.get("type", "filesystem"))
        if kind is None:
            known = ", ".join(t.name for t in backend_types())
            raise ValueError(f"unknown backend type {value['type']!r}; known: {known}")
        try:
            value["options"] = converter.structure(value.get("options", {}), kind.options)
        except Exception as error:
            # Put "options" into the error's key path: backends[0].options.root, not backends[0].root.
            error.add_note(cattrs.errors.AttributeValidationNote(
                "Structuring class BackendConfig @ attribute options", "options", kind.options))
            raise cattrs.ClassValidationError("While structuring BackendConfig", [error], BackendConfig) from None
        return base_structure(value, BackendConfig)

    base_structure = cattrs.gen.make_dict_structure_fn(
        BackendConfig, converter, _cattrs_forbid_extra_keys=True,
        options=cattrs.gen.override(struct_hook=lambda value, _type: value),
    )
    converter.register_structure_hook(BackendConfig, structure_backend)
    return converter


_UNKNOWN_KEYS = "\0unknown keys\0"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(error: BaseException, _type: Any) -> str:
    if isinstance(error, KeyError):
        return "required key missing"
    if isinstance(error, cattrs.ForbiddenExtraKeysError):
        return _UNKNOWN_KEYS + "\0".join(sorted(error.extra_fields))  # one line per key, below
    if get_origin(_type) is Literal:
        return f"expected one of {', '.join(map(repr, get_args(_type)))}"
    if isinstance(error, TypeError):
        return "expected a table"
    return str(error) or type(error).__name__


def structure(document: Mapping[str, Any], kind: type[T]) -> T:
    """``document`` (parsed TOML) as a ``kind``, strictly; ConfigError lists every wrong key path."""
    try:
        return make_converter().structure(document, kind)
    except (cattrs.BaseValidationError, ValueError) as error:
        raise ConfigError(_format_errors(error)) from None


def _format_errors(error: Exception) -> str:
    lines = []
    for message in cattrs.transform_error(error, path="$", format_exception=_describe):
        text, _, where = message.rpartition(" @ ")
        where = where.removeprefix("$").lstrip(".")
        if text.startswith(_UNKNOWN_KEYS):
            lines += [f"{_join(where, key)}: unknown key" for key in text[len(_UNKNOWN_KEYS):].split("\0")]
        elif match := re.fullmatch(r"'(\w+)' (must .*)", text):  # an attrs validator names its field
            lines.append(f"{_join(where, match[1])}: {match[2]}")
        else:
            lines.append(f"{where or '(top level)'}: {text}")
    return "invalid configuration:\n" + "\n".join(f"  {line}" for line in lines)


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key or not all(key.split(".")):
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # not a TOML literal: take it as a plain string
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set each ``key.path=value`` (value read as a TOML literal, else a string) in ``data``."""
    for item in overrides:
        path, value = _parse_override(item)
        table = data
        for depth, part in enumerate(path[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(path[:depth + 1])} is not a table")
        table[path[-1]] = value
    return data


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    data_dir: str | None = None,
) -> Config:
    """Read ``path`` (TOML), apply ``--set`` overrides and flags, and structure a Config."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as file:
                data = tomllib.load(file)
        except OSError as error:
            raise ConfigError(f"cannot read configuration {path}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None
    apply_overrides(data, overrides)
    if data_dir is not None:
        data["data_dir"] = data_dir
    config = structure(data, Config)
    config = attrs.evolve(config, cluster=_read_secret_file(config.cluster))
    config = attrs.evolve(config, registries=tuple(
        _read_password_file(registry, index) for index, registry in enumerate(config.registries)))
    return attrs.evolve(config, data_dir=os.path.abspath(os.path.expanduser(config.data_dir)))


def _read_secret_file(cluster: ClusterConfig) -> ClusterConfig:
    """``cluster`` with ``secret`` read from ``secret_file``, if that is set."""
    if not cluster.secret_file:
        return cluster
    if cluster.secret:
        raise ConfigError("cluster.secret and cluster.secret_file: set one of them, not both")
    secret = _read_secret_text(cluster.secret_file, "cluster.secret_file")
    try:
        return attrs.evolve(cluster, secret=secret)
    except ValueError as error:  # the secret's own checks (no whitespace, printable ASCII)
        raise ConfigError(f"cluster.secret_file: {cluster.secret_file}: {error}") from None


def _read_secret_text(path: str, key: str) -> str:
    """The secret in the file ``path`` (config key ``key``), surrounding whitespace stripped."""
    try:
        with open(path, encoding="utf-8") as file:
            secret = file.read().strip()
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None
    if not secret:
        raise ConfigError(f"{key}: {path} is empty")
    return secret


def _read_password_file(registry: RegistryConfig, index: int) -> RegistryConfig:
    """``registry`` with ``auth.password`` read from ``auth.password_file``, if that is set."""
    path = registry.auth.password_file
    key = f"registries[{index}].auth.password_file"
    if not path:
        return registry
    if registry.auth.password:
        raise ConfigError(f"registries[{index}].auth.password and password_file: set one of them, not both")
    password = _read_secret_text(path, key)
    return attrs.evolve(registry, auth=attrs.evolve(registry.auth, password=password))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _redact(instance: Any, data: Any) -> Any:
    """``data`` (``instance`` unstructured) with the value of every secret field redacted."""
    if isinstance(data, list) and isinstance(instance, tuple | list):
        return [_redact(item, value) for item, value in zip(instance, data, strict=True)]
    if not (attrs.has(type(instance)) and isinstance(data, dict)):
        return data
    data = dict(data)
    for field in attrs.fields(type(instance)):
        if field.name in data:
            value = getattr(instance, field.name)
            secret, redact = field.metadata.get("secret"), field.metadata.get("redact")
            if redact is not None:
                data[field.name] = redact(data[field.name])
            else:
                data[field.name] = redacted(data[field.name]) if secret else _redact(value, data[field.name])
    return data


def secret_keys(instance: Any = None, prefix: str = "") -> frozenset[str]:
    """The dotted key paths of every secret field (``cluster.secret``, ``proxy.token_secret``,
    ``proxy.users``), found in the tables under ``instance`` (default: the default Config), and
    of every list of tables that holds one (``registries``: its passwords)."""
    instance = Config() if instance is None else instance
    keys: set[str] = set()
    for field in attrs.fields(type(instance)):
        value = getattr(instance, field.name)
        if field.metadata.get("secret"):
            keys.add(prefix + field.name)
        elif attrs.has(type(value)):
            keys |= secret_keys(value, f"{prefix}{field.name}.")
        elif _holds_secrets(_element_type(type(instance), field.name)):
            keys.add(prefix + field.name)  # a list of tables with secrets (registries): all of it
    return frozenset(keys)


def _element_type(kind: type, name: str) -> Any:
    """The table type of field ``name`` of ``kind`` if it is a ``tuple[Table, ...]``, else None."""
    attrs.resolve_types(kind)
    field_type = attrs.fields_dict(kind)[name].type
    args = get_args(field_type) if get_origin(field_type) is tuple else ()
    return args[0] if args and attrs.has(args[0]) else None


def _holds_secrets(kind: Any) -> bool:
    if kind is None:
        return False
    attrs.resolve_types(kind)
    return any(field.metadata.get("secret") or (isinstance(field.type, type) and attrs.has(field.type)
                                                and _holds_secrets(field.type))
               or any(_holds_secrets(table) for table in field.metadata.get("tables", list)())
               for field in attrs.fields(kind))


def dump_config(config: Config, *, redact: bool = False) -> str:
    """The configuration as TOML that ``load_config`` reads back to the same value; with
    ``redact`` (``swarmreg config show``) every set secret (each field made by ``secret_field``:
    the cluster secret, the token secret, the users' password hashes) reads ``<redacted>``."""
    data = make_converter().unstructure(config)
    if config.cluster.secret_file:
        del data["cluster"]["secret"]  # read from the file again, not written out
    for registry, table in zip(config.registries, data.get("registries", []), strict=True):
        if registry.auth.password_file:
            del table["auth"]["password"]  # read from the file again
    if redact:
        data = _redact(config, data)
    # TOML has no null: an unset optional key is simply left out.
    return tomli_w.dumps(_without_none(data))
