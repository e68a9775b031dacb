"""Configuration loading: defaults, TOML files, --set overrides, and errors that name the key path."""

import os
import subprocess
import sys
import tomllib

import pytest

from swarmreg.backends.filesystem import FilesystemOptions
from swarmreg.config import (
    Address,
    BackendConfig,
    ConfigError,
    GiB,
    MiB,
    dump_config,
    load_config,
)


def config_error(*overrides, path=None) -> str:
    """The message of the ConfigError that loading with these overrides raises."""
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def error_line(message: str, key_path: str) -> str:
    """The one line of a ConfigError message that reports ``key_path`` (it must be there)."""
    lines = [line.strip() for line in message.splitlines() if line.strip().startswith(f"{key_path}:")]
    assert lines, f"no line for {key_path!r} in:\n{message}"
    return lines[0]


def write_toml(tmp_path, text: str):
    path = tmp_path / "swarmreg.toml"
    path.write_text(text)
    return path


# --- defaults and files ---------------------------------------------------------------------------

def test_defaults_load_without_a_file():
    config = load_config()
    assert config.origin.listen == Address("127.0.0.1", 15002)
    assert config.store.chunk_size == 4 * MiB
    assert config.store.fsync is True
    assert config.log.level == "info"
    assert config.origin.max_upload_size == 64 * GiB
    assert config.backends == (BackendConfig(),)
    assert config.backends[0].options == FilesystemOptions()
    assert os.path.isabs(config.data_dir)
    # Memory bounds (issue 11: the registry load test's herd grew while 64 MiB of inline blobs filled).
    assert config.tracker.inline_cache == 16 * MiB
    assert config.swarm.idle_torrent_timeout == 120.0


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write_toml(tmp_path, "")) == load_config()


def test_toml_file_values_are_used(tmp_path):
    path = write_toml(tmp_path, f"""
data_dir = "{tmp_path / 'data'}"
shutdown_timeout = 3

[log]
level = "debug"
format = "json"

[store]
fsync = false
chunk_size = "8MiB"

[origin]
listen = "0.0.0.0:8080"
upload_ttl = 60

[[backends]]
namespace = "library/.*"
options = {{ root = "lib" }}

[[backends]]
""")
    config = load_config(path)
    assert config.data_dir == str(tmp_path / "data")
    assert config.shutdown_timeout == 3.0
    assert (config.log.level, config.log.format) == ("debug", "json")
    assert config.store.fsync is False
    assert config.store.chunk_size == 8 * MiB
    assert config.origin.listen == Address("0.0.0.0", 8080)
    assert config.origin.upload_ttl == 60.0
    assert config.backends == (
        BackendConfig(namespace="library/.*", options=FilesystemOptions(root="lib")),
        BackendConfig(),
    )


def test_flags_and_overrides_win_over_the_file(tmp_path):
    path = write_toml(tmp_path, '[log]\nlevel = "debug"\n[store]\nfsync = true\n')
    config = load_config(path, ["store.fsync=false"], data_dir=str(tmp_path / "flag"))
    assert config.log.level == "debug"
    assert config.store.fsync is False
    assert config.data_dir == str(tmp_path / "flag")


def test_invalid_toml_file_is_a_config_error(tmp_path):
    path = write_toml(tmp_path, "[store\nfsync = ")
    message = config_error(path=path)
    assert str(path) in message and "TOML" in message


def test_missing_file_is_a_config_error(tmp_path):
    path = tmp_path / "nowhere.toml"
    message = config_error(path=path)
    assert str(path) in message


def test_relative_data_dir_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(data_dir="rel/data").data_dir == str(tmp_path / "rel" / "data")
    assert load_config(None, ["data_dir=other"]).data_dir == str(tmp_path / "other")


def test_layout_settings_resolve_against_data_dir(tmp_path):
    config = load_config(data_dir=str(tmp_path))
    assert config.layout.setting("index.db") == tmp_path / "index.db"
    assert config.layout.setting("/abs/elsewhere").as_posix() == "/abs/elsewhere"


# --- --set overrides ------------------------------------------------------------------------------

def test_set_parses_toml_literals():
    config = load_config(None, [
        "shutdown_timeout=7",            # int, accepted for a float
        "store.fsync=false",             # bool
        'store.chunk_size="2MiB"',       # quoted string
        "origin.max_upload_size=1048576",
        'log.level="warning"',
    ])
    assert config.shutdown_timeout == 7.0
    assert config.store.fsync is False
    assert config.store.chunk_size == 2 * MiB
    assert config.origin.max_upload_size == MiB
    assert config.log.level == "warning"


