"""A local helper process speaking newline-delimited JSON on stdin/stdout, run as untrusted.

Used for MCP servers started as commands and for out-of-process channel adapters. The process:

- gets an environment cleared down to :data:`SAFE_ENV_NAMES` plus the names the operator
  declared, so the daemon's own secrets (API keys, master key) are never inherited;
- runs in its own session, so stopping it kills its whole process group, grandchildren
  included (stdin closed first, then SIGTERM, then SIGKILL, each after a grace period);
- has core dumps disabled (they could hold secrets) and open files capped;
- has its stderr logged line by line, scrubbed of known secrets;
- ends the connection with :class:`StdioError` when it writes a line longer than the bound,
  instead of growing memory.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

SAFE_ENV_NAMES: tuple[str, ...] = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
MAX_LINE_BYTES = 4 * 1024 * 1024
MAX_OPEN_FILES = 1024
#: How long a process gets to exit after its stdin closes, then after SIGTERM.
GRACE_SECONDS = 2.0
#: Longest stderr line logged as one record (longer ones are logged in pieces).
MAX_STDERR_LINE = 64 * 1024
#: Last stderr lines kept per process, to explain an early exit.
STDERR_TAIL_LINES = 5


class StdioError(Exception):
    """The process misbehaved (bad JSON, oversized line, exited)."""


class StdioFrameError(StdioError):
    """One line was not a JSON object; it was consumed and the connection is still usable."""


def build_environment(
    declared: Mapping[str, str], parent: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The child's environment: the safe names from ``parent`` plus ``declared``."""
    source = os.environ if parent is None else parent
    env = {name: source[name] for name in SAFE_ENV_NAMES if name in source}
    env.update(declared)
    return env


class StdioConnection:
    """One running process with JSON objects, one per line, over its stdin/stdout."""

    def __init__(
        self,
        process: anyio.abc.Process,
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
        grace_seconds: float = GRACE_SECONDS,
    ) -> None:
        self.process = process
        if process.stdout is None or process.stdin is None:
            raise StdioError("the process was started without pipes")
        self.max_line_bytes = max_line_bytes
        self.grace_seconds = grace_seconds
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self._stdin = process.stdin
        #: The last lines the process wrote to stderr (scrubbed), to explain an early exit.
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, message: Mapping[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"
        await self._stdin.send(data)

    async def receive(self) -> dict[str, Any]:
        """The next JSON object the process wrote; :class:`StdioError` on anything else."""
        limit = self.max_line_bytes
        try:
            line = await self._stdout.receive_until(b"\n", limit)
        except anyio.DelimiterNotFound:
            raise StdioError(f"server wrote a line over {limit} bytes") from None
        except (
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.ClosedResourceError,
            anyio.BrokenResourceError,
        ):
            raise StdioError("server closed its output") from None
        # receive_until only bounds the search while no newline is buffered; a long line that
        # arrived in one read still has to be refused.
        if len(line) > limit:
            raise StdioError(f"server wrote a line over {limit} bytes")
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise StdioFrameError(f"server wrote invalid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise StdioFrameError("server wrote a JSON value that is not an object")
        return value

    async def terminate(self) -> None:
        """Close stdin, then SIGTERM and finally SIGKILL the whole process group.

        Shielded from cancellation: a cancelled caller must never leave the process running.
        """
        with anyio.CancelScope(shield=True):
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._stdin.aclose()
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None:
                    with suppress(ProcessLookupError, PermissionError):
                        os.killpg(self.process.pid, sig)
                with anyio.move_on_after(self.grace_seconds):
                    await self.process.wait()
                    break
            # Grandchildren may outlive the leader; the group is ours alone, so clear it.
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.aclose()


async def pump_stderr(
    process: anyio.abc.Process,
    name: str,
    scrub: Callable[[str], str],
    logger: logging.Logger,
    tail: deque[str] | None = None,
) -> None:
    """Log each stderr line of ``process`` as ``"<name> stderr: <line>"``, scrubbed, and keep
    the last ones (500 characters each at most) in ``tail``."""
    if process.stderr is None:
        return
    buffered = BufferedByteReceiveStream(process.stderr)
    while True:
        try:
            line = await buffered.receive_until(b"\n", MAX_STDERR_LINE)
        except anyio.DelimiterNotFound:
            line = await buffered.receive(MAX_STDERR_LINE)
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
            return
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            clean = scrub(text)
            if tail is not None:
                tail.append(clean[:500])
            logger.info("%s stderr: %s", name, clean)


def limit_resources(pid: int, max_open_files: int = MAX_OPEN_FILES) -> None:
    """No core dumps, at most ``max_open_files`` descriptors (best effort)."""
    with suppress(OSError, ValueError):
        resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))
    with suppress(OSError, ValueError):
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (max_open_files, max_open_files))


@asynccontextmanager
async def open_stdio_process(
    command: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str],
    parent_environ: Mapping[str, str],
    name: str,
    scrub: Callable[[str], str],
    logger: logging.Logger,
    max_line_bytes: int = MAX_LINE_BYTES,
    grace_seconds: float = GRACE_SECONDS,
    max_open_files: int = MAX_OPEN_FILES,
) -> AsyncIterator[StdioConnection]:
    """Start ``command`` sandboxed and yield the connection; the process group dies on exit.

    ``env`` holds the declared variables (added to the safe names taken from
    ``parent_environ``). Errors raised in the caller's block come out as themselves, not
    wrapped in an exception group.
    """
    process = await anyio.open_process(
        [command, *args],
        env=build_environment(env, parent_environ),
        start_new_session=True,
    )
    limit_resources(process.pid, max_open_files)
    connection = StdioConnection(
        process, max_line_bytes=max_line_bytes, grace_seconds=grace_seconds
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump_stderr, process, name, scrub, logger, connection.stderr_tail)
            try:
                yield connection
            finally:
                await connection.terminate()
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
