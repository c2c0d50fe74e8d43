"""The sandboxed NDJSON child process shared by the MCP stdio transport and sidecar channels."""

from __future__ import annotations

import logging
import os
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from fangwire.stdio_process import StdioError, StdioFrameError, open_stdio_process

TIMEOUT = 20

ECHO = """
import json, os, sys
for line in sys.stdin:
    request = json.loads(line)
    if request.get("big"):
        print("x" * 5000, flush=True)
    elif request.get("junk"):
        print("not json", flush=True)
        print(json.dumps({"after": "junk"}), flush=True)
    else:
        print(json.dumps({"env": sorted(os.environ), "pid": os.getpid()}), flush=True)
        sys.stderr.write("note with s3cr3t inside\\n")
        sys.stderr.flush()
"""


def start(tmp_path: Path, logger: logging.Logger, **kwargs: object):
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(ECHO), encoding="utf-8")
    parent = {"PATH": os.environ.get("PATH", ""), "DAEMON_SECRET": "no", "HOME": str(tmp_path)}
    return open_stdio_process(
        sys.executable,
        ["-u", str(path)],
        env={"DECLARED": "yes"},
        parent_environ=parent,
        name="child",
        scrub=lambda text: text.replace("s3cr3t", "****"),
        logger=logger,
        **kwargs,
    )


@pytest.mark.anyio
async def test_environment_stderr_and_group_kill(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("fangwire.tests.stdio_process")
    caplog.set_level(logging.INFO, logger=logger.name)
    with anyio.fail_after(TIMEOUT):
        async with start(tmp_path, logger) as conn:
            await conn.send({"hello": 1})
            answer = await conn.receive()
            while "child stderr" not in caplog.text:
                await anyio.sleep(0.01)
            pid = conn.pid
    assert "DECLARED" in answer["env"]
    assert "DAEMON_SECRET" not in answer["env"]
    assert answer["pid"] == pid
    assert "child stderr: note with **** inside" in caplog.text
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


@pytest.mark.anyio
async def test_line_bound_ends_the_connection(tmp_path: Path) -> None:
    logger = logging.getLogger("fangwire.tests.stdio_process")
    with anyio.fail_after(TIMEOUT):
        async with start(tmp_path, logger, max_line_bytes=1000) as conn:
            await conn.send({"big": True})
            with pytest.raises(StdioError, match="over 1000 bytes"):
                await conn.receive()


@pytest.mark.anyio
async def test_a_bad_frame_is_consumed_and_the_connection_goes_on(tmp_path: Path) -> None:
    logger = logging.getLogger("fangwire.tests.stdio_process")
    with anyio.fail_after(TIMEOUT):
        async with start(tmp_path, logger) as conn:
            await conn.send({"junk": True})
            with pytest.raises(StdioFrameError, match="invalid JSON"):
                await conn.receive()
            assert await conn.receive() == {"after": "junk"}
