"""Who may write on the internal ports: cluster identities and their roles.

With ``[tls]`` every caller of an internal port presents a node certificate from the cluster CA;
its roles are URI subjectAltNames ``swarmreg:role:<role>`` (``swarmreg certs issue NAME --roles
proxy,origin``). A certificate without such names (an agent's issued without ``--roles``, a
peer-wire certificate) reads only. Without ``[tls]``, a write needs the cluster secret
(``[cluster] secret``) as ``Authorization: Bearer <secret>``; the secret does not tell roles
apart, so whoever holds it may write everywhere. With neither, nothing is checked: the daemon
starts so only on loopback, or with ``cluster.insecure = true`` (see ``exposure_error``).

Free of any web framework: the HTTP apps and the tracker's websocket both use it.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from swarmreg.config import Address, Config
from swarmreg.errors import DENIED, UNAUTHORIZED, SwarmregError

# The roles a node certificate can carry (the daemon's roles).
CERT_ROLES = ("agent", "origin", "tracker", "proxy", "index")
# A role is a URI subjectAltName with this prefix: ``swarmreg:role:proxy``.
ROLE_URI_PREFIX = "swarmreg:role:"

# Which roles each kind of write is for.
INDEX_WRITERS = frozenset({"proxy", "index"})
ORIGIN_WRITERS = frozenset({"proxy", "origin"})
TRACKER_ORIGINS = frozenset({"origin"})
# The garbage collector runs in the origin role; it marks at the index (swarmreg.index.gc).
GC_MARKERS = frozenset({"origin"})
# Preheat: who may list the agents the tracker knows, and ask an agent to prefetch a blob.
AGENT_DIRECTORY = frozenset({"proxy"})
PREFETCHERS = frozenset({"proxy"})

# The scheme of the cluster secret in the Authorization header.
BEARER = "Bearer"
REALM = 'Bearer realm="swarmreg-cluster"'


def parse_roles(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"proxy,origin"`` -> ``("proxy", "origin")``; an unknown role is a ValueError."""
    items = text.split(",") if isinstance(text, str) else text
    roles = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    for role in roles:
        if role not in CERT_ROLES:
            raise ValueError(f"unknown role {role!r}: the roles are {', '.join(CERT_ROLES)}")
    return roles


def role_uri(role: str) -> str:
    """The subjectAltName URI that gives a certificate ``role``."""
    return ROLE_URI_PREFIX + role


def roles_from_uris(uris: Iterable[str]) -> frozenset[str]:
    """The known roles among a certificate's URI subjectAltNames."""
    return frozenset(uri[len(ROLE_URI_PREFIX):] for uri in uris
                     if uri.startswith(ROLE_URI_PREFIX) and uri[len(ROLE_URI_PREFIX):] in CERT_ROLES)


@attrs.frozen
class Identity:
    """Who is calling: a certificate's common name and roles, or a holder of the cluster secret."""

    name: str
    roles: frozenset[str]

    @classmethod
    def from_peercert(cls, peercert: Mapping[str, Any]) -> Identity:
        """From ``ssl.SSLSocket.getpeercert()``'s dictionary (a verified certificate)."""
        names = [value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"]
        uris = [value for kind, value in peercert.get("subjectAltName", ()) if kind == "URI"]
        return cls(names[0] if names else "?", roles_from_uris(uris))


def bearer_headers(secret: str) -> dict[str, str]:
    """The header our clients send with every request when ``[cluster] secret`` is set."""
    return {"Authorization": f"{BEARER} {secret}"} if secret else {}


def _presents(authorization: str | None, secret: str) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    # compare_digest: how far a wrong secret matches must not show in the answer's timing.
    return scheme.lower() == BEARER.lower() and hmac.compare_digest(token.strip().encode(), secret.encode())


@attrs.frozen
class ClusterGuard:
    """Decides whether a caller of an internal port may make a write (see the module's docstring)."""

    tls: bool = False
    secret: str = attrs.field(default="", repr=False)

    @classmethod
    def from_config(cls, config: Config) -> ClusterGuard:
        return cls(config.tls.enabled, config.cluster.secret)

    @property
    def open(self) -> bool:
        """Whether writes go unchecked (neither TLS nor a secret)."""
        return not self.tls and not self.secret

    def check(self, needed: frozenset[str], what: str, *, peercert: Mapping[str, Any] | None,
              authorization: str | None) -> None:
        """Return if the caller may ``what`` (a write for the ``needed`` roles); else raise
        UNAUTHORIZED (no or a wrong secret, no certificate) or DENIED (a certificate without the role)."""
        if self.tls:
            if not peercert:
                raise SwarmregError(UNAUTHORIZED, f"{what} needs a cluster certificate")
            identity = Identity.from_peercert(peercert)
            if not identity.roles & needed:
                raise SwarmregError(
                    DENIED, f"{what} is for the {' or '.join(sorted(needed))} role; certificate "
                    f"{identity.name!r} has {', '.join(sorted(identity.roles)) or 'no role'}",
                    {"certificate": identity.name, "roles": sorted(identity.roles), "needs": sorted(needed)})
            return
        if self.secret and not _presents(authorization, self.secret):
            raise SwarmregError(UNAUTHORIZED, f"{what} needs the cluster secret ([cluster] secret) as a bearer token",
                                headers={"WWW-Authenticate": REALM})

    def check_plain(self, needed: frozenset[str], what: str, *, peercert: Mapping[str, Any] | None,
                    authorization: str | None) -> None:
        """``check`` for a port that serves plain HTTP even with ``[tls]`` (an agent's blob API):
        a verified certificate decides when there is one; otherwise the cluster secret does, and
        with ``[tls]`` but no secret nobody can be told apart, so the write is refused."""
        if peercert:
            self.check(needed, what, peercert=peercert, authorization=authorization)
        elif self.secret:
            ClusterGuard(False, self.secret).check(needed, what, peercert=None, authorization=authorization)
        elif self.tls:
            raise SwarmregError(UNAUTHORIZED, f"{what} needs the cluster secret ([cluster] secret): this port "
                                "has no TLS to verify a certificate", headers={"WWW-Authenticate": REALM})


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


# The internal ports each role opens (the proxy's and the agents' registry ports are edges).
INTERNAL_PORTS = {
    "origin": ("origin.listen", "swarm.listen"),
    "index": ("index.listen",),
    "tracker": ("tracker.listen",),
    "agent": ("agent.listen", "swarm.listen"),
    "proxy": (),
}


def _setting(config: Config, key: str) -> Address:
    section, name = key.split(".")
    address: Address = getattr(getattr(config, section), name)
    return address


def exposure_error(config: Config, roles: Sequence[str]) -> str | None:
    """Why a daemon of ``roles`` must not start: an internal port listens beyond loopback with
    neither ``[tls]`` nor a cluster secret, and ``cluster.insecure`` does not say it is meant; None if fine."""
    if config.tls.enabled or config.cluster.secret or config.cluster.insecure:
        return None
    keys = dict.fromkeys(key for role in roles for key in INTERNAL_PORTS.get(role, ()))
    exposed = [f"{key} = {_setting(config, key)}" for key in keys if not _loopback(_setting(config, key).host)]
    if not exposed:
        return None
    return (f"internal ports listen beyond loopback ({'; '.join(exposed)}) with neither [tls] nor a "
            "cluster secret, so anyone who reaches them could upload blobs and write tags and manifests: "
            "set [cluster] secret (cluster.secret, the same on every node), or configure [tls] with role certificates "
            "(swarmreg certs issue NAME --roles ...), or set cluster.insecure = true to run so on purpose")
