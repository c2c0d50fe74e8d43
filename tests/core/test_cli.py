"""The fangwire command: version, init, plugins, serve."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from fangwire import __version__
from fangwire.cli import main
from fangwire.configfile import default_config_text


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("FANGWIRE_HOME", str(path))
    monkeypatch.delenv("FANGWIRE_API_KEY", raising=False)
    return path


def run_cli(*args: str, home, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FANGWIRE_HOME": str(home)}
    env.pop("FANGWIRE_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "fangwire.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_version(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"fangwire {__version__}"


def test_init_writes_commented_defaults_and_refuses_to_overwrite(home, capsys):
    assert main(["init"]) == 0
    assert (home / "config.toml").read_text() == default_config_text()
    assert oct((home / "config.toml").stat().st_mode & 0o777) == "0o600"
    assert oct(home.stat().st_mode & 0o777) == "0o700"
    (home / "config.toml").write_text("# mine\n")
    assert main(["init"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (home / "config.toml").read_text() == "# mine\n"
    assert main(["init", "--force"]) == 0
    assert (home / "config.toml").read_text() == default_config_text()


def test_plugins_table_and_json(home, capsys):
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    names = {p["name"]: p for p in listing["plugins"]}
    assert names["test"]["group"] == "fangwire.channels"
    assert names["test"]["status"] == "loaded"
    assert listing["total"] == len(listing["plugins"])
    assert main(["plugins"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:5] == [
        "NAME",
        "GROUP",
        "DISTRIBUTION",
        "VERSION",
        "STATUS",
    ]
    assert "fangwire-channels" in table


def test_bad_config_exits_2_naming_the_key(home, capsys):
    home.mkdir()
    (home / "config.toml").write_text("[http]\nmax_json_depth = 'deep'\n")
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert "http.max_json_depth: expected an integer" in err


def test_serve_refuses_a_public_address_without_a_key(home):
    result = run_cli(
        "serve",
        "--host",
        "0.0.0.0",  # noqa: S104 - refused before binding
        "--port",
        str(free_port()),
        home=home,
    )
    assert result.returncode == 2
    assert "no API key is configured" in result.stderr


def test_serve_creates_config_and_answers(home):
    port = free_port()
    env = {**os.environ, "FANGWIRE_HOME": str(home)}
    env.pop("FANGWIRE_API_KEY", None)
    started = time.monotonic()
    with subprocess.Popen(
        [sys.executable, "-m", "fangwire.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            deadline = started + 30
            response = None
            while time.monotonic() < deadline:
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            assert response is not None and response.status_code == 200
            assert response.json() == {"status": "ok", "version": __version__}
            plugins = httpx.get(f"http://127.0.0.1:{port}/-/plugins", timeout=5).json()
            assert {p["status"] for p in plugins["plugins"]} == {"loaded"}
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=15)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status reports it.
    assert process.returncode in (0, -15)
    assert "Application shutdown complete" in stderr
    assert (home / "config.toml").read_text() == default_config_text()
    # Logs are JSON lines.
    lines = [line for line in stderr.splitlines() if line.startswith("{")]
    assert any(json.loads(line)["msg"].startswith("fangwire ") for line in lines)
