"""Tests for the MCP ``stdio`` transport: framing, isolation and process-group cleanup.

Each test runs a small Python script (written to ``tmp_path``) as the server process.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
import pytest

from fangwire.redaction import MASK
from fangwire.runtime import Runtime
from fangwire.testing.fixtures import MakeRuntime
from fangwire_mcp import stdio
from fangwire_mcp.stdio import StdioConnection, StdioError, StdioTransport, build_environment

TIMEOUT = 10
SECRET_ENV = {"FANGWIRE_API_KEY": "fw-master-key-123456", "SECRET_X": "do-not-inherit-me"}

ECHO = """
import json, os, sys
for line in sys.stdin:
    print(json.dumps({"echo": json.loads(line), "pid": os.getpid()}), flush=True)
"""

# Ignores stdin entirely: only a signal ends it.
SLEEPER = """
import sys, time
print('{"ready": true}', flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def runtime(make_runtime: MakeRuntime, tmp_path: Path) -> Runtime:
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return make_runtime(environ={**environ, **SECRET_ENV})


@pytest.fixture
async def transport(runtime: Runtime) -> AsyncIterator[StdioTransport]:
    async with runtime.serving():
        transport = runtime.transports["stdio"]
        assert isinstance(transport, StdioTransport)
        yield transport


@pytest.fixture
def fast_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stdio, "GRACE_SECONDS", 0.3)


def script(tmp_path: Path, source: str, name: str = "server.py") -> list[str]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return ["-u", str(path)]


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by init) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    state = stat.rpartition(")")[2].split()[0]
    return state not in {"Z", "X"}


async def wait_dead(pid: int, timeout: float = 5.0) -> bool:
    with anyio.move_on_after(timeout):
        while is_alive(pid):
            await anyio.sleep(0.02)
        return True
    return False


async def outcome(conn: StdioConnection) -> object:
    """What ``receive`` gave: the message or the exception.

    Checked after leaving ``connect`` so a failing check is reported plainly (``connect``
    runs its body inside a task group, which wraps what escapes it).
    """
    try:
        return await conn.receive()
    except Exception as exc:
        return exc


def assert_stdio_error(result: object, match: str) -> None:
    assert isinstance(result, StdioError), f"expected StdioError, got {result!r:.80}"
    assert re.search(match, str(result)), str(result)


def kill_quietly(pid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


# -- environment ----------------------------------------------------------------------------


def test_build_environment_keeps_only_safe_names_and_declared() -> None:
    parent = {"PATH": "/bin", "LANG": "C.UTF-8", "AWS_SECRET_ACCESS_KEY": "x", "TERM": "xterm"}
    env = build_environment({"API_TOKEN": "declared", "LANG": "override"}, parent)
    assert env == {"PATH": "/bin", "LANG": "override", "API_TOKEN": "declared"}


@pytest.mark.anyio
async def test_child_environment_is_cleared(transport: StdioTransport, tmp_path: Path) -> None:
    source = "import json, os\nprint(json.dumps(dict(os.environ)), flush=True)\n"
    with anyio.fail_after(TIMEOUT):
        async with transport.connect(
            sys.executable, script(tmp_path, source), env={"DECLARED_VAR": "given"}
        ) as conn:
            env = await conn.receive()
    for name in SECRET_ENV:
        assert name not in env
    assert env["PATH"] == transport.runtime.environ["PATH"]
    assert env["HOME"] == str(tmp_path)
    assert env["DECLARED_VAR"] == "given"
    # Python itself may add LC_CTYPE (PEP 538 locale coercion); nothing else may appear.
    assert set(env) - {"LC_CTYPE"} == {"PATH", "HOME", "DECLARED_VAR"}


# -- messages -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_json_round_trip(transport: StdioTransport, tmp_path: Path) -> None:
    messages: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
        {"jsonrpc": "2.0", "id": 2, "params": {"text": "line\nbreak", "emoji": "héllo ✓"}},
        {"nested": [1, [2, [3, None, True]], {"a": 1.5}]},
    ]
    with anyio.fail_after(TIMEOUT):
        async with transport.connect(sys.executable, script(tmp_path, ECHO)) as conn:
            assert isinstance(conn, StdioConnection)
            assert transport.open_connections == 1
            for message in messages:
                await conn.send(message)
            replies = [await conn.receive() for _ in messages]
    assert [r["echo"] for r in replies] == messages
    assert {r["pid"] for r in replies} == {conn.pid}
    assert transport.open_connections == 0
    # The echo server exits by itself once its stdin closes: no signal was needed.
    assert conn.process.returncode == 0


