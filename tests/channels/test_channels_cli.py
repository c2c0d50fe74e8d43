"""``fangwire channels ...`` against a live daemon."""

from __future__ import annotations

import io

from fangwire import cli
from fangwire.app import create_app
from fangwire.testing.live import threaded_server


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_configure_test_remove(make_runtime, capsys, monkeypatch):
    runtime = make_runtime()
    with threaded_server(create_app(runtime)) as url:
        code, out, _ = run(capsys, "channels", "--url", url, "list")
        assert code == 0
        assert out.splitlines()[0].split()[:3] == ["NAME", "STATUS", "CONFIGURED"]
        assert any(line.split()[:2] == ["test", "unconfigured"] for line in out.splitlines())

        monkeypatch.setattr("sys.stdin", io.StringIO("bot-from-stdin\n"))
        code, out, _ = run(
            capsys, "channels", "--url", url, "configure", "test", "bot_name=-", "agent=assistant"
        )
        assert code == 0 and "channel test is running" in out
        assert runtime.config.channels["test"]["bot_name"] == "bot-from-stdin"

        code, out, _ = run(capsys, "channels", "--url", url, "test", "test", "room-9")
        assert code == 0 and "delivered to room-9" in out

        code, _, err = run(capsys, "channels", "--url", url, "configure", "test", "colour=red")
        assert code == 1 and "colour: unknown setting" in err and "HTTP 400" in err

        code, out, _ = run(capsys, "channels", "--url", url, "remove", "test")
        assert code == 0 and "removed test" in out
        code, _, err = run(capsys, "channels", "--url", url, "test", "test")
        assert code == 1 and "HTTP 412" in err


def test_unreachable_daemon(capsys):
    code, _, err = run(capsys, "channels", "--url", "http://127.0.0.1:9", "list")
    assert code == 3 and "cannot reach the daemon" in err


def test_malformed_pair(capsys):
    try:
        cli.main(["channels", "--url", "http://127.0.0.1:9", "configure", "test", "novalue"])
    except SystemExit as exc:
        assert "expected KEY=VALUE" in str(exc)
    else:
        raise AssertionError("a pair without '=' must be refused")
