"""``swarmreg blob push`` into origins that check writers: the cluster secret (from a file or the
environment), and mutual TLS with a role certificate; ``swarmreg status`` of a TLS cluster."""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio

from swarmreg.devcluster import tls_overrides
from tests.cli.helpers import NS, one_line_error, start_herd, swarmreg
from tests.conftest import blob_files, make_config, random_bytes, start_daemon
from tests.tls.conftest import certs  # noqa: F401  (the fixture)


def blob_file(tmp_path: Path, seed: int) -> tuple[Path, str]:
    data = random_bytes(3 << 20, seed=seed)
    path = tmp_path / f"blob{seed}.bin"
    path.write_bytes(data)
    return path, "sha256:" + hashlib.sha256(data).hexdigest()


async def test_an_origin_with_a_cluster_secret(nursery: trio.Nursery, tmp_path: Path) -> None:
    herd = await start_herd(nursery, tmp_path, "cluster.secret=s3cret-value")
    origin = herd.url("origin")
    path, digest = blob_file(tmp_path, 1)
    push = ("blob", "push", str(path), "--origin", origin, "--namespace", NS)
    refused = one_line_error(await swarmreg(tmp_path, *push), 1)
    assert "refused the credentials (UNAUTHORIZED)" in refused and "--secret-file" in refused
    assert "s3cret" not in refused
    wrong = await swarmreg(tmp_path, *push, SWARMREG_CLUSTER_SECRET="not-it")
    assert "refused the credentials" in one_line_error(wrong, 1)
    done = await swarmreg(tmp_path, *push, SWARMREG_CLUSTER_SECRET="s3cret-value")
    assert done.returncode == 0 and done.stdout.decode() == digest + "\n", done.stderr.decode()

    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret-value\n")
    path, digest = blob_file(tmp_path, 2)
    done = await swarmreg(tmp_path, "blob", "push", str(path), "--origin", origin, "--secret-file", str(secret_file))
    assert done.returncode == 0, done.stderr.decode()
    assert digest[7:] in blob_files(Path(herd.config.data_dir))
    assert "--secret-file" in one_line_error(await swarmreg(tmp_path, "blob", "push", str(path), "--origin", origin,
                                                            "--secret-file", str(tmp_path / "none")), 2)


async def test_an_origin_on_mutual_tls(nursery: trio.Nursery, tmp_path: Path, certs: Path) -> None:  # noqa: F811
    herd = await start_daemon(nursery, make_config(tmp_path / "herd", *tls_overrides(certs, "herd"),
                                                   'proxy.access=[{user="anonymous", repositories=".*", '
                                                   'actions=["pull", "admin"]}]'),
                              ["origin", "tracker", "index", "proxy"])
    origin = "https://" + herd.ready["roles"]["origin"]["http"]
    path, digest = blob_file(tmp_path, 3)
    ca = ("--ca", str(certs / "ca.pem"))
    push = ("blob", "push", str(path), "--origin", origin, "--namespace", NS)

    assert "CERTIFICATE_VERIFY_FAILED" in one_line_error(await swarmreg(tmp_path, *push), 1)
    no_cert = one_line_error(await swarmreg(tmp_path, *push, *ca), 1)
    assert "cannot reach the origin" in no_cert and no_cert.endswith("a cluster certificate (--cert, --key)")
    reader = await swarmreg(tmp_path, *push, *ca, "--cert", str(certs / "agent.pem"), "--key", str(certs / "agent.key"))
    assert "refused the credentials (DENIED)" in one_line_error(reader, 1)
    done = await swarmreg(tmp_path, *push, *ca, "--cert", str(certs / "herd.pem"), "--key", str(certs / "herd.key"))
    assert done.returncode == 0 and done.stdout.decode() == digest + "\n", done.stderr.decode()
    assert "cannot load the TLS files" in one_line_error(await swarmreg(tmp_path, *push, "--ca", str(path)), 2)

    # The proxy probes its rings of one member over TLS too (the tracker with a websocket handshake).
    status = await swarmreg(tmp_path, "status", "--proxy", herd.url("proxy"))
    assert status.returncode == 0, status.stdout.decode() + status.stderr.decode()
    assert status.stdout.decode().count(" up ") == 4
