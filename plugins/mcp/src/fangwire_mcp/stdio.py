"""The ``stdio`` transport: talk newline-delimited JSON-RPC to a local server process.

This is how MCP servers installed as commands (``npx @modelcontextprotocol/server-...``,
``uvx ...``) are reached. The process is treated as untrusted (the shared helper
:mod:`fangwire.stdio_process`, also used by sidecar channels):

- its environment is cleared down to :data:`SAFE_ENV_NAMES` plus the names the operator
  declared, so the daemon's own secrets (API keys, master key) are never inherited;
- it runs in its own session, so stopping it kills its whole process group, grandchildren
  included;
- core dumps are disabled (they could hold secrets) and open files are capped;
- its stderr goes to fangwire's log, line by line, scrubbed of known secrets;
- a line longer than :data:`MAX_MESSAGE_BYTES` ends the connection instead of growing memory;
- under :meth:`StdioTransport.open` (the server manager's path) it also runs inside bubblewrap
  when ``[mcp] bubblewrap`` allows and ``bwrap`` works here (:mod:`fangwire_mcp.sandbox`), and
  ``$NAME`` in its arguments is expanded only from its own environment.

:meth:`StdioTransport.connect` gives the raw JSON-object connection; :meth:`StdioTransport.open`
adapts it to the ``mcp`` SDK's client streams (:mod:`fangwire_mcp.streams`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from mcp.client._transport import TransportStreams

from fangwire.hookspecs import hookimpl
from fangwire.stdio_process import (
    SAFE_ENV_NAMES,
    STDERR_TAIL_LINES,
    StdioConnection,
    StdioError,
    build_environment,
    open_stdio_process,
)
from fangwire_mcp import sandbox
from fangwire_mcp.client_transport import ClientTransport
from fangwire_mcp.spec import ServerSpec
from fangwire_mcp.streams import message_streams

__all__ = [
    "SAFE_ENV_NAMES",
    "STDERR_TAIL_LINES",
    "StdioConnection",
    "StdioError",
    "StdioTransport",
    "build_environment",
    "expand_args",
]

log = logging.getLogger("fangwire.mcp.stdio")

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_OPEN_FILES = 1024
#: How long a process gets to exit after its stdin closes, then after SIGTERM.
GRACE_SECONDS = 2.0
#: How long a failed connection waits to learn whether the process has exited.
EXIT_GRACE_SECONDS = 0.5


_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand_args(args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """``$NAME`` / ``${NAME}`` in ``args`` replaced from the child's own environment.

    Only names the child receives are expanded (the safe names and the declared ones), so an
    argument can never pull a daemon secret in; any other reference is left as written.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, match.group(0))

    return [_VARIABLE.sub(replace, arg) for arg in args]


async def _exit_reason(conn: StdioConnection) -> str | None:
    """``"server exited with code N: <last stderr line>"`` if the process has ended."""
    with anyio.move_on_after(EXIT_GRACE_SECONDS):
        await conn.process.wait()
    code = conn.process.returncode
    if code is None:
        return None
    await anyio.sleep(0.05)  # let the stderr pump take the last lines
    last = f": {conn.stderr_tail[-1]}" if conn.stderr_tail else ""
    return f"server exited with code {code}{last}"


class StdioTransport(ClientTransport):
    transport_id = "stdio"
    display_name = "stdio"
    description = "Local server process speaking newline-delimited JSON-RPC on stdin/stdout"

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self._open: set[StdioConnection] = set()

    @asynccontextmanager
    async def connect(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        name: str = "server",
    ) -> AsyncIterator[StdioConnection]:
        """Start ``command`` and yield the connection; the process group dies on exit."""
        async with open_stdio_process(
            command,
            args,
            env=env or {},
            parent_environ=self.runtime.environ,
            name=name,
            scrub=self.runtime.redactor.scrub,
            logger=log,
            max_line_bytes=MAX_MESSAGE_BYTES,
            grace_seconds=GRACE_SECONDS,
            max_open_files=MAX_OPEN_FILES,
        ) as connection:
            self._open.add(connection)
            try:
                yield connection
            finally:
                self._open.discard(connection)

    @asynccontextmanager
    async def open(
        self,
        spec: ServerSpec,
        *,
        env: Mapping[str, str],
        headers: Mapping[str, str],
        lost: anyio.Event,
    ) -> AsyncIterator[TransportStreams]:
        """Start ``spec``'s command sandboxed and yield the SDK's message streams.

        ``lost`` is set as soon as the process exits.
        """
        child_env = build_environment(env, self.runtime.environ)
        command, args = spec.command, expand_args(spec.args, child_env)
        bwrap, writable = self._bubblewrap()
        if bwrap is not None:
            args = sandbox.wrap(bwrap, command, args, home=child_env.get("HOME"), writable=writable)
            command, args = args[0], args[1:]
        connecting = self.connect(command, args, env=env, name=spec.name)
        async with connecting as conn, anyio.create_task_group() as tg:

            async def watch() -> None:
                await conn.process.wait()
                lost.set()

            tg.start_soon(watch)
            try:
                async with message_streams(conn.send, conn.receive) as streams:
                    yield streams
            except Exception as exc:
                exited = await _exit_reason(conn)
                if exited is not None:
                    raise StdioError(exited) from exc
                raise
            finally:
                tg.cancel_scope.cancel()

    def _bubblewrap(self) -> tuple[str | None, tuple[str, ...]]:
        """The ``bwrap`` to run servers under (``None``: none) and the extra writable paths."""
        mcp = self.runtime.config.mcp
        mode, writable = sandbox.settings(mcp if isinstance(mcp, Mapping) else {})
        if mode == "off":
            return None, writable
        found = sandbox.usable_bwrap(self.runtime.environ.get("PATH", os.defpath))
        if found is None and mode == "on":
            raise sandbox.SandboxUnavailable(
                'bubblewrap is required ([mcp] bubblewrap = "on") but bwrap is not installed '
                "or cannot create namespaces here"
            )
        return found, writable

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def start(self) -> None:
        # Finding out whether bubblewrap works runs a process: do it once, off the event loop.
        path = self.runtime.environ.get("PATH", os.defpath)
        await anyio.to_thread.run_sync(sandbox.usable_bwrap, path)
        self.runtime.security.register("subprocess_sandbox", self.sandbox_state)

    def sandbox_state(self) -> tuple[str, dict[str, object]]:
        """What confines the server processes this transport starts (for /api/security)."""
        return (
            "active",
            {
                "environment": "cleared to " + ", ".join(SAFE_ENV_NAMES) + " + declared names",
                "process_group": "own session, killed as a group",
                "core_dumps": "disabled",
                "max_open_files": MAX_OPEN_FILES,
                "bubblewrap": self._bubblewrap_state(),
                "running": len(self._open),
            },
        )

    def _bubblewrap_state(self) -> str:
        try:
            bwrap, _ = self._bubblewrap()
        except (ValueError, sandbox.SandboxUnavailable) as exc:
            return f"error: {exc}"
        return "in use" if bwrap is not None else "off"

    async def stop(self) -> None:
        self.runtime.security.unregister("subprocess_sandbox")
        for connection in list(self._open):
            await connection.terminate()


@hookimpl
def register_transports(register: Any) -> None:
    register(StdioTransport)
