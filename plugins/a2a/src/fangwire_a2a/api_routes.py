"""The management API for external agents, under ``/api/a2a`` (and ``/api/v1/a2a``).

- ``GET /api/a2a/agents``: discovered agents ``{"agents", "items", "total", "offset", "limit"}``.
- ``GET /api/a2a/agents/{id}``: one, by id, URL or name.
- ``POST /api/a2a/discover`` ``{"url"}`` (owner): fetch its card through the outbound guard and
  register it ``pending`` → 202 ``{"id", "url", "status", "agent", "message"}`` (200 when it was
  known already).
- ``POST /api/a2a/agents/{id}/approve``: trust it → ``{"id", "url", "status": "trusted", ...}``.
- ``POST /api/a2a/send`` ``{"agent_id" | "url", "message", "session_id"?, "wait"?}``: send a task
  to a trusted agent; returns the remote task ``{"task_id", "status", "result", "task", ...}``.
- ``GET /api/a2a/tasks/{id}/status`` (``?url=`` or ``?agent_id=`` for a task not sent from
  here): ask the agent for the task's state now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fangwire.http.context import actor_of
from fangwire.http.errors import ApiError
from fangwire.http.jsonbody import read_json
from fangwire_a2a.rest import message_text

if TYPE_CHECKING:
    from fangwire_a2a.client import RemoteAgents

MAX_URL_CHARS = 2048


async def _object(request: Request) -> Mapping[str, Any]:
    data = await read_json(request)
    if not isinstance(data, Mapping):
        raise ApiError(400, "request body must be a JSON object", code="invalid_input")
    return data


def _string(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{key}: expected a non-empty string", code="invalid_input")
    return value.strip()


def _url(value: str, field: str) -> str:
    if len(value) > MAX_URL_CHARS:
        raise ApiError(
            400, f"{field}: longer than {MAX_URL_CHARS} characters", code="invalid_input"
        )
    if not value.lower().startswith(("http://", "https://")):
        raise ApiError(400, f"{field}: expected an http(s) URL", code="a2a_invalid_url")
    return value


class ManagementRoutes:
    """Endpoints of ``/api/a2a/*`` on one :class:`RemoteAgents`."""

    def __init__(self, remote: RemoteAgents) -> None:
        self.remote = remote

    async def list_agents(self, request: Request) -> Response:
        agents = [self.remote.view(row) for row in await self.remote.all()]
        return JSONResponse(
            {"agents": agents, "items": agents, "total": len(agents), "offset": 0, "limit": None}
        )

    async def get_agent(self, request: Request) -> Response:
        ref = request.path_params["agent_id"]
        row = await self.remote.find(ref)
        if row is None:
            raise ApiError(404, f"no discovered agent {ref!r}", code="not_found")
        return JSONResponse(self.remote.view(row))

    async def discover(self, request: Request) -> Response:
        data = await _object(request)
        url = _string(data, "url")
        if url is None:
            raise ApiError(400, "url: required", code="a2a_missing_url")
        agent, new = await self.remote.discover(_url(url, "url"), actor=actor_of(request))
        message = (
            f"agent {agent['name']!r} discovered; approve it before sending tasks"
            if agent["status"] == "pending"
            else f"agent {agent['name']!r} refreshed"
        )
        body = {
            "id": agent["id"],
            "url": agent["url"],
            "name": agent["name"],
            "status": agent["status"],
            "protocol": agent["protocol"],
            "agent": agent,
            "message": message,
        }
        return JSONResponse(body, status_code=202 if new else 200)

    async def approve(self, request: Request) -> Response:
        agent = await self.remote.approve(request.path_params["agent_id"], actor=actor_of(request))
        return JSONResponse(
            {
                "id": agent["id"],
                "url": agent["url"],
                "name": agent["name"],
                "status": agent["status"],
                "agent": agent,
                "message": f"agent {agent['name']!r} is trusted",
            }
        )

    async def send(self, request: Request) -> Response:
        data = await _object(request)
        agent_ref = _string(data, "agent_id")
        field = "agent_id"
        if agent_ref is None:
            url = _string(data, "url")
            if url is None:
                raise ApiError(400, "agent_id (or url): required", code="a2a_missing_url")
            agent_ref, field = _url(url, "url"), "url"
        if "message" not in data:
            raise ApiError(400, "message: required", code="a2a_missing_message")
        text = message_text(data["message"])
        context_id = _string(data, "session_id") or _string(data, "context_id")
        wait = data.get("wait", True)
        if not isinstance(wait, bool):
            raise ApiError(400, "wait: expected true or false", code="invalid_input")
        agent = await self.remote.trusted(agent_ref, field)
        task = await self.remote.send(
            agent, text, actor=actor_of(request), context_id=context_id, wait=wait
        )
        return JSONResponse(task)

    async def task_status(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        ref = request.query_params.get("agent_id") or request.query_params.get("url")
        task = await self.remote.poll(task_id, ref, actor=actor_of(request))
        return JSONResponse(task)