def test_set_falls_back_to_a_plain_string():
    config = load_config(None, ["origin.listen=127.0.0.1:0", "log.level=error", "store.chunk_size=16MiB"])
    assert config.origin.listen == Address("127.0.0.1", 0)
    assert config.log.level == "error"
    assert config.store.chunk_size == 16 * MiB


def test_set_value_may_contain_equals_signs():
    config = load_config(None, ['backends=[{namespace="a=b"}]'])
    assert config.backends[0].namespace == "a=b"


@pytest.mark.parametrize("item", ["noequals", "=1", "origin..listen=1", ".x=1"])
def test_malformed_set_is_a_config_error(item):
    assert repr(item) in config_error(item)


def test_set_through_a_non_table_is_a_config_error():
    message = config_error("log.level=debug", "log.level.deeper=1")
    assert "log.level is not a table" in message


# --- errors name the key path ----------------------------------------------------------------------

def test_unknown_top_level_key():
    assert "unknown key" in error_line(config_error("bogus=1"), "bogus")


def test_unknown_nested_key_names_its_table_and_the_key():
    assert "unknown key" in error_line(config_error("origin.lissten=127.0.0.1:1"), "origin.lissten")


def test_unknown_keys_in_a_file(tmp_path):
    message = config_error(path=write_toml(tmp_path, "[store]\nfsink = true\n[log]\nlevl = 'x'\n"))
    assert "unknown key" in error_line(message, "store.fsink")
    assert "unknown key" in error_line(message, "log.levl")


@pytest.mark.parametrize("override, key_path", [
    ('store.fsync="yes"', "store.fsync"),          # bool given a string
    ("store.fsync=1", "store.fsync"),              # bool given an int
    ("origin.upload_ttl=true", "origin.upload_ttl"),  # float given a bool
    ("shutdown_timeout=true", "shutdown_timeout"),
    ("store.chunk_size=true", "store.chunk_size"),  # size given a bool
    ("data_dir=5", "data_dir"),                     # str given an int
    ("http.idle_timeout=\"soon\"", "http.idle_timeout"),
])
def test_wrong_types_name_the_key_path(override, key_path):
    assert "expected" in error_line(config_error(override), key_path)


def test_int_is_not_accepted_as_bool_nor_bool_as_int():
    """No coercion: `true` is not a port number, `1` is not a bool."""
    error_line(config_error("origin.listen=true"), "origin.listen")
    assert "bool" in error_line(config_error("store.fsync=1"), "store.fsync")


def test_bad_literal_lists_the_choices():
    line = error_line(config_error('log.level="loud"'), "log.level")
    for choice in ("debug", "info", "warning", "error"):
        assert repr(choice) in line


def test_chunk_size_below_one_mib_is_refused():
    line = error_line(config_error("store.chunk_size=1000"), "store.chunk_size")
    assert str(MiB) in line


@pytest.mark.parametrize("ttl", ["0", "-1", "-0.5"])
def test_upload_ttl_must_be_positive(ttl):
    assert "must be > 0" in error_line(config_error(f"origin.upload_ttl={ttl}"), "origin.upload_ttl")


def test_negative_shutdown_timeout_is_refused():
    assert "shutdown_timeout" in config_error("shutdown_timeout=-1")


@pytest.mark.parametrize("address", ["nope", "127.0.0.1", "127.0.0.1:", ":80", "host:http", "127.0.0.1:99999"])
def test_bad_address_is_refused(address):
    error_line(config_error(f"origin.listen={address}"), "origin.listen")


def test_ipv6_address_parses_and_prints_with_brackets():
    config = load_config(None, ["origin.listen=[::1]:8080"])
    assert config.origin.listen == Address("::1", 8080)
    assert str(config.origin.listen) == "[::1]:8080"


def test_unknown_backend_type(tmp_path):
    message = config_error(path=write_toml(tmp_path, '[[backends]]\ntype = "s3"\n'))
    line = error_line(message, "backends[0]")
    assert "'s3'" in line and "filesystem" in line


def test_unknown_key_in_backend_options(tmp_path):
    path = write_toml(tmp_path, '[[backends]]\n[[backends]]\noptions = { roots = "x" }\n')
    assert "unknown key" in error_line(config_error(path=path), "backends[1].options.roots")


def test_wrong_type_in_backend_options(tmp_path):
    path = write_toml(tmp_path, "[[backends]]\noptions = { root = 5 }\n")
    error_line(config_error(path=path), "backends[0].options.root")


def test_unknown_key_in_a_backend_entry(tmp_path):
    path = write_toml(tmp_path, '[[backends]]\nnamspace = "x"\n')
    assert "unknown key" in error_line(config_error(path=path), "backends[0].namspace")


