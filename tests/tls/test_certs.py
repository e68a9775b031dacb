"""`swarmreg certs`: a dev CA and node certificates that TLS stacks accept."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from swarmreg.cli import main
from swarmreg.config import ConfigError, load_config
from swarmreg.tls.context import ClusterTls


def test_init_and_issue_write_a_ca_and_node_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    certs = tmp_path / "certs"
    assert main(["certs", "init", "--dir", str(certs)]) == 0
    assert main(["certs", "issue", "node-a", "--dir", str(certs), "--san", "node-a.example", "--san", "10.0.0.7"]) == 0
    assert f'cert = "{certs / "node-a.pem"}"' in capsys.readouterr().out
    for key in ("ca.key", "node-a.key"):
        assert stat.S_IMODE((certs / key).stat().st_mode) == 0o600, "private keys are readable by their owner only"
    cert = x509.load_pem_x509_certificate((certs / "node-a.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["node-a", "localhost", "node-a.example"]
    addresses = {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.0.0.7")}
    assert set(sans.get_values_for_type(x509.IPAddress)) == addresses
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage)
    peer = x509.load_pem_x509_certificate((certs / "node-a-peer.pem").read_bytes())
    assert peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["*"], "libtorrent accepts a peer certificate for any torrent name with SAN *"
    assert stat.S_IMODE((certs / "node-a-peer.key").stat().st_mode) == 0o600
    # Python's ssl (OpenSSL) takes them as they are.
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(certs / "node-a.pem", certs / "node-a.key")


def test_an_existing_ca_or_certificate_is_not_replaced_without_force(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    certs = str(tmp_path)
    assert main(["certs", "issue", "a", "--dir", certs]) == 2
    assert "no CA" in capsys.readouterr().err
    assert main(["certs", "init", "--dir", certs]) == 0
    ca = (tmp_path / "ca.pem").read_bytes()
    assert main(["certs", "init", "--dir", certs]) == 2
    assert (tmp_path / "ca.pem").read_bytes() == ca
    assert main(["certs", "issue", "a", "--dir", certs]) == 0
    assert main(["certs", "issue", "a", "--dir", certs]) == 2
    assert main(["certs", "issue", "a", "--dir", certs, "--force"]) == 0
    assert main(["certs", "issue", "../escape", "--dir", certs]) == 2
    assert not (tmp_path.parent / "escape.pem").exists()


def test_tls_settings_go_together_and_must_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls.key"):
        load_config(None, ['tls.ca="ca.pem"'])
    with pytest.raises(ConfigError, match="tls.peer_key"):
        load_config(None, ['tls.peer_cert="peer.pem"'])
    config = load_config(None, [f'tls.ca="{tmp_path}/ca.pem"', f'tls.cert="{tmp_path}/n.pem"',
                                f'tls.key="{tmp_path}/n.key"'])
    with pytest.raises(ConfigError, match="tls.ca: cannot load"):
        ClusterTls.from_config(config.tls)
    assert not ClusterTls.from_config(load_config(None, []).tls).enabled
