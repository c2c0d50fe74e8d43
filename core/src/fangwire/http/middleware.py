"""The outermost ASGI middleware: request ids, security headers, Host/Origin rules, and the
500 envelope.

It runs outside Starlette's own error handling, so even an unexpected exception becomes the
JSON error envelope with ``x-request-id`` and the security headers, and never leaks a
traceback. It is one layer on purpose: every request passes through it.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fangwire.http.browser import browser_refusal
from fangwire.http.context import AUTH_CONFIGURED_KEY, REQUEST_ID_KEY, RUNTIME_KEY
from fangwire.http.errors import error_response
from fangwire.http.facts import FACTS_KEY, RequestFacts
from fangwire.http.headers import CACHE_CONTROL, SECURITY_HEADERS
from fangwire.logs import request_id_var

if TYPE_CHECKING:
    from fangwire.http.security import Gatekeeper
    from fangwire.runtime import Runtime

log = logging.getLogger("fangwire.http")

# Request ids are a random per-process prefix and a counter: unique across restarts and
# without a system call per request. They identify requests; they are not secrets.
_ID_PREFIX = secrets.token_hex(6)
_ID_COUNTER = itertools.count(1)

_FIXED_HEADERS = (*SECURITY_HEADERS, CACHE_CONTROL)
_FIXED_NAMES = frozenset(name for name, _ in _FIXED_HEADERS)


class EnvelopeMiddleware:
    """Puts the runtime and a request id in the scope, applies the Host/Origin rules, adds
    ``x-request-id`` and the security headers to every HTTP response, and turns uncaught
    exceptions into a 500 envelope."""

    def __init__(self, app: ASGIApp, runtime: Runtime, gatekeeper: Gatekeeper) -> None:
        self.app = app
        self.runtime = runtime
        self.gatekeeper = gatekeeper

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                scope[RUNTIME_KEY] = self.runtime
            await self.app(scope, receive, send)
            return
        scope[RUNTIME_KEY] = self.runtime
        facts = scope[FACTS_KEY] = RequestFacts.read(scope)
        request_id = facts.request_id or f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"
        scope[REQUEST_ID_KEY] = request_id
        rid_header = (b"x-request-id", request_id.encode("latin-1"))
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", ()))
                names = {name.lower() for name, _ in headers}
                if b"x-request-id" in names:
                    headers = [(k, v) for k, v in headers if k.lower() != b"x-request-id"]
                headers.append(rid_header)
                if names.isdisjoint(_FIXED_NAMES):
                    headers.extend(_FIXED_HEADERS)
                else:
                    headers.extend(h for h in _FIXED_HEADERS if h[0] not in names)
                message["headers"] = headers
            await send(message)

        auth_configured = self.gatekeeper.auth_configured
        scope[AUTH_CONFIGURED_KEY] = auth_configured
        refusal = browser_refusal(
            facts, scope["method"], self.runtime.config.http, auth_configured=auth_configured
        )
        if refusal is not None:
            response = error_response(403, refusal[0], refusal[1], request_id)
            await response(scope, receive, send_with_headers)
            return
        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error serving %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = error_response(500, "internal_error", "internal server error", request_id)
            await response(scope, receive, send_with_headers)
        finally:
            request_id_var.reset(token)
