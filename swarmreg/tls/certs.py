"""Issue the cluster's certificates with ``cryptography``: a CA, node certificates, peer certificates.

Node certificates serve and authenticate HTTP and websocket channels (both server and client
use, SANs for the node's names and addresses). Peer certificates are for libtorrent's SSL
torrents, whose peers check the SAN against the torrent's name or ``*``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeGuard, get_args

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swarmreg.authz import parse_roles, role_uri, roles_from_uris

CA_DAYS = 3650
NODE_DAYS = 365

# libtorrent's SSL torrents want Diffie-Hellman parameters; these are the standard RFC 7919
# ffdhe2048 group (public, and generating fresh ones takes minutes).
FFDHE2048 = """\
-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""


@attrs.frozen
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert: bytes
    key: bytes

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Write both files; the key readable by its owner only, from the moment it exists."""
        cert_path.write_bytes(self.cert)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as key_file:
            key_file.write(self.key)

    @classmethod
    def read(cls, cert_path: Path, key_path: Path) -> KeyPair:
        return cls(cert_path.read_bytes(), key_path.read_bytes())


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swarmreg"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str = "swarmreg cluster CA", *, days: int = CA_DAYS) -> KeyPair:
    """A new self-signed certificate authority."""
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


# Kinds of key that cannot sign (X25519, DH, ...) cannot be a CA's.
def _signing_private(key: PrivateKeyTypes) -> TypeGuard[CertificateIssuerPrivateKeyTypes]:
    return isinstance(key, get_args(CertificateIssuerPrivateKeyTypes))


def _signing_public(key: CertificatePublicKeyTypes) -> TypeGuard[CertificateIssuerPublicKeyTypes]:
    return isinstance(key, get_args(CertificateIssuerPublicKeyTypes))


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(ca: KeyPair, common_name: str, names: list[str], *, days: int = NODE_DAYS,
          roles: Sequence[str] = ()) -> KeyPair:
    """A certificate signed by ``ca`` for ``names`` (DNS names or IP addresses; ``*`` for any),
    good for TLS servers and clients alike, carrying ``roles`` as URI subjectAltNames
    ``swarmreg:role:<role>`` (what it may write on the internal ports; none: it reads only)."""
    if not names:
        raise ValueError("a certificate needs at least one name")
    sans = [_general_name(n) for n in names]
    sans += [x509.UniformResourceIdentifier(role_uri(role)) for role in parse_roles(roles)]
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    ca_public = ca_cert.public_key()
    if not _signing_private(ca_key) or not _signing_public(ca_public):
        raise ValueError("the CA's key cannot sign certificates")
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def cert_roles(cert_pem: bytes) -> frozenset[str]:
    """The roles a PEM certificate carries (its ``swarmreg:role:`` URI subjectAltNames)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return roles_from_uris(sans.get_values_for_type(x509.UniformResourceIdentifier))


def issue_peer(ca: KeyPair, node: str, *, days: int = NODE_DAYS) -> KeyPair:
    """A peer-wire certificate for ``node``: libtorrent accepts a peer whose SAN is ``*``
    (or the torrent's name) and whose chain ends at the torrent's root certificate.
    It carries no role: presented to an internal port, it reads only."""
    return issue(ca, f"{node} peer", ["*"], days=days)


def node_names(name: str) -> list[str]:
    """The SANs of a node certificate: its name, and the loopback names the devcluster uses."""
    return list(dict.fromkeys([name, "localhost", "127.0.0.1", "::1"]))
