"""The outermost ASGI middleware: request ids, security headers, and the 500 envelope.

It runs outside Starlette's own error handling, so even an unexpected exception becomes the
JSON error envelope with ``x-request-id`` and the security headers, and never leaks a
traceback.
"""

from __future__ import annotations

import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fangwire.http.context import REQUEST_ID_KEY
from fangwire.http.errors import error_response
from fangwire.http.headers import CACHE_CONTROL, SECURITY_HEADERS
from fangwire.logs import request_id_var

log = logging.getLogger("fangwire.http")

_INBOUND_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def _choose_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = bytes(value).decode("latin-1")
            if _INBOUND_ID.match(text):
                return text
            break
    return uuid.uuid4().hex


class EnvelopeMiddleware:
    """Adds ``x-request-id`` and security headers to every HTTP response; turns uncaught
    exceptions into a 500 envelope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _choose_request_id(scope)
        scope[REQUEST_ID_KEY] = request_id
        rid_header = (b"x-request-id", request_id.encode("latin-1"))
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [
                    (k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"
                ]
                present = {k.lower() for k, _ in headers}
                headers.append(rid_header)
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if CACHE_CONTROL[0] not in present:
                    headers.append(CACHE_CONTROL)
                message = {**message, "headers": headers}
            await send(message)

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
