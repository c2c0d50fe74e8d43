"""The interface the server manager uses to open a connection to one MCP server."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager

import anyio
from mcp.client._transport import TransportStreams

from fangwire.transports import Transport
from fangwire_mcp.spec import ServerSpec


class ClientTransport(Transport):
    """A ``fangwire.transports`` transport that can reach MCP servers.

    :meth:`open` yields the SDK's message streams for ``spec``; it sets ``lost`` when it
    learns that the connection is gone (a process exited), so the manager reconnects without
    waiting for the next health check. ``env`` and ``headers`` carry resolved credentials.
    """

    def open(
        self,
        spec: ServerSpec,
        *,
        env: Mapping[str, str],
        headers: Mapping[str, str],
        lost: anyio.Event,
    ) -> AbstractAsyncContextManager[TransportStreams]:
        raise NotImplementedError
