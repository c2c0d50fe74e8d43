"""The agents API: list, spawn, inspect, kill, and message agents."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fangwire.agents import (
    AgentCallFailed,
    AgentLimits,
    AgentNotFound,
    AgentSpec,
    CapabilityDenied,
)
from fangwire.agents.registry import spec_from_manifest
from fangwire.auth import Role
from fangwire.config import format_structure_error
from fangwire.hookspecs import hookimpl
from fangwire.http.context import actor_of, runtime_of
from fangwire.http.errors import ApiError
from fangwire.http.jsonbody import read_json
from fangwire.http.routes import RouteSpec

MAX_MESSAGE_CHARS = 100_000


@attrs.frozen
class SpawnBody:
    """Spawn an agent (or send ``{"manifest_toml": "..."}``)."""

    name: str
    provider: str
    model: str
    system_prompt: str = ""
    tools: list[str] = attrs.field(factory=list)
    skills: list[str] = attrs.field(factory=list)
    limits: AgentLimits = attrs.field(factory=AgentLimits)
    parent_id: str | None = None


@attrs.frozen
class MessageBody:
    message: str


def _structure(request: Request, data: Any, model: type[Any]) -> Any:
    if not isinstance(data, Mapping):
        raise ApiError(400, "request body must be a JSON object", code="invalid_input")
    try:
        return runtime_of(request).converter.structure(dict(data), model)
    except Exception as exc:
        problems = format_structure_error(exc).replace("\n", "; ")
        raise ApiError(400, f"invalid request body: {problems}", code="invalid_input") from None


async def list_agents(request: Request) -> Response:
    agents = await runtime_of(request).agents.all()
    return JSONResponse({"agents": [a.to_json() for a in agents], "total": len(agents)})


async def spawn_agent(request: Request) -> Response:
    data = await read_json(request)
    if isinstance(data, Mapping) and "manifest_toml" in data:
        text = data["manifest_toml"]
        if not isinstance(text, str):
            raise ApiError(400, "manifest_toml: expected a string", code="invalid_input")
        try:
            data = spec_from_manifest(text)
        except ValueError as exc:
            raise ApiError(400, str(exc), code="invalid_input") from None
    body: SpawnBody = _structure(request, data, SpawnBody)
    if not body.name.strip() or len(body.name) > 100:
        raise ApiError(400, "name: must be 1-100 characters", code="invalid_input")
    spec = AgentSpec(
        name=body.name.strip(),
        provider=body.provider,
        model=body.model,
        system_prompt=body.system_prompt,
        tools=tuple(body.tools),
        skills=tuple(body.skills),
        limits=body.limits,
    )
    runtime = runtime_of(request)
    try:
        agent = await runtime.agents.spawn(spec, actor=actor_of(request), parent_id=body.parent_id)
    except CapabilityDenied as exc:
        raise ApiError(403, str(exc), code="capability_denied") from None
    except AgentNotFound as exc:
        raise ApiError(404, f"parent_id: {exc}", code="not_found") from None
    except ValueError as exc:
        raise ApiError(400, str(exc), code="invalid_input") from None
    return JSONResponse(agent.to_json(), status_code=201)


async def get_agent(request: Request) -> Response:
    agent = await runtime_of(request).agents.get(request.path_params["agent_id"])
    if agent is None:
        raise ApiError(404, f"no agent {request.path_params['agent_id']!r}", code="not_found")
    return JSONResponse(agent.to_json())


async def kill_agent(request: Request) -> Response:
    try:
        agent = await runtime_of(request).agents.kill(
            request.path_params["agent_id"], actor=actor_of(request)
        )
    except AgentNotFound as exc:
        raise ApiError(404, str(exc), code="not_found") from None
    return JSONResponse({"status": "terminated", "agent": agent.to_json()})


async def message_agent(request: Request) -> Response:
    body: MessageBody = _structure(request, await read_json(request), MessageBody)
    if not body.message.strip():
        raise ApiError(400, "message: must not be empty", code="invalid_input")
    if len(body.message) > MAX_MESSAGE_CHARS:
        raise ApiError(413, f"message: longer than {MAX_MESSAGE_CHARS} characters")
    try:
        reply = await runtime_of(request).agents.message(
            request.path_params["agent_id"], body.message, sender=actor_of(request)
        )
    except AgentNotFound as exc:
        raise ApiError(404, str(exc), code="not_found") from None
    except AgentCallFailed as exc:
        raise ApiError(502, f"the model call failed: {exc.reason}", code="model_error") from None
    return JSONResponse(
        {
            "response": reply.text,
            "input_tokens": reply.usage.input_tokens,
            "output_tokens": reply.usage.output_tokens,
            "cost_usd": round(reply.cost_usd, 6),
            "latency_ms": round(reply.latency_ms, 3),
            "model": reply.model,
            "provider": reply.provider,
        }
    )


@hookimpl
def register_routes(register: Callable[[RouteSpec], None]) -> None:
    tags = ("agents",)
    register(RouteSpec("/agents", list_agents, name="agents_list", summary="Agents", tags=tags,
                       response_model={"type": "object"}))  # fmt: skip
    register(
        RouteSpec(
            "/agents", spawn_agent, methods=("POST",), name="agents_spawn", tags=tags,
            summary="Spawn an agent (fields, or a manifest_toml)", cost=50,
            request_model=SpawnBody, response_model={"type": "object"},
            responses={403: "Exceeds the parent's capabilities", 404: "Unknown parent"},
        )
    )  # fmt: skip
    register(RouteSpec("/agents/{agent_id}", get_agent, name="agents_get", tags=tags,
                       summary="One agent", responses={404: "Unknown agent"},
                       response_model={"type": "object"}))  # fmt: skip
    register(RouteSpec("/agents/{agent_id}", kill_agent, methods=("DELETE",), name="agents_kill",
                       tags=tags, summary="Terminate an agent",
                       responses={404: "Unknown agent"}))  # fmt: skip
    register(
        RouteSpec(
            "/agents/{agent_id}/message", message_agent, methods=("POST",),
            name="agents_message", tags=tags, role=Role.USER, cost=30,
            summary="Send a message; returns the answer and its token usage",
            request_model=MessageBody, response_model={"type": "object"},
            responses={404: "Unknown agent", 413: "Message too long",
                       502: "The model call failed"},
        )
    )  # fmt: skip
