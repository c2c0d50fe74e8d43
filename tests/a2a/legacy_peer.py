"""A local fake of an A2A 0.1 agent (the shapes of the 0.1.0 specification, which LibreFang's
card also follows): the card at ``/.well-known/agent.json`` without ``protocolVersion``, and
JSON-RPC ``tasks/send`` / ``tasks/get`` at the card's ``url``. It checks what a 0.1 server
checks — the JSON-RPC envelope, the method, a client-chosen task ``id``, a ``user`` message with
``type``-discriminated text parts — and answers with 0.1 task objects."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def _error(id_: Any, code: int, message: str) -> JSONResponse:
    return JSONResponse({"jsonrpc": "2.0", "id": id_, "error": {"code": code, "message": message}})


def legacy_app(base_url: str) -> Starlette:
    tasks: dict[str, dict[str, Any]] = {}
    app = Starlette()
    app.state.calls = []

    async def card(request: Request) -> Response:
        return JSONResponse(
            {
                "name": "legacy agent",
                "description": "speaks A2A 0.1",
                "url": f"{base_url}/a2a",
                "version": "0.0.1",
                "capabilities": {
                    "streaming": False,
                    "pushNotifications": False,
                    "stateTransitionHistory": True,
                },
                "skills": [{"id": "chat", "name": "chat", "description": "talks"}],
                "defaultInputModes": ["text"],
                "defaultOutputModes": ["text"],
            }
        )

    async def rpc(request: Request) -> Response:
        body = await request.json()
        if not isinstance(body, dict) or body.get("jsonrpc") != "2.0" or "id" not in body:
            return _error(None, -32600, "invalid request")
        id_, method, params = body["id"], body.get("method"), body.get("params")
        app.state.calls.append(method)
        if not isinstance(params, dict):
            return _error(id_, -32602, "params must be an object")
        if method == "tasks/get":
            task = tasks.get(params.get("id", ""))
            return (
                _error(id_, -32001, "task not found")
                if task is None
                else JSONResponse({"jsonrpc": "2.0", "id": id_, "result": task})
            )
        if method != "tasks/send":
            return _error(id_, -32601, f"method {method!r} not found")
        message = params.get("message")
        task_id = params.get("id")
        if not isinstance(task_id, str) or not task_id:
            return _error(id_, -32602, "params.id: the client chooses the task id")
        if not isinstance(message, dict) or message.get("role") != "user":
            return _error(id_, -32602, "params.message: a user message is required")
        parts = message.get("parts")
        if not isinstance(parts, list) or not parts:
            return _error(id_, -32602, "params.message.parts: required")
        if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in parts):
            return _error(id_, -32602, "params.message.parts: text parts need type 'text'")
        text = " ".join(p["text"] for p in parts)
        task = {
            "id": task_id,
            "sessionId": params.get("sessionId", "s-1"),
            "status": {"state": "completed", "timestamp": "2026-01-01T00:00:00Z"},
            "artifacts": [{"parts": [{"type": "text", "text": f"legacy: {text}"}]}],
            "history": [message],
        }
        tasks[task_id] = task
        return JSONResponse({"jsonrpc": "2.0", "id": id_, "result": task})

    app.router.routes.extend(
        [Route("/.well-known/agent.json", card), Route("/a2a", rpc, methods=["POST"])]
    )
    return app