@pytest.mark.anyio
async def test_oversized_line_is_refused(
    transport: StdioTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stdio, "MAX_MESSAGE_BYTES", 1000)
    # Far longer than one pipe read, so the limit is hit before the newline is buffered.
    source = """
    import json, sys
    print(json.dumps({"small": "ok"}), flush=True)
    print(json.dumps({"big": "x" * 300_000}), flush=True)
    sys.stdin.read()
    """
    with anyio.fail_after(TIMEOUT):
        async with transport.connect(sys.executable, script(tmp_path, source)) as conn:
            assert await conn.receive() == {"small": "ok"}
            result = await outcome(conn)
    assert_stdio_error(result, "over 1000 bytes")


@pytest.mark.anyio
async def test_oversized_line_arriving_in_one_read_is_refused(
    transport: StdioTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stdio, "MAX_MESSAGE_BYTES", 64)
    # One write under PIPE_BUF: the whole line, newline included, arrives in one read.
    source = """
    import json, sys
    sys.stdout.write(json.dumps({"big": "x" * 500}) + "\\n")
    sys.stdout.flush()
    sys.stdin.read()
    """
    with anyio.fail_after(TIMEOUT):
        async with transport.connect(sys.executable, script(tmp_path, source)) as conn:
            result = await outcome(conn)
    assert_stdio_error(result, "over 64 bytes")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("this is not json", "invalid JSON"),
        ('{"unterminated": ', "invalid JSON"),
        ("[" * 100_000, "invalid JSON"),
        ("[1, 2]", "not an object"),
        ('"a string"', "not an object"),
        ("null", "not an object"),
        ("42", "not an object"),
    ],
)
@pytest.mark.anyio
async def test_bad_json_is_refused(
    transport: StdioTransport, tmp_path: Path, line: str, match: str
) -> None:
    source = (
        f"import sys\nsys.stdout.write({line!r} + '\\n')\nsys.stdout.flush()\nsys.stdin.read()\n"
    )
    with anyio.fail_after(TIMEOUT):
        async with transport.connect(sys.executable, script(tmp_path, source)) as conn:
            result = await outcome(conn)
    assert_stdio_error(result, match)


@pytest.mark.parametrize("last_output", ["", '{"partial": '])
@pytest.mark.anyio
async def test_server_exit_raises_on_receive(
    transport: StdioTransport, tmp_path: Path, last_output: str
) -> None:
    source = f"""
    import sys
    print('{{"first": 1}}', flush=True)
    sys.stdout.write({last_output!r})
    sys.stdout.flush()
    """
    with anyio.fail_after(TIMEOUT):
        async with transport.connect(sys.executable, script(tmp_path, source)) as conn:
            assert await conn.receive() == {"first": 1}
            first = await outcome(conn)
            await conn.process.wait()
            again = await outcome(conn)
    assert_stdio_error(first, "closed its output")
    assert_stdio_error(again, "closed its output")


# -- stderr ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_stderr_is_logged_and_scrubbed(
    transport: StdioTransport, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fangwire.mcp.stdio")
    transport.runtime.redactor.add("s3cr3t-value")
    source = """
    import sys
    sys.stderr.write("hello from the server\\n")
    sys.stderr.write("leaking s3cr3t-value now\\n")
    sys.stderr.flush()
    sys.stdin.read()
    """

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "fangwire.mcp.stdio"]

    with anyio.fail_after(TIMEOUT):
        async with transport.connect(sys.executable, script(tmp_path, source), name="srv"):
            while len(lines()) < 2:
                await anyio.sleep(0.01)
    assert lines() == ["srv stderr: hello from the server", f"srv stderr: leaking {MASK} now"]
    assert "s3cr3t-value" not in caplog.text


# -- resource limits ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_core_dumps_disabled_and_open_files_capped(
    transport: StdioTransport, tmp_path: Path
) -> None:
    # prlimit is applied just after spawn: read the limits only once the test says so.
    source = """
    import json, resource, sys
    sys.stdin.readline()
    print(json.dumps({
        "core": resource.getrlimit(resource.RLIMIT_CORE),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }), flush=True)
    """
    with anyio.fail_after(TIMEOUT):
        async with transport.connect(sys.executable, script(tmp_path, source)) as conn:
            await conn.send({"go": True})
            limits = await conn.receive()
    assert limits["core"] == [0, 0]
    parent_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if parent_hard == resource.RLIM_INFINITY or parent_hard >= stdio.MAX_OPEN_FILES:
        assert limits["nofile"] == [stdio.MAX_OPEN_FILES, stdio.MAX_OPEN_FILES]


