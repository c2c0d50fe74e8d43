"""A small local ntfy server: the documented publish and subscribe API, in memory.

- ``POST`` / ``PUT /<topic>``: the body is the message; ``Title``, ``Priority`` and ``Tags``
  headers are kept; the answer is the message as JSON (``id``, ``time``, ``event``, ...).
- ``GET /<topic>/sse``: server-sent events, an ``open`` event and then one ``data:`` line of
  message JSON per published message.
- ``GET /<topic>/json``: the same as newline-delimited JSON.
- With a token configured, every request needs ``Authorization: Bearer <token>`` (401/403
  otherwise, with ntfy's error body).

Messages are delivered to the subscribers connected when they are published, like ntfy
without a ``since`` parameter. Run it with :func:`fangwire.testing.live.live_server` or
:func:`~fangwire.testing.live.threaded_server` (the test-side helpers poll, so they work from
any event loop).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class FakeNtfy:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.messages: list[dict[str, Any]] = []
        self.refused: list[int] = []
        self._subscribers: dict[str, set[MemoryObjectSendStream[dict[str, Any]]]] = {}
        self.app = Starlette(
            routes=[
                Route("/{topic}/sse", self.subscribe_sse, methods=["GET"]),
                Route("/{topic}/json", self.subscribe_json, methods=["GET"]),
                Route("/{topic}", self.publish, methods=["POST", "PUT"]),
            ]
        )

    # -- state for tests ----------------------------------------------------------------------

    def subscribers(self, topic: str) -> int:
        return len(self._subscribers.get(topic, ()))

    async def wait_until(self, check: Callable[[], bool]) -> None:
        while not check():
            await anyio.sleep(0.02)

    # -- API ----------------------------------------------------------------------------------

    def _refusal(self, request: Request) -> Response | None:
        if self.token is None:
            return None
        header = request.headers.get("authorization", "")
        if not header:
            self.refused.append(401)
            return JSONResponse({"code": 40101, "http": 401, "error": "unauthorized"}, 401)
        if not secrets.compare_digest(header, f"Bearer {self.token}"):
            self.refused.append(403)
            return JSONResponse({"code": 40301, "http": 403, "error": "forbidden"}, 403)
        return None

    async def publish(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        topic = request.path_params["topic"]
        body = (await request.body()).decode("utf-8", "replace")
        now = int(time.time())
        message: dict[str, Any] = {
            "id": secrets.token_hex(6),
            "time": now,
            "expires": now + 43200,
            "event": "message",
            "topic": topic,
            "message": body,
        }
        if title := request.headers.get("title"):
            message["title"] = title
        if priority := request.headers.get("priority"):
            message["priority"] = int(priority) if priority.isdigit() else 3
        if tags := request.headers.get("tags"):
            message["tags"] = [t.strip() for t in tags.split(",") if t.strip()]
        self.messages.append(message)
        for stream in list(self._subscribers.get(topic, ())):
            try:
                stream.send_nowait(message)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers[topic].discard(stream)
        return JSONResponse(message)

    async def _stream(
        self, topic: str, render: Callable[[dict[str, Any]], str]
    ) -> AsyncIterator[str]:
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](100)
        self._subscribers.setdefault(topic, set()).add(send)
        try:
            yield render(
                {
                    "id": secrets.token_hex(6),
                    "time": int(time.time()),
                    "event": "open",
                    "topic": topic,
                }
            )
            async with receive:
                async for message in receive:
                    yield render(message)
        finally:
            self._subscribers.get(topic, set()).discard(send)
            send.close()

    async def subscribe_sse(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal

        def render(event: dict[str, Any]) -> str:
            data = json.dumps(event)
            prefix = "" if event["event"] == "message" else f"event: {event['event']}\n"
            return f"{prefix}data: {data}\n\n"

        return StreamingResponse(
            self._stream(request.path_params["topic"], render), media_type="text/event-stream"
        )

    async def subscribe_json(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return StreamingResponse(
            self._stream(request.path_params["topic"], lambda e: json.dumps(e) + "\n"),
            media_type="application/x-ndjson",
        )
