"""A real HTTP receiver for the ``webhook`` channel's callbacks (a small Starlette app).

It checks what a careful receiver checks: ``X-Webhook-Signature`` is
``sha256=<hex HMAC-SHA256(secret, signed bytes)>`` computed here with the standard library
(signed bytes = the body, or ``<X-Webhook-Timestamp>.<body>`` in ``strict`` mode), the
timestamp is recent (milliseconds), the id is new. A request failing any check gets 401 and
is not recorded. ``answer`` sets what the next callbacks get: ``(status, json, headers)``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class Receiver:
    def __init__(self, secret: str, *, strict: bool = False) -> None:
        self.secret = secret.encode()
        self.strict = strict
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.rejected: list[str] = []
        self.answers: list[tuple[int, Any, dict[str, str]]] = []
        #: recipients this receiver refuses (404, "unknown recipient").
        self.refuse: set[str] = set()
        #: every callback request, refused and stalled ones included.
        self.attempts = 0
        self.stall = 0
        self._seen_ids: set[str] = set()
        self._count = 0
        self._arrived = anyio.Event()
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    def answer(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        """Answer the next callback with ``status`` (queued; default: 200 ``{"id": ...}``)."""
        self.answers.append((status, body, headers or {}))

    async def hook(self, request: Request) -> JSONResponse:
        self.attempts += 1
        body = await request.body()
        if self.stall:
            self.stall -= 1
            await anyio.sleep(5)
            return JSONResponse({"error": "too late"}, status_code=504)
        stamp = request.headers.get("x-webhook-timestamp", "")
        ident = request.headers.get("x-webhook-id", "")
        signed = f"{stamp}.".encode() + body if self.strict else body
        expected = "sha256=" + hmac.new(self.secret, signed, hashlib.sha256).hexdigest()
        problem = None
        if not hmac.compare_digest(expected, request.headers.get("x-webhook-signature", "")):
            problem = "bad signature"
        elif not stamp.isdigit() or abs(time.time() * 1000 - int(stamp)) > 300_000:
            problem = "stale or missing timestamp"
        elif not ident or ident in self._seen_ids:
            problem = "missing or replayed id"
        if problem:
            self.rejected.append(problem)
            return JSONResponse({"error": problem}, status_code=401)
        self._seen_ids.add(ident)
        recipient = json.loads(body).get("recipient_id")
        if recipient in self.refuse:
            return JSONResponse({"error": f"unknown recipient {recipient}"}, status_code=404)
        if self.answers:
            status, answer, headers = self.answers.pop(0)
            if status >= 300:
                return JSONResponse(answer, status_code=status, headers=headers)
        else:
            self._count += 1
            status, answer, headers = 200, {"id": f"rcv-{self._count}"}, {}
        self.received.append(json.loads(body))
        self.headers.append(dict(request.headers))
        self._arrived.set()
        self._arrived = anyio.Event()
        return JSONResponse(answer, status_code=status, headers=headers)

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        while len(self.received) < count:
            await self._arrived.wait()
        return self.received
