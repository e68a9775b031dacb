"""[[registries]]: strict structure, password_file, and secrets kept out of config show and repr."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from swarmreg.config import ConfigError, RegistryConfig, dump_config, load_config
from swarmreg.upstream.client import Upstreams

FULL = """
[[registries]]
name = "registry.example.com:5000"
description = "team mirror"
scheme = "http"
auth = {user = "alice", password = "hunter2-secret"}
tls = {ca = "/ca.pem", cert = "/c.pem", key = "/k.pem", insecure_skip_verify = true}

[[registries]]
name = "docker.io"
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path, data_dir=str(tmp_path / "d"))


def test_full_entry_and_defaults(tmp_path):
    first, hub = load(tmp_path, FULL).registries
    assert (first.name, first.scheme, first.description) == ("registry.example.com:5000", "http", "team mirror")
    assert (first.auth.user, first.auth.password) == ("alice", "hunter2-secret")
    assert (first.tls.ca, first.tls.cert, first.tls.key, first.tls.insecure_skip_verify) == (
        "/ca.pem", "/c.pem", "/k.pem", True)
    assert (hub.scheme, hub.auth.user, hub.tls.insecure_skip_verify) == ("https", "", False)
    assert load(tmp_path, "").registries == ()


@pytest.mark.parametrize(("entry", "message"), [
    ('name = "a b"', "registries[0].name: must be host[:port]"),
    ('name = "host:99999"', "registries[0].name: must be host[:port]"),
    ('name = "https://host"', "registries[0].name: must be host[:port]"),
    ('name = "host/path"', "registries[0].name: must be host[:port]"),
    ('name = "h"\nscheme = "ftp"', "registries[0].scheme: expected one of 'https', 'http'"),
    ('name = "h"\nbogus = 1', "registries[0].bogus: unknown key"),
    ('name = "h"\nauth = {user = "u", token = "x"}', "registries[0].auth.token: unknown key"),
    ('name = "h"\ntls = {insecureSkipVerify = true}', "registries[0].tls.insecureSkipVerify: unknown key"),
    ('name = "h"\ntls = {insecure_skip_verify = "yes"}', "registries[0].tls.insecure_skip_verify"),
    ('name = "h"\nauth = {password = "x"}', "registries[0].auth.user: must be set"),
    ('name = "h"\ntls = {cert = "/c.pem"}', "registries[0].tls.key: must be set together with cert"),
    ('description = "no name"', "registries[0].name: required key missing"),
])
def test_bad_entries_are_refused_with_their_key_path(tmp_path, entry, message):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"[[registries]]\n{entry}\n")
    assert message in str(caught.value)


def test_each_upstream_once(tmp_path):
    with pytest.raises(ConfigError, match="name each upstream once"):
        load(tmp_path, '[[registries]]\nname = "h"\n[[registries]]\nname = "h"\n')


def test_password_file_is_read_at_load(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("  from-a-file\n")
    config = load(tmp_path, f'[[registries]]\nname = "h"\nauth = {{user = "u", password_file = "{secret}"}}\n')
    assert config.registries[0].auth.password == "from-a-file"
    # Written back without the password: it is read from the file again.
    dumped = tomllib.loads(dump_config(config))
    assert "password" not in dumped["registries"][0]["auth"]
    assert load(tmp_path, dump_config(config)).registries[0].auth.password == "from-a-file"


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", "cannot read"), ("empty", "is empty"), ("both", "set one of them, not both")])
def test_bad_password_file(tmp_path, setup, message):
    secret = tmp_path / "pw"
    if setup != "missing":
        secret.write_text("" if setup == "empty" else "x")
    extra = ', password = "p"' if setup == "both" else ""
    with pytest.raises(ConfigError, match=message) as caught:
        load(tmp_path, f'[[registries]]\nname = "h"\nauth = {{user = "u", password_file = "{secret}"{extra}}}\n')
    assert "registries[0].auth.password" in str(caught.value)


def test_passwords_are_redacted_in_repr_and_config_show(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("file-secret-value")
    path = tmp_path / "c.toml"
    path.write_text(FULL + f'\n[[registries]]\nname = "other.io"\nauth = {{user = "b", password_file = "{secret}"}}\n')
    config = load_config(path, data_dir=str(tmp_path / "d"))
    assert "hunter2-secret" not in repr(config) and "file-secret-value" not in repr(config)
    assert "<redacted>" in repr(config.registries[0])
    result = subprocess.run([sys.executable, "-m", "swarmreg", "config", "show", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "hunter2-secret" not in result.stdout and "file-secret-value" not in result.stdout
    shown = tomllib.loads(result.stdout)["registries"]
    assert shown[0]["auth"] == {"user": "alice", "password": "<redacted>", "password_file": ""}
    assert shown[2]["auth"]["password_file"] == str(secret)


async def test_names_without_an_entry_get_anonymous_https(tmp_path):
    config = load(tmp_path, FULL)
    async with Upstreams(config.registries) as upstreams:
        assert upstreams.config("quay.io") == RegistryConfig(name="quay.io")
        assert upstreams.get("quay.io").base_url == "https://quay.io"
        assert upstreams.get("registry.example.com:5000").base_url == "http://registry.example.com:5000"
        # Docker Hub's aliases share docker.io's entry and client, reached at registry-1.
        assert upstreams.get("index.docker.io") is upstreams.get("docker.io")
        assert upstreams.get("docker.io").base_url == "https://registry-1.docker.io"


def test_registries_set_on_a_command_line_count_as_secret():
    from swarmreg.devcluster import split_secrets

    item = 'registries=[{name = "h", auth = {user = "u", password = "p"}}]'
    assert split_secrets([item, "log.level=debug"]) == (["log.level=debug"], [item])
