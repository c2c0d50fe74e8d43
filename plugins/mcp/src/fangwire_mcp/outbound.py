"""The ``mcp`` SDK's HTTP client (``httpx2``) behind fangwire's outbound URL guard.

The SDK only takes ``httpx2`` clients. Rather than keep a second guard, :class:`GuardBridge` is
an ``httpx2`` transport that hands each request to fangwire's ``httpx``
:class:`~fangwire.security.ssrf.GuardedTransport`: the URL is checked, the host resolved and
pinned, redirects are never followed, and the response size is capped, exactly as for every
other user-supplied URL. Errors come back as the matching ``httpx2`` exceptions, which the SDK
already handles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import httpx2

from fangwire.security.ssrf import BlockedURL, GuardedTransport, OutboundPolicy

#: Long-lived event streams read many messages over one response: the cap is on the total.
MAX_STREAM_BYTES = 256 * 1024 * 1024


def _translate(exc: Exception, request: httpx2.Request) -> Exception:
    if isinstance(exc, BlockedURL):
        return httpx2.ConnectError(f"refused by the outbound guard: {exc.reason}", request=request)
    name = type(exc).__name__
    cls = getattr(httpx2, name, None)
    if isinstance(cls, type) and issubclass(cls, httpx2.TransportError):
        return cls(str(exc), request=request)
    return httpx2.TransportError(str(exc), request=request)


class _BridgedStream(httpx2.AsyncByteStream):
    def __init__(self, response: httpx.Response, request: httpx2.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream = self._response.stream
        assert isinstance(stream, httpx.AsyncByteStream)  # noqa: S101 - async transport
        try:
            async for chunk in stream:
                yield chunk
        except (httpx.HTTPError, BlockedURL) as exc:
            raise _translate(exc, self._request) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class GuardBridge(httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport that sends through a fangwire :class:`GuardedTransport`."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        extensions: dict[str, Any] = {}
        if "timeout" in request.extensions:
            extensions["timeout"] = request.extensions["timeout"]
        outgoing = httpx.Request(
            request.method,
            str(request.url),
            headers=list(request.headers.raw),
            content=body,
            extensions=extensions,
        )
        try:
            response = await self._inner.handle_async_request(outgoing)
        except (httpx.HTTPError, BlockedURL) as exc:
            raise _translate(exc, request) from exc
        return httpx2.Response(
            response.status_code,
            headers=list(response.headers.raw),
            stream=_BridgedStream(response, request),
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def policy_from_config(mcp: Mapping[str, Any]) -> OutboundPolicy:
    """The outbound policy for MCP servers: ``[mcp] allow_hosts`` and the stream cap."""
    hosts = mcp.get("allow_hosts", ())
    if not isinstance(hosts, list | tuple) or not all(isinstance(h, str) for h in hosts):
        raise ValueError("mcp.allow_hosts: expected a list of strings")
    return OutboundPolicy(allow_hosts=tuple(hosts), max_response_bytes=MAX_STREAM_BYTES)


def guarded_httpx2_client(
    policy: OutboundPolicy,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    read_timeout: float = 300.0,
) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` for the SDK whose every request passes the guard."""
    return httpx2.AsyncClient(
        transport=GuardBridge(GuardedTransport(policy)),
        headers=dict(headers or {}),
        timeout=httpx2.Timeout(timeout, read=read_timeout),
        follow_redirects=False,
        trust_env=False,
    )