def test_bad_regex_in_backend_namespace(tmp_path):
    path = write_toml(tmp_path, '[[backends]]\nnamespace = "lib(rary"\n')
    assert "regular expression" in error_line(config_error(path=path), "backends[0].namespace")


def test_bad_regex_in_an_access_rule_names_its_key_path(tmp_path):
    path = write_toml(tmp_path, '[[proxy.access]]\nuser = "alice"\nrepositories = "team/("\n')
    assert "regular expression" in error_line(config_error(path=path), "proxy.access[0].repositories")


def test_every_wrong_key_is_reported_at_once():
    message = config_error('log.level="loud"', 'store.fsync="no"', "origin.listen=nope")
    for key_path in ("log.level", "store.fsync", "origin.listen"):
        error_line(message, key_path)


# --- sizes -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ('"256MiB"', 256 * MiB),
    ('"1GB"', 10**9),
    ('"1GiB"', GiB),
    ('"64kib"', 64 << 10),
    ('"5000000"', 5_000_000),
    ('"2000000B"', 2_000_000),
    ('" 3 MiB "', 3 * MiB),
    ("1048576", MiB),
])
def test_sizes_parse(value, expected):
    assert load_config(None, [f"origin.max_upload_size={value}"]).origin.max_upload_size == expected


@pytest.mark.parametrize("value", ['"lots"', '"1.5GiB"', '"-1MiB"', '"1PiB"', "-1", "1.5", '""'])
def test_bad_sizes_are_refused(value):
    assert "size" in error_line(config_error(f"origin.max_upload_size={value}"), "origin.max_upload_size")


# --- round trip and the CLI -----------------------------------------------------------------------

def test_dump_then_load_gives_an_equal_config(tmp_path):
    original = load_config(None, [
        "origin.listen=[::1]:0", "store.chunk_size=8MiB", "store.fsync=false", 'log.format="json"',
        'backends=[{namespace="a/.*", options={root="/srv/a"}}, {}]',
    ], data_dir=str(tmp_path / "data"))
    path = tmp_path / "dumped.toml"
    path.write_text(dump_config(original))
    assert load_config(path) == original


def test_dump_then_load_of_the_defaults_gives_an_equal_config(tmp_path):
    path = tmp_path / "defaults.toml"
    path.write_text(dump_config(load_config()))
    assert load_config(path) == load_config()


def test_dump_is_valid_toml_with_every_section():
    data = tomllib.loads(dump_config(load_config()))
    assert {"data_dir", "log", "store", "http", "backends", "origin"} <= data.keys()
    assert data["origin"]["listen"] == "127.0.0.1:15002"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swarmreg", *args], capture_output=True, text=True, timeout=60)


