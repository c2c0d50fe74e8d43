"""Defences for a daemon that browsers can reach: Host and Origin checks.

A web page can make a browser send requests to ``127.0.0.1``; DNS rebinding can even make
them look same-origin. So, while no API key is configured (loopback callers are trusted), the
``Host`` header must name this machine; and a state-changing request that carries an
``Origin`` must come from the same origin or from a configured CORS origin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from fangwire.config import is_loopback_host
from fangwire.http.context import RUNTIME_KEY, request_id_of
from fangwire.http.errors import error_response

if TYPE_CHECKING:
    from fangwire.http.security import Gatekeeper
    from fangwire.runtime import Runtime

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class BrowserGuardMiddleware:
    """Puts the runtime in the scope, then applies the Host and Origin rules."""

    def __init__(self, app: ASGIApp, runtime: Runtime, gatekeeper: Gatekeeper) -> None:
        self.app = app
        self.runtime = runtime
        self.gatekeeper = gatekeeper

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope[RUNTIME_KEY] = self.runtime
        headers = Headers(scope=scope)
        http = self.runtime.config.http
        host = headers.get("host", "")
        if not self.gatekeeper.auth_configured:
            name = _host_name(host).lower()
            if name and not is_loopback_host(name) and name not in http.allowed_hosts:
                response = error_response(
                    403,
                    "forbidden_host",
                    f"host {name!r} is not allowed; add it to http.allowed_hosts",
                    request_id_of(scope),
                )
                await response(scope, receive, send)
                return
        origin = headers.get("origin")
        if origin and scope.get("method", "GET") not in SAFE_METHODS:
            same_origin = urlsplit(origin).netloc.lower() == host.lower()
            if not same_origin and origin not in http.cors_origins:
                response = error_response(
                    403,
                    "forbidden_origin",
                    f"origin {origin!r} may not call this API; add it to http.cors_origins",
                    request_id_of(scope),
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