# -- termination ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_exit_kills_the_whole_process_group(
    transport: StdioTransport, tmp_path: Path
) -> None:
    # The leader exits on stdin EOF, leaving its child behind unless the group is killed.
    source = """
    import json, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(1)"])
    print(json.dumps({"grandchild": child.pid}), flush=True)
    sys.stdin.read()
    """
    grandchild = None
    try:
        with anyio.fail_after(TIMEOUT):
            async with transport.connect(sys.executable, script(tmp_path, source)) as conn:
                grandchild = (await conn.receive())["grandchild"]
                assert os.getpgid(grandchild) == conn.pid
                assert is_alive(grandchild)
            assert conn.process.returncode == 0
            assert await wait_dead(grandchild), "the grandchild outlived the connection"
    finally:
        if grandchild is not None:
            kill_quietly(grandchild)


@pytest.mark.anyio
@pytest.mark.usefixtures("fast_grace")
async def test_process_ignoring_sigterm_is_killed(
    transport: StdioTransport, tmp_path: Path
) -> None:
    marker = tmp_path / "got-sigterm"
    source = """
    import pathlib, signal, sys, time
    marker = pathlib.Path(sys.argv[1])
    signal.signal(signal.SIGTERM, lambda signum, frame: marker.write_text("TERM"))
    print('{"ready": true}', flush=True)
    while True:
        time.sleep(0.05)
    """
    with anyio.fail_after(TIMEOUT):
        async with transport.connect(
            sys.executable, [*script(tmp_path, source), str(marker)]
        ) as conn:
            assert await conn.receive() == {"ready": True}
    assert marker.read_text() == "TERM"
    assert conn.process.returncode == -signal.SIGKILL
    assert not is_alive(conn.pid)


@pytest.mark.anyio
@pytest.mark.usefixtures("fast_grace")
async def test_transport_stop_terminates_open_connections(
    transport: StdioTransport, tmp_path: Path
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with transport.connect(sys.executable, script(tmp_path, SLEEPER)) as conn:
            assert await conn.receive() == {"ready": True}
            assert transport.open_connections == 1
            await transport.stop()
            # SLEEPER ignores stdin EOF, so only the SIGTERM that follows ends it.
            assert conn.process.returncode == -signal.SIGTERM
            assert not is_alive(conn.pid)
        # Leaving the context terminates again, harmlessly.
    assert transport.open_connections == 0


@pytest.mark.anyio
@pytest.mark.usefixtures("fast_grace")
async def test_receive_after_stop_raises_stdio_error(
    transport: StdioTransport, tmp_path: Path
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with transport.connect(sys.executable, script(tmp_path, SLEEPER)) as conn:
            assert await conn.receive() == {"ready": True}
            await transport.stop()
            result = await outcome(conn)
    assert_stdio_error(result, "closed")


@pytest.mark.anyio
async def test_stdio_error_propagates_unwrapped_from_connect(
    transport: StdioTransport, tmp_path: Path
) -> None:
    source = "print('not json', flush=True)\nimport sys\nsys.stdin.read()\n"
    with anyio.fail_after(TIMEOUT), pytest.raises(StdioError, match="invalid JSON"):
        async with transport.connect(sys.executable, script(tmp_path, source)) as conn:
            await conn.receive()


@pytest.mark.anyio
@pytest.mark.usefixtures("fast_grace")
async def test_cancelled_connection_still_kills_the_process(
    transport: StdioTransport, tmp_path: Path
) -> None:
    conn: StdioConnection | None = None
    try:
        with anyio.fail_after(TIMEOUT):
            with anyio.CancelScope() as scope:
                async with transport.connect(sys.executable, script(tmp_path, SLEEPER)) as conn:
                    assert await conn.receive() == {"ready": True}
                    scope.cancel()
                    await anyio.sleep_forever()
            assert conn is not None
            assert await wait_dead(conn.pid, timeout=2.0), "the server outlived cancellation"
    finally:
        if conn is not None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(conn.pid, signal.SIGKILL)
            with anyio.CancelScope(shield=True):
                await conn.process.aclose()