def test_cli_config_show_prints_the_effective_config():
    result = run_cli("config", "show", "--set", "origin.listen=127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["origin"]["listen"] == "127.0.0.1:9"


def test_cli_config_show_refuses_unknown_keys_with_status_2():
    result = run_cli("config", "show", "--set", "origin.bogus=1")
    assert result.returncode == 2
    assert "unknown key" in error_line(result.stderr, "origin.bogus")
    assert result.stdout == ""


@pytest.mark.parametrize("interval", ["0.5", "86401", "nan", "inf"])
def test_the_announce_interval_keeps_the_bounds_peers_accept(interval: str) -> None:
    """A tracker must not send intervals its peers refuse (swarmreg.tracker.wire's bounds)."""
    error_line(config_error(f"tracker.announce_interval={interval}"), "tracker.announce_interval")


def test_the_config_bounds_of_the_announce_interval_are_the_wire_bounds() -> None:
    from swarmreg.tracker.wire import MAX_INTERVAL, MIN_INTERVAL
    assert load_config(None, [f"tracker.announce_interval={MIN_INTERVAL}"]).tracker.announce_interval == MIN_INTERVAL
    assert load_config(None, [f"tracker.announce_interval={MAX_INTERVAL}"]).tracker.announce_interval == MAX_INTERVAL


def test_libtorrent_settings_by_name_reach_the_session_and_bad_ones_are_refused():
    from swarmreg.swarm.settings import session_settings

    config = load_config(overrides=["swarm.libtorrent.aio_threads=2",
                                    "swarm.libtorrent.close_redundant_connections=true"])
    settings = session_settings(config.swarm)
    assert settings["aio_threads"] == 2 and settings["close_redundant_connections"] is True
    assert "aio_threads" not in session_settings(load_config().swarm)  # libtorrent keeps its own default
    for bad, says in (("swarm.libtorrent.aio_thread=2", "not a libtorrent setting"),
                      ("swarm.libtorrent.aio_threads=true", "takes a int"),
                      ("swarm.libtorrent.user_agent=3", "takes a str")):
        with pytest.raises(ConfigError, match=says):
            load_config(overrides=[bad])


def test_a_postgresql_database_url_keeps_its_password_out_of_repr_and_config_show():
    url = "postgresql://swarmreg:hunter2-pw@db.example:5432/index?sslmode=require"
    config = load_config(None, [f"index.database={url}"])
    assert config.index.database == url
    for text in (repr(config), repr(config.index), dump_config(config, redact=True)):
        assert "hunter2-pw" not in text and "db.example:5432/index" in text
    assert load_config(None, ["index.database=postgres://u@h/d?password=hunter2-pw"]).index.database.endswith(
        "hunter2-pw")  # kept as given; only shown redacted
    assert "hunter2-pw" not in dump_config(load_config(None, ["index.database=postgres://u@h/d?password=hunter2-pw"]),
                                           redact=True)
    assert tomllib.loads(dump_config(config))["index"]["database"] == url, "written out whole"


def test_a_postgresql_url_libpq_cannot_read_is_refused_without_echoing_it():
    line = error_line(config_error("index.database=postgresql://u:hunter2-pw@h/d?bogus_option=1"), "index")
    assert "libpq" in line and "hunter2-pw" not in line


def test_the_tracker_store_is_memory_or_a_redis_url():
    assert load_config(None, []).tracker.store == ""
    assert load_config(None, ["tracker.store=redis://10.0.0.5:6379/2"]).tracker.store == "redis://10.0.0.5:6379/2"
    assert load_config(None, ["tracker.store=memory"]).tracker.store == "memory"
    assert 'tracker.store is "memory" or a redis://' in config_error("tracker.store=postgresql://db/x")


# --- [[index.replicate]] -------------------------------------------------------------------------

def test_replication_rules_load_with_their_defaults_and_keep_their_secrets_out_of_sight(tmp_path):
    path = write_toml(tmp_path, """
[[index.replicate]]
repository = "team/.*"
remote = "https://registry.b.example:5000/"
username = "replicator"
password = "hunter2-pw"

[[index.replicate]]
repository = "infra/.*"
remote = "http://10.1.0.5:15000"
token = "a-bearer-token-xyz"
max_backoff = "10m"
""")
    first, second = load_config(path).index.replicate
    assert (first.remote, first.username, first.timeout, first.max_backoff) == (
        "https://registry.b.example:5000", "replicator", 60.0, 300.0)
    assert (second.token, second.max_backoff, second.cluster_tls) == ("a-bearer-token-xyz", 600.0, False)
    config = load_config(path)
    for text in (repr(config), dump_config(config, redact=True)):
        assert "hunter2-pw" not in text and "a-bearer-token-xyz" not in text and "registry.b.example" in text
    assert load_config(write_toml(tmp_path, dump_config(config))) == config


@pytest.mark.parametrize(("rule", "key_path", "says"), [
    ('{repository = "team/(", remote = "http://b:1"}', "index.replicate[0].repository", "regular expression"),
    ('{repository = "a", remote = "ftp://b:1"}', "index.replicate[0].remote", "http://host:port"),
    ('{repository = "a", remote = "b:15000"}', "index.replicate[0].remote", "http://host:port"),
    ('{repository = "a", remote = "http://b:99999"}', "index.replicate[0].remote", "http://host:port"),
    ('{repository = "a", remote = "http://u:pw@b:1"}', "index.replicate[0].remote", "no credentials"),
    ('{repository = "a", remote = "http://u:pw@b:99999"}', "index.replicate[0].remote", "no credentials"),
    ('{repository = "a", remote = "http://b:1/v2/x"}', "index.replicate[0].remote", "no path"),
    ('{repository = "a", remote = "http://b:1", password = "p"}', "index.replicate[0].username", "with password"),
    ('{repository = "a", remote = "http://b:1", token = "t", username = "u"}', "index.replicate[0].token", "alone"),
    ('{repository = "a", remote = "http://b:1", cluster_tls = true}', "index.replicate[0].cluster_tls", "https://"),
    ('{repository = "a", remote = "https://b:1", cluster_tls = true}', "index", "[tls]"),
    ('{repository = "a", remote = "https://b:1", max_backoff = 0}', "index.replicate[0].max_backoff", ""),
    ('{repository = "a", remote = "http://b:1"}, {repository = "b", remote = "http://B:1/"}', "index.replicate",
     "each remote once"),
    ('{remote = "http://b:1"}', "index.replicate[0].repository", "required"),
])
def test_a_bad_replication_rule_names_its_key_and_what_is_wrong(rule, key_path, says):
    line = error_line(config_error(f"index.replicate=[{rule}]"), key_path)
    assert says in line and "u:pw@" not in line, line  # a URL with credentials is not echoed
