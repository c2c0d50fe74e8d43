"""The ``stdio`` transport: talk newline-delimited JSON-RPC to a local server process.

This is how MCP servers installed as commands (``npx @modelcontextprotocol/server-...``,
``uvx ...``) are reached. The process is treated as untrusted (see
:mod:`fangwire.stdio_process`): environment cleared down to :data:`SAFE_ENV_NAMES` plus the
declared names, its own process group killed on stop, core dumps disabled and open files
capped, stderr logged scrubbed, and a line longer than :data:`MAX_MESSAGE_BYTES` ends the
connection instead of growing memory.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fangwire.hookspecs import hookimpl
from fangwire.stdio_process import (
    SAFE_ENV_NAMES,
    StdioConnection,
    StdioError,
    build_environment,
    open_stdio_process,
)
from fangwire.transports import Transport

__all__ = [
    "SAFE_ENV_NAMES",
    "StdioConnection",
    "StdioError",
    "StdioTransport",
    "build_environment",
]

log = logging.getLogger("fangwire.mcp.stdio")

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_OPEN_FILES = 1024
#: How long a process gets to exit after its stdin closes, then after SIGTERM.
GRACE_SECONDS = 2.0


class StdioTransport(Transport):
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

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def start(self) -> None:
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
                "bubblewrap": False,
                "running": len(self._open),
            },
        )

    async def stop(self) -> None:
        self.runtime.security.unregister("subprocess_sandbox")
        for connection in list(self._open):
            await connection.terminate()


@hookimpl
def register_transports(register: Any) -> None:
    register(StdioTransport)
