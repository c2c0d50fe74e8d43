"""A TCP server that accepts connections and never says anything (a hung peer)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import SocketStream


class SilentServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted = anyio.Event()
        self.closed_by_client = anyio.Event()

    async def _handle(self, stream: SocketStream) -> None:
        self.accepted.set()
        async with stream:
            try:
                while await stream.receive():
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass
        self.closed_by_client.set()


@asynccontextmanager
async def silent_server() -> AsyncIterator[SilentServer]:
    """Listen on 127.0.0.1 (ephemeral port) until the block ends."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server = SilentServer(listener.extra(anyio.abc.SocketAttribute.local_port))  # noqa: S610
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server._handle)
        yield server
        tg.cancel_scope.cancel()
