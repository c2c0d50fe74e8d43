"""config.toml: defaults, errors that name the key path, atomic comment-keeping writes."""

from __future__ import annotations

import os
import stat
import tomllib

import pytest

from fangwire.config import Config, ConfigError, make_converter, parse_config_text
from fangwire.configfile import ConfigFile, default_config_text
from fangwire.home import resolve_home
from fangwire.runtime import Runtime


def parse(text: str) -> Config:
    return parse_config_text(text, make_converter(), "config.toml")


def test_empty_file_gives_defaults():
    config = parse("")
    assert config == Config()
    assert config.api_listen == "127.0.0.1:4545"
    assert config.http.max_request_body_bytes == 8 * 1024 * 1024
    assert config.rate_limit.api_requests_per_minute == 500


def test_default_template_is_valid_and_equals_the_defaults():
    text = default_config_text()
    assert parse(text) == Config()
    assert text.count("#") > 10  # commented for operators


def test_librefang_top_level_keys_carry_over():
    config = parse(
        'api_key = "k"\napi_listen = "127.0.0.1:4200"\n[channels.telegram]\ntoken_env = "TG"\n'
    )
    assert config.api_listen == "127.0.0.1:4200"
    assert config.channels["telegram"]["token_env"] == "TG"


def test_the_a2a_table_is_kept_raw_for_its_plugin():
    config = parse('[a2a]\nname = "edge"\nallow_hosts = ["127.0.0.1"]\n')
    assert config.a2a == {"name": "edge", "allow_hosts": ["127.0.0.1"]}
    assert parse("").a2a == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1", "config.toml: bogus: unknown key"),
        ("[http]\nmax_json_depth = 'deep'", "http.max_json_depth: expected an integer, got 'deep'"),
        ("[http]\nmax_json_depth = 0", "http.max_json_depth: must be a positive number"),
        ("[http]\ncors_origins = [1]", "http.cors_origins[0]: expected a string, got 1"),
        ("[http]\nnope = true", "http.nope: unknown key"),
        ("http = 3", "http: expected a table, got 3"),
        ("[logging]\nlevel = 'loud'", "logging.level: expected one of"),
        (
            "[rate_limit]\napply_to_loopback = 'yes'",
            "rate_limit.apply_to_loopback: expected true or false",
        ),
        ("api_listen = 'localhost'", "api_listen: expected 'host:port'"),
        ("api_listen = '127.0.0.1:99999'", "api_listen: port must be between 1 and 65535"),
        ("api_key = 5", "api_key: expected a string, got 5"),
        ("[secrets]\nbackend = 'vault'", "secrets.backend: expected one of"),
        ("x = ", "config.toml: not valid TOML"),
        ("api_key_hash = '$argon2id$v=19$abc'", "api_key_hash: must look like '$sha256$"),
        ("api_key_hash = '$sha256$abc'", "api_key_hash: must look like"),
    ],
)
def test_errors_name_the_key_path_and_problem(text, message):
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert message in str(info.value)


def test_several_problems_are_all_reported():
    with pytest.raises(ConfigError) as info:
        parse("a = 1\nb = 2\n")
    assert "a: unknown key" in str(info.value)
    assert "b: unknown key" in str(info.value)


def test_api_key_is_not_in_repr():
    assert "super-secret-key" not in repr(parse('api_key = "super-secret-key"'))


def test_home_from_environment(tmp_path):
    assert resolve_home({"FANGWIRE_HOME": str(tmp_path)}) == tmp_path
    assert resolve_home({}).name == ".fangwire"


@pytest.fixture
def config_file(tmp_path) -> ConfigFile:
    file = ConfigFile(tmp_path / "config.toml", make_converter())
    assert file.ensure_exists()
    return file


def test_ensure_exists_writes_commented_defaults_once(config_file):
    mode = stat.S_IMODE(os.stat(config_file.path).st_mode)
    assert mode == 0o600
    config_file.path.write_text("# mine\n")
    assert not config_file.ensure_exists()
    assert config_file.path.read_text() == "# mine\n"


def test_edit_keeps_comments_and_layout(config_file):
    before = config_file.path.read_text()
    config = config_file.set_value(["rate_limit", "api_requests_per_minute"], 120)
    after = config_file.path.read_text()
    assert config.rate_limit.api_requests_per_minute == 120
    assert "api_requests_per_minute = 120       # GCRA cost units per client per minute" in after
    # Everything else is byte-for-byte unchanged.
    assert before.replace("per_minute = 500 ", "per_minute = 120 ") == after


def test_edit_creates_tables(config_file):
    config = config_file.set_value(["channels", "irc", "server"], "irc.example")
    assert config.channels["irc"]["server"] == "irc.example"
    assert tomllib.loads(config_file.path.read_text())["channels"]["irc"]["server"] == "irc.example"


def test_mcp_table_is_kept_raw_for_its_plugin(config_file):
    table = {"transport": "stdio", "command": "npx", "args": ["-y", "server"]}
    config = config_file.set_value(["mcp", "servers", "everything"], table)
    assert config.mcp["servers"]["everything"] == table
    assert tomllib.loads(config_file.path.read_text())["mcp"]["servers"]["everything"] == table


def test_invalid_edit_leaves_the_file_unchanged(config_file):
    before = config_file.path.read_text()
    with pytest.raises(ConfigError, match=r"rate_limit\.api_requests_per_minute"):
        config_file.set_value(["rate_limit", "api_requests_per_minute"], "many")
    with pytest.raises(ConfigError, match="surprise: unknown key"):
        config_file.set_value(["surprise"], 1)
    assert config_file.path.read_text() == before


def test_remove_value(config_file):
    config_file.set_value(["channels", "irc", "server"], "irc.example")
    config = config_file.remove_value(["channels", "irc"])
    assert "irc" not in config.channels


def test_writes_are_atomic_and_leave_no_temporary_files(config_file):
    for n in range(20):
        config_file.set_value(["rate_limit", "api_requests_per_minute"], 100 + n)
    leftovers = [p.name for p in config_file.path.parent.iterdir() if p.name != "config.toml"]
    assert leftovers == []
    assert stat.S_IMODE(os.stat(config_file.path).st_mode) == 0o600


def test_a_failed_write_keeps_the_old_file(config_file, monkeypatch):
    before = config_file.path.read_text()

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        config_file.set_value(["rate_limit", "api_requests_per_minute"], 77)
    monkeypatch.undo()
    assert config_file.path.read_text() == before
    assert [p.name for p in config_file.path.parent.iterdir()] == ["config.toml"]


def test_runtime_fails_at_start_on_bad_config(fangwire_home, memory_keyring):
    (fangwire_home / "config.toml").write_text("[http]\nmax_json_depth = -1\n")
    with pytest.raises(ConfigError, match=r"http\.max_json_depth: must be a positive number"):
        Runtime.build(fangwire_home, environ={}, keyring_backend=memory_keyring)


def test_runtime_config_reload(fangwire_home, memory_keyring):
    runtime = Runtime.build(fangwire_home, environ={}, keyring_backend=memory_keyring)
    runtime.config_file.set_value(["http", "max_json_depth"], 10)
    assert runtime.reload_config().http.max_json_depth == 10
