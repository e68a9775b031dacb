"""The libtorrent session settings, built in one place."""

from __future__ import annotations

from typing import Any, cast

import libtorrent as lt

from swarmreg import __version__
from swarmreg.config import SwarmConfig

ALERT_MASK = (
    lt.alert.category_t.status_notification
    | lt.alert.category_t.error_notification
    | lt.alert.category_t.storage_notification
    | lt.alert.category_t.piece_progress_notification
    | lt.alert.category_t.peer_notification
)
# Peers that go, and why: only when the engine logs at debug (an alert per connection, every one
# popped and routed in Python, for a log line nobody reads otherwise).
DEBUG_ALERTS = lt.alert.category_t.connect_notification


def session_settings(config: SwarmConfig, *, ssl: bool = False, debug: bool = False) -> lt.settings_pack:
    """Settings for a session that finds peers only through our tracker.

    DHT, LSD, UPnP, NAT-PMP and libtorrent's own trackers are off; PEX is an
    extension, disabled per torrent (torrent_flags.disable_pex). uTP is off: it
    moved 256 MiB in 31-39 s on loopback where TCP took 1.5 s. With ``ssl`` the
    peer wire listens for SSL torrents only (libtorrent's ``s`` port suffix); with ``debug``
    libtorrent also reports every connection that closes.
    """
    ours: dict[str, Any] = {
        "listen_interfaces": f"{config.listen}{'s' if ssl else ''}",
        # The configured port or a clear failure, never a neighbouring port.
        "max_retry_port_bind": 0,
        # The peer wire's accept backlog (libtorrent: 5): in a swarm of 60, 59 agents dial
        # each agent at once.
        "listen_queue_size": 512,
        "listen_system_port_fallback": False,
        "user_agent": f"swarmreg/{__version__}",
        "peer_fingerprint": lt.generate_fingerprint("SR", 0, 1, 0, 0),
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # No BitTorrent obfuscation (MSE/PE): a Diffie-Hellman handshake per connection
        # for nothing; the cluster's peer wire gets TLS instead (SSL torrents).
        "out_enc_policy": int(lt.enc_policy.disabled),
        "in_enc_policy": int(lt.enc_policy.disabled),
        "enable_outgoing_tcp": True,
        "enable_incoming_tcp": True,
        "alert_mask": int(ALERT_MASK | (DEBUG_ALERTS if debug else 0)),
        "alert_queue_size": 100_000,
        "upload_rate_limit": config.upload_rate_limit,
        "download_rate_limit": config.download_rate_limit,
        "connections_limit": config.connections_limit,
        "unchoke_slots_limit": config.unchoke_slots,
        # Every peer may sit on one host (tests, netsim's loopback mode).
        "allow_multiple_connections_per_ip": True,
        # Our torrents are never queued: a daemon seeds everything it holds.
        "active_downloads": -1,
        "active_seeds": -1,
        "active_limit": -1,
        "active_checking": 4,
        # Peers are handed over by our tracker; connect to them at once.
        "smooth_connects": False,
        "connection_speed": 500,
        # The session acts on handed-over peers at its next tick; 100 ms, not 500.
        "tick_interval": 100,
        "torrent_connect_boost": 100,
        "seeding_outgoing_connections": True,
        # Seeds stay connected to each other, so the per-peer counters sampled
        # each second see every byte before a connection goes idle and closes.
        "close_redundant_connections": False,
        # ... and idle ones close after this long (libtorrent: 600 s). Every blob an agent
        # fetched kept a connection to the origin until connections_limit (500) stalled all
        # new downloads: the registry load test hit it after about 490 blobs.
        "inactivity_timeout": config.idle_peer_timeout,
        "no_connect_privileged_ports": False,
        # libtorrent 2.1 holds up to 100 MiB of received blocks before writing them;
        # bound that, so memory stays flat and a crash loses little of a download.
        "max_queued_disk_bytes": 8 << 20,
        "request_timeout": 10,
        # A peer whose connection failed is tried again after this long (libtorrent: 60 s). Our
        # peers are cluster nodes handed over by the tracker: one that restarts (an origin, an
        # agent) is back within seconds, and a minute without it stalls every download it fed.
        "min_reconnect_time": 2,
        # Re-decide whom to upload to every 2 s (libtorrent: 15 s): a freed
        # upload slot on an origin must not sit idle for long.
        "unchoke_interval": 2,
        "optimistic_unchoke_interval": 2,
        "peer_timeout": 60,
    }
    return cast("lt.settings_pack", ours | config.libtorrent)


def every_peer_global() -> lt.ip_filter:
    """A peer-class filter that puts every address in the global class.

    libtorrent exempts peers on local networks from rate limits by default;
    our configured limits are meant for every peer (netsim and tests run on
    loopback, and a fleet's hosts share a network).
    """
    classes = lt.ip_filter()
    everyone = 1 << lt.session.global_peer_class_id
    classes.add_rule("0.0.0.0", "255.255.255.255", everyone)
    classes.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", everyone)
    return classes
