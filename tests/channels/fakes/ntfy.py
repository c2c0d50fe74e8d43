"""A local fake of ntfy's documented HTTP API (publish and the JSON subscription stream).

Served by uvicorn on 127.0.0.1 in the tests (``fangwire.testing.live.live_server``). What it
follows, and checks like the real server does:

- Publishing, docs.ntfy.sh/publish and ``docs/api/openapi.yaml`` of binwiederhier/ntfy:
  ``POST``/``PUT /<topic>`` with the message as the body; ``X-Title``/``Title``/``t``,
  ``X-Tags``/``Tags``/``ta``, ``X-Priority``/``Priority``/``p`` headers (priority 1-5 or
  min/low/default/high/max/urgent, else 400 code 40007); topic names
  ``^[-_A-Za-z0-9]{1,64}$``; the answer is the message JSON (``id``, ``time``, ``expires``,
  ``event: "message"``, ``topic``, ``message``, ...). Message ids are 12 characters.
- The body rule of ``handlePublishBody`` (server/server.go): a body of at most 4096 bytes that
  is valid UTF-8 is the message (trimmed); anything larger becomes an attachment
  (``attachment.txt``, message "You received a file: attachment.txt") when attachments are
  enabled, else 400 (40014 "attachments not allowed"); an attachment over the file size limit
  is 413 (41301).
- Access control (docs.ntfy.sh/config/#access-control, publish/#access-tokens):
  ``Authorization: Bearer tk_...``; an unknown token is 401 (40101), a protected topic without
  the right permission is 403 (40301).
- Rate limiting: past the configured number of publishes, 429 (42901 "limit reached: too many
  requests"); this fake adds ``Retry-After`` with the configured delay.
- Subscribing, docs.ntfy.sh/subscribe/api: ``GET /<topic>/json`` streams NDJSON
  (``application/x-ndjson``), ``GET /<topic>/sse`` the same events as server-sent events
  (``data: <json>``, preceded by ``event: <name>`` for events other than messages): an
  ``open`` event first, then the cached messages ``since=``
  selects, then live ``message`` events and a ``keepalive`` event every keepalive interval.
  ``since`` takes ``all``, ``none`` (the default), ``latest``, a message id (messages after
  it), a Unix timestamp or a duration (``10m``); anything else is 400 (40008). ``poll=1``
  sends the cached messages (``since=all`` by default) and ends.
- Errors are the server's ``errHTTP`` JSON (server/errors.go):
  ``{"code": 40101, "http": 401, "error": "unauthorized", "link": "..."}``.

:meth:`FakeNtfy.drop_subscribers` ends every open stream (the server going away), so tests
can check that a subscriber resumes with ``since=<last id>`` without loss or duplicates.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import string
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MESSAGE_LIMIT = 4096
TOPIC = re.compile(r"[-_A-Za-z0-9]{1,64}")
MESSAGE_ID = re.compile(r"[A-Za-z0-9]{12}")
DURATION = re.compile(r"(\d+)(s|m|h|d)")
PRIORITIES = {"min": 1, "low": 2, "default": 3, "high": 4, "max": 5, "urgent": 5}
_ALPHABET = string.ascii_letters + string.digits


def _error(code: int, message: str, link: str = "") -> JSONResponse:
    body: dict[str, Any] = {"code": code, "http": code // 100, "error": message}
    if link:
        body["link"] = link
    return JSONResponse(body, status_code=code // 100)


def _json_line(event: dict[str, Any]) -> str:
    return json.dumps(event) + "\n"


def _sse_event(event: dict[str, Any]) -> str:
    name = "" if event["event"] == "message" else f"event: {event['event']}\n"
    return f"{name}data: {json.dumps(event)}\n\n"


def _header(request: Request, *names: str) -> str | None:
    for name in names:
        value = request.headers.get(name) or request.query_params.get(name.lower())
        if value:
            return value
    return None


class FakeNtfy:
    """State of one fake ntfy server. Configure with the attributes, then serve ``app``."""

    def __init__(
        self,
        *,
        tokens: dict[str, set[str]] | None = None,
        protected: set[str] | None = None,
        attachments: bool = True,
        attachment_limit: int = 15 * 1024 * 1024,
        keepalive: float = 0.5,
        publish_limit: int | None = None,
        retry_after: int = 2,
    ) -> None:
        #: token -> topics it may read and write.
        self.tokens = tokens or {}
        #: topics that need a token (everything else is open, as ntfy.sh's defaults).
        self.protected = protected or set()
        self.attachments = attachments
        self.attachment_limit = attachment_limit
        self.keepalive = keepalive
        #: publishes accepted before every further one is refused with 429.
        self.publish_limit = publish_limit
        self.retry_after = retry_after
        self.messages: list[dict[str, Any]] = []
        #: publish requests seen, refused and stalled ones included.
        self.publish_attempts = 0
        self._throttled: list[float] = []
        self._stalled = 0
        self.publishes: list[dict[str, Any]] = []
        #: every streaming subscription: its topic and ``since``.
        self.subscriptions: list[dict[str, str]] = []
        self._streams: list[MemoryObjectSendStream[dict[str, Any] | None]] = []
        self._count = 0
        self.app = Starlette(
            routes=[
                Route("/{topic}/json", self.subscribe, methods=["GET"]),
                Route("/{topic}/sse", self.subscribe_sse, methods=["GET"]),
                Route("/{topic}", self.publish, methods=["POST", "PUT"]),
            ]
        )

    # -- control ---------------------------------------------------------------------------------

    def drop_subscribers(self) -> None:
        """End every open subscription stream, as a restarting server would."""
        streams, self._streams = self._streams, []
        for stream in streams:
            stream.close()

    def throttle_next(self, retry_after: float) -> None:
        """Refuse the next publish with 429 and ``Retry-After: <retry_after>``."""
        self._throttled.append(retry_after)

    def stall_next(self) -> None:
        """Do not answer the next publish for a long while."""
        self._stalled += 1

    @property
    def subscriber_count(self) -> int:
        return len(self._streams)

    def inject(self, topic: str, text: str, **fields: Any) -> dict[str, Any]:
        """Publish as some other client would (no HTTP), returning the message."""
        return self._store(self._message(topic, text, **fields))

    # -- access ----------------------------------------------------------------------------------

    def _authorize(self, request: Request, topic: str) -> JSONResponse | None:
        auth = request.headers.get("authorization")
        token = None
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "bearer" or value not in self.tokens:
                return _error(40101, "unauthorized", "https://ntfy.sh/docs/publish/#authentication")
            token = value
        if topic in self.protected and (token is None or topic not in self.tokens[token]):
            return _error(40301, "forbidden", "https://ntfy.sh/docs/publish/#authentication")
        return None

    # -- publish ---------------------------------------------------------------------------------

    def _message(self, topic: str, text: str, **fields: Any) -> dict[str, Any]:
        now = int(time.time())
        message = {
            "id": self._new_id(),
            "time": now,
            "expires": now + 43200,
            "event": "message",
            "topic": topic,
            "message": text,
        }
        message.update({k: v for k, v in fields.items() if v})
        return message

    def _store(self, message: dict[str, Any]) -> dict[str, Any]:
        self.messages.append(message)
        for stream in list(self._streams):
            with contextlib.suppress(
                anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
            ):
                stream.send_nowait(message)
        return message

    async def publish(self, request: Request) -> Response:
        self.publish_attempts += 1
        if self._stalled:
            self._stalled -= 1
            await anyio.sleep(5)
        topic = request.path_params["topic"]
        if not TOPIC.fullmatch(topic):
            return _error(40009, "invalid request: topic invalid")
        if (denied := self._authorize(request, topic)) is not None:
            return denied
        if self._throttled:
            response = _error(42901, "limit reached: too many requests")
            response.headers["retry-after"] = str(self._throttled.pop(0))
            return response
        if self.publish_limit is not None and self._count >= self.publish_limit:
            response = _error(
                42901,
                "limit reached: too many requests",
                "https://ntfy.sh/docs/publish/#limitations",
            )
            response.headers["retry-after"] = str(self.retry_after)
            return response
        fields: dict[str, Any] = {}
        if title := _header(request, "X-Title", "Title", "ti", "t"):
            fields["title"] = title
        if tags := _header(request, "X-Tags", "Tags", "Tag", "ta"):
            fields["tags"] = [t.strip() for t in tags.split(",") if t.strip()]
        if priority := _header(request, "X-Priority", "Priority", "prio", "p"):
            value = PRIORITIES.get(priority.lower()) or (
                int(priority) if priority.isdigit() and 1 <= int(priority) <= 5 else None
            )
            if value is None:
                return _error(40007, "invalid priority parameter")
            fields["priority"] = value
        body = await request.body()
        try:
            text = body.decode("utf-8") if len(body) <= MESSAGE_LIMIT else None
        except UnicodeDecodeError:
            text = None
        if text is not None:
            message = self._message(topic, text.strip() or "triggered", **fields)
        else:
            if not self.attachments:
                return _error(40014, "invalid request: attachments not allowed")
            if len(body) > self.attachment_limit:
                return _error(41301, "attachment too large, or bandwidth limit reached")
            message = self._message(topic, "You received a file: attachment.txt", **fields)
            message["attachment"] = {
                "name": "attachment.txt",
                "type": "text/plain; charset=utf-8",
                "size": len(body),
                "expires": message["time"] + 10800,
                "url": f"{request.base_url}file/{message['id']}.txt",
            }
        self._count += 1
        self.publishes.append(
            {
                "headers": dict(request.headers),
                "body": body,
                "id": message["id"],
                "text": message["message"],
            }
        )
        return JSONResponse(self._store(message))

    # -- subscribe -------------------------------------------------------------------------------

    def _since(self, since: str | None, poll: bool) -> list[dict[str, Any]] | None:
        if not since:
            return list(self.messages) if poll else []
        if since == "all":
            return list(self.messages)
        if since == "none":
            return []
        if since == "latest":
            return self.messages[-1:]
        if MESSAGE_ID.fullmatch(since):
            ids = [m["id"] for m in self.messages]
            return self.messages[ids.index(since) + 1 :] if since in ids else list(self.messages)
        if since.isdigit():
            return [m for m in self.messages if m["time"] >= int(since)]
        if match := DURATION.fullmatch(since):
            seconds = int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
            return [m for m in self.messages if m["time"] >= time.time() - seconds]
        return None

    async def subscribe_sse(self, request: Request) -> Response:
        return await self.subscribe(request, sse=True)

    async def subscribe(self, request: Request, *, sse: bool = False) -> Response:
        topic = request.path_params["topic"]
        if not TOPIC.fullmatch(topic):
            return _error(40009, "invalid request: topic invalid")
        if (denied := self._authorize(request, topic)) is not None:
            return denied
        poll = request.query_params.get("poll") in ("1", "true", "yes")
        since = request.query_params.get("since")
        backlog = self._since(since, poll)
        if backlog is None:
            return _error(40008, "invalid since parameter")
        backlog = [m for m in backlog if m["topic"] == topic]
        if poll:
            lines = "".join(json.dumps(m) + "\n" for m in backlog)
            return Response(lines, media_type="application/x-ndjson; charset=utf-8")
        self.subscriptions.append({"topic": topic, "since": since or ""})
        render = _sse_event if sse else _json_line
        send, receive = anyio.create_memory_object_stream[dict[str, Any] | None](100)
        self._streams.append(send)

        async def events() -> AsyncIterator[str]:
            try:
                opened = {"id": self._new_id(), "time": int(time.time()), "event": "open"}
                yield render({**opened, "topic": topic})
                for message in backlog:
                    yield render(message)
                async with receive:
                    while True:
                        message: dict[str, Any] | None = None
                        with anyio.move_on_after(self.keepalive):
                            try:
                                message = await receive.receive()
                            except anyio.EndOfStream:
                                return
                        if message is not None:
                            if message["topic"] == topic:
                                yield render(message)
                            continue
                        keepalive = {
                            "id": self._new_id(),
                            "time": int(time.time()),
                            "event": "keepalive",
                            "topic": topic,
                        }
                        yield render(keepalive)
            finally:
                send.close()
                if send in self._streams:
                    self._streams.remove(send)

        media_type = "text/event-stream" if sse else "application/x-ndjson; charset=utf-8"
        return StreamingResponse(events(), media_type=media_type)

    @staticmethod
    def _new_id() -> str:
        return "".join(secrets.choice(_ALPHABET) for _ in range(12))
