"""A local fake of Gotify's documented REST and WebSocket API.

Served by uvicorn on 127.0.0.1 in the tests. What it follows (gotify/server ``docs/spec.json``,
the Swagger 2.0 description of the REST API, version 2.0.2):

- Authentication: the token travels in ``X-Gotify-Key``, the ``token`` query parameter or
  ``Authorization: Bearer <token>``. There are two kinds: an application token (``A...``)
  may only ``POST /message``; a client token (``C...``) may only read and manage
  (``GET /application``, ``GET /message``, ``GET /current/user``, ``GET /stream``). Anything
  else is 401 with the documented ``Error`` model: ``{"error": "Unauthorized",
  "errorCode": 401, "errorDescription": "you need to provide a valid access token or user
  credentials to access this api"}``.
- ``POST /message`` takes ``MessageExternal`` JSON (``message`` required, else 400;
  ``title`` defaults to the application's name, ``priority`` to its default priority) and
  answers with the stored message: ``{id, appid, message, title, priority, date, extras?}``.
- ``GET /message?limit=`` (1-200, default 100) answers ``PagedMessages``, newest first;
  ``GET /application`` lists ``Application`` objects ``{id, token, name, description,
  internal, image, defaultPriority}``.
- ``GET /stream`` is a WebSocket that pushes each new message as ``MessageExternal`` JSON
  text frames; the client token is checked before the upgrade (401 response otherwise).

:meth:`FakeGotify.drop_streams` closes every open stream (the server going away);
:meth:`FakeGotify.fail_next` makes the next publishes answer a 5xx as a proxy in front of a
busy server would.
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

UNAUTHORIZED = "you need to provide a valid access token or user credentials to access this api"


def _error(status: int, error: str, description: str) -> JSONResponse:
    body = {"error": error, "errorCode": status, "errorDescription": description}
    return JSONResponse(body, status_code=status)


class FakeGotify:
    def __init__(self) -> None:
        self.apps: list[dict[str, Any]] = []
        self.clients: dict[str, str] = {}
        self.messages: list[dict[str, Any]] = []
        self.failures: list[tuple[int, dict[str, str]]] = []
        #: publish requests seen, refused and stalled ones included.
        self.publish_attempts = 0
        self.stalled = 0
        self._streams: list[MemoryObjectSendStream[dict[str, Any]]] = []
        self.app = Starlette(
            routes=[
                Route("/message", self.create_message, methods=["POST"]),
                Route("/message", self.list_messages, methods=["GET"]),
                Route("/application", self.list_applications, methods=["GET"]),
                Route("/current/user", self.current_user, methods=["GET"]),
                WebSocketRoute("/stream", self.stream),
            ]
        )

    # -- setup and control ----------------------------------------------------------------------

    def add_app(self, name: str, *, default_priority: int = 0) -> dict[str, Any]:
        app = {
            "id": len(self.apps) + 1,
            "token": "A" + secrets.token_urlsafe(10),
            "name": name,
            "description": "",
            "internal": False,
            "image": "static/defaultapp.png",
            "defaultPriority": default_priority,
        }
        self.apps.append(app)
        return app

    def add_client(self, name: str) -> str:
        token = "C" + secrets.token_urlsafe(10)
        self.clients[token] = name
        return token

    def fail_next(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.failures.append((status, headers or {}))

    def drop_streams(self) -> None:
        streams, self._streams = self._streams, []
        for stream in streams:
            stream.close()

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    # -- auth -----------------------------------------------------------------------------------

    @staticmethod
    def _token(connection: HTTPConnection) -> str | None:
        token = connection.headers.get("x-gotify-key") or connection.query_params.get("token")
        auth = connection.headers.get("authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:]
        return token

    def _app(self, connection: HTTPConnection) -> dict[str, Any] | None:
        token = self._token(connection)
        return next((a for a in self.apps if a["token"] == token), None)

    def _client(self, connection: HTTPConnection) -> bool:
        return self._token(connection) in self.clients

    # -- REST -----------------------------------------------------------------------------------

    async def create_message(self, request: Request) -> Response:
        self.publish_attempts += 1
        if self.stalled:
            self.stalled -= 1
            await anyio.sleep(5)
        app = self._app(request)
        if app is None:
            return _error(401, "Unauthorized", UNAUTHORIZED)
        if self.failures:
            status, headers = self.failures.pop(0)
            response = _error(status, HTTPStatus(status).phrase, "busy, try again later")
            response.headers.update(headers)
            return response
        try:
            data = await request.json()
        except ValueError:
            return _error(400, "Bad Request", "invalid JSON body")
        text = data.get("message") if isinstance(data, dict) else None
        if not isinstance(text, str) or not text:
            return _error(400, "Bad Request", "Field 'message' is required")
        priority = data.get("priority", app["defaultPriority"])
        if not isinstance(priority, int):
            return _error(400, "Bad Request", "Field 'priority' must be an integer")
        message = {
            "id": len(self.messages) + 1,
            "appid": app["id"],
            "message": text,
            "title": data.get("title") or app["name"],
            "priority": priority,
            "date": datetime.now(UTC).isoformat(),
        }
        if isinstance(data.get("extras"), dict):
            message["extras"] = data["extras"]
        self.messages.append(message)
        for stream in list(self._streams):
            with contextlib.suppress(
                anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
            ):
                stream.send_nowait(message)
        return JSONResponse(message)

    async def list_messages(self, request: Request) -> Response:
        if not self._client(request):
            return _error(401, "Unauthorized", UNAUTHORIZED)
        limit = request.query_params.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= 200:
            return _error(400, "Bad Request", "limit must be between 1 and 200")
        messages = list(reversed(self.messages))[: int(limit)]
        paging = {"size": len(messages), "since": 0, "limit": int(limit)}
        return JSONResponse({"messages": messages, "paging": paging})

    async def list_applications(self, request: Request) -> Response:
        if not self._client(request):
            return _error(401, "Unauthorized", UNAUTHORIZED)
        return JSONResponse(self.apps)

    async def current_user(self, request: Request) -> Response:
        if not self._client(request):
            return _error(401, "Unauthorized", UNAUTHORIZED)
        return JSONResponse({"id": 1, "name": "admin", "admin": True})

    # -- WebSocket ------------------------------------------------------------------------------

    async def stream(self, websocket: WebSocket) -> None:
        if not self._client(websocket):
            await websocket.send_denial_response(_error(401, "Unauthorized", UNAUTHORIZED))
            return
        await websocket.accept()
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](100)
        self._streams.append(send)
        try:
            async with anyio.create_task_group() as tg:

                async def watch_client() -> None:
                    try:
                        while True:
                            await websocket.receive_text()
                    except WebSocketDisconnect:
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(watch_client)
                async with receive:
                    async for message in receive:
                        await websocket.send_json(message)
                await websocket.close(code=1001)
                tg.cancel_scope.cancel()
        finally:
            send.close()
            if send in self._streams:
                self._streams.remove(send)
