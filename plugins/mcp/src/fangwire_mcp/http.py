"""The ``http`` (Streamable HTTP) and ``sse`` (legacy HTTP+SSE) transports.

Both use the ``mcp`` SDK's client transports with an ``httpx2`` client whose requests pass
fangwire's outbound URL guard (:mod:`fangwire_mcp.outbound`): an MCP server URL is
user-supplied, so private, loopback and metadata addresses are refused unless
``[mcp] allow_hosts`` lists them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.client._transport import TransportStreams
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from fangwire.hookspecs import hookimpl
from fangwire.security.ssrf import OutboundPolicy
from fangwire_mcp.client_transport import ClientTransport
from fangwire_mcp.outbound import guarded_httpx2_client, policy_from_config
from fangwire_mcp.spec import ServerSpec


class _GuardedHttp(ClientTransport):
    def policy(self) -> OutboundPolicy:
        mcp = self.runtime.config.mcp
        return policy_from_config(mcp if isinstance(mcp, Mapping) else {})

    async def start(self) -> None:
        self.runtime.security.uses("ssrf_protection", f"mcp:{self.transport_id}")


class StreamableHttpTransport(_GuardedHttp):
    transport_id = "http"
    display_name = "Streamable HTTP"
    description = "MCP over Streamable HTTP (one endpoint; JSON or SSE responses)"

    @asynccontextmanager
    async def open(
        self,
        spec: ServerSpec,
        *,
        env: Mapping[str, str],
        headers: Mapping[str, str],
        lost: anyio.Event,
    ) -> AsyncIterator[TransportStreams]:
        client = guarded_httpx2_client(
            self.policy(), headers=headers, timeout=float(spec.timeout_secs)
        )
        async with client, streamable_http_client(spec.url, http_client=client) as streams:
            yield streams


class SseTransport(_GuardedHttp):
    transport_id = "sse"
    display_name = "HTTP+SSE (legacy)"
    description = "MCP over the deprecated HTTP+SSE transport (GET event stream, POST endpoint)"

    @asynccontextmanager
    async def open(
        self,
        spec: ServerSpec,
        *,
        env: Mapping[str, str],
        headers: Mapping[str, str],
        lost: anyio.Event,
    ) -> AsyncIterator[TransportStreams]:
        policy = self.policy()

        def factory(
            headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None
        ) -> Any:
            client = guarded_httpx2_client(
                policy, headers=headers, timeout=float(spec.timeout_secs)
            )
            if timeout is not None:
                client.timeout = timeout
            return client

        async with sse_client(
            spec.url,
            headers=dict(headers),
            timeout=float(spec.timeout_secs),
            httpx_client_factory=factory,
        ) as streams:
            yield streams


@hookimpl
def register_transports(register: Any) -> None:
    register(StreamableHttpTransport)
