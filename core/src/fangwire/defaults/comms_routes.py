"""The comms API: events (listed and streamed), topology, sending messages and tasks.

Events are persisted copies of bus events (see :mod:`fangwire.comms.events`), so the list and
the stream survive restarts and ``Last-Event-ID`` resumes from the table. The stream sends a
comment every :data:`HEARTBEAT_SECONDS`; at most :data:`MAX_STREAMS` run at once (429
``comms_stream_limit`` beyond that).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fangwire.agents import Agent, AgentCallFailed, AgentNotFound
from fangwire.channelkit.manager import ChannelNotConfigured
from fangwire.channels import ChannelError, OutboundMessage
from fangwire.comms import Comms, NoAgentAvailable
from fangwire.hookspecs import hookimpl
from fangwire.http.context import actor_of, runtime_of
from fangwire.http.errors import ApiError
from fangwire.http.jsonbody import read_json
from fangwire.http.params import int_param
from fangwire.http.routes import QueryParam, RouteSpec

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

HEARTBEAT_SECONDS = 15.0
SEND_TIMEOUT_SECONDS = 10.0
MAX_STREAMS = 64
DEFAULT_EVENTS = 100
MAX_EVENTS = 500
#: Persisted events the topology reads message edges from.
TOPOLOGY_EVENTS = 500
MAX_CONTENT_CHARS = 100_000
MAX_TITLE_CHARS = 500

_SERVICES: weakref.WeakKeyDictionary[Runtime, Comms] = weakref.WeakKeyDictionary()

_OBJECT = {"type": "object"}


def comms_of(runtime: Runtime) -> Comms:
    service = _SERVICES.get(runtime)
    if service is None:
        raise ApiError(503, "the comms service is not running", code="comms_unavailable")
    return service


def _service(request: Request) -> Comms:
    return comms_of(runtime_of(request))


# -- events ------------------------------------------------------------------------------------


async def list_events(request: Request) -> Response:
    limit = int_param(request, "limit", default=DEFAULT_EVENTS, minimum=1, maximum=MAX_EVENTS)
    events, total = await _service(request).events.recent(limit or DEFAULT_EVENTS)
    return JSONResponse({"events": events, "items": events, "total": total})


def _last_event_id(request: Request) -> int | None:
    value = request.headers.get("last-event-id")
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 19:
        raise ApiError(400, "Last-Event-ID must be a non-negative integer event id")
    return int(text)


class _StreamSlot:
    """One of the :data:`MAX_STREAMS` slots; released exactly once."""

    def __init__(self, service: Comms) -> None:
        if service.open_streams >= MAX_STREAMS:
            raise ApiError(
                429,
                f"too many comms event streams are open (limit {MAX_STREAMS})",
                code="comms_stream_limit",
                headers={"Retry-After": "5"},
            )
        service.open_streams += 1
        self._service: Comms | None = service

    async def release(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            service.open_streams -= 1


async def _stream(service: Comms, slot: _StreamSlot, since: int) -> AsyncIterator[ServerSentEvent]:
    try:
        while True:
            batch = await service.events.after(since)
            for event in batch:
                since = event["id"]
                yield ServerSentEvent(
                    data=json.dumps(event, separators=(",", ":")), id=str(event["id"])
                )
            if not batch:
                await service.events.wait_for_new(since)
    finally:
        await slot.release()


async def stream_events(request: Request) -> Response:
    service = _service(request)
    since = _last_event_id(request)
    slot = _StreamSlot(service)
    return EventSourceResponse(
        _stream(service, slot, service.events.last_id if since is None else since),
        background=BackgroundTask(slot.release),
        ping=HEARTBEAT_SECONDS,
        send_timeout=SEND_TIMEOUT_SECONDS,
        headers={"cache-control": "no-store"},
    )


# -- topology ----------------------------------------------------------------------------------


async def topology(request: Request) -> Response:
    runtime = runtime_of(request)
    service = _service(request)
    agents = await runtime.agents.all()
    nodes: list[dict[str, Any]] = [
        {"id": a.id, "name": a.name, "kind": "agent", "state": a.state, "model": a.model}
        for a in agents
    ]
    for name in sorted(runtime.channels):
        nodes.append(
            {
                "id": f"channel:{name}",
                "name": name,
                "kind": "channel",
                "configured": name in runtime.config.channels,
                "running": name in runtime.channels.runners,
            }
        )
    known = {n["id"] for n in nodes}
    edges: list[dict[str, Any]] = [
        {"from": a.parent_id, "to": a.id, "kind": "parent_child"}
        for a in agents
        if a.parent_id in known
    ]
    counts: dict[tuple[str, str], int] = {}
    events, _ = await service.events.recent(TOPOLOGY_EVENTS)
    for event in events:
        if event["kind"] not in ("agent_message", "channel.outbound", "channel.inbound"):
            continue
        pair = (event["source_id"], event["target_id"])
        if pair[0] in known and pair[1] in known and pair[0] != pair[1]:
            counts[pair] = counts.get(pair, 0) + 1
    edges += [
        {"from": src, "to": dst, "kind": "message", "count": n}
        for (src, dst), n in sorted(counts.items())
    ]
    return JSONResponse({"nodes": nodes, "edges": edges})


# -- sending -----------------------------------------------------------------------------------


def _string(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise ApiError(400, f"{key}: required", code="invalid_input")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{key}: expected a string", code="invalid_input")
    if required and not value.strip():
        raise ApiError(400, f"{key}: must not be empty", code="invalid_input")
    return value


async def _object(request: Request) -> Mapping[str, Any]:
    data = await read_json(request)
    if not isinstance(data, Mapping):
        raise ApiError(400, "request body must be a JSON object", code="invalid_input")
    return data


async def _running_agent(runtime: Runtime, name_or_id: str, field: str) -> Agent:
    agent = await runtime.agents.find(name_or_id)
    if agent is None or agent.state != "running":
        raise ApiError(404, f"{field}: no running agent {name_or_id!r}", code="not_found")
    return agent


async def send(request: Request) -> Response:
    runtime = runtime_of(request)
    service = _service(request)
    data = await _object(request)
    if "to_agent_id" in data or "from_agent_id" in data:
        to_field, content_field = "to_agent_id", "message"
        target = _string(data, "to_agent_id", required=True)
        content = _string(data, "message", required=True)
        sender = _string(data, "from_agent_id")
        to = f"agent:{target}"
    else:
        to_field, content_field = "to", "content"
        to = _string(data, "to", required=True) or ""
        content = _string(data, "content", required=True)
        sender = _string(data, "from")
    thread_id = _string(data, "thread_id")
    content = content or ""
    if len(content) > MAX_CONTENT_CHARS:
        raise ApiError(
            413, f"{content_field}: longer than {MAX_CONTENT_CHARS} characters", code="too_large"
        )
    if sender:
        agent = await runtime.agents.find(sender)
        if agent is not None:
            sender = agent.id
        elif to_field == "to_agent_id":
            raise ApiError(404, f"from_agent_id: no agent {sender!r}", code="not_found")
    sender = sender or "system"

    kind, _, rest = to.partition(":")
    if kind == "channel":
        name, sep, chat = rest.partition(":")
        if not name or not sep or not chat:
            raise ApiError(
                400, f"{to_field}: expected channel:<name>:<target>", code="invalid_input"
            )
        if name not in runtime.channels:
            raise ApiError(404, f"{to_field}: no channel {name!r}", code="not_found")
        service.guard.check(sender, f"channel:{name}:{chat}", content)
        try:
            receipt = await runtime.channels.send(
                name, chat, OutboundMessage(text=content, thread_id=thread_id), sender=sender
            )
        except ChannelNotConfigured as exc:
            raise ApiError(412, exc.reason, code="channel_not_configured") from None
        except ChannelError as exc:
            raise ApiError(502, f"channel {name!r}: {exc.reason}", code="channel_error") from None
        return JSONResponse(
            {
                "ok": True,
                "channel": receipt.channel,
                "target": receipt.target,
                "message_ids": list(receipt.message_ids),
            }
        )
    if kind != "agent" or not rest:
        raise ApiError(
            400, f"{to_field}: expected agent:<id or name> or channel:<name>:<target>",
            code="invalid_input",
        )  # fmt: skip
    target_agent = await _running_agent(runtime, rest, to_field)
    service.guard.check(sender, f"agent:{target_agent.id}", content)
    try:
        reply = await runtime.agents.message(target_agent.id, content, sender=sender)
    except AgentNotFound:
        raise ApiError(404, f"{to_field}: no running agent {rest!r}", code="not_found") from None
    except AgentCallFailed as exc:
        raise ApiError(502, exc.reason, code="agent_call_failed") from None
    body: dict[str, Any] = {
        "ok": True,
        "agent_id": target_agent.id,
        "response": reply.text,
        "input_tokens": reply.usage.input_tokens,
        "output_tokens": reply.usage.output_tokens,
        "cost_usd": reply.cost_usd,
    }
    if thread_id is not None:
        body["thread_id"] = thread_id
    return JSONResponse(body)


# -- tasks -------------------------------------------------------------------------------------


async def post_task(request: Request) -> Response:
    runtime = runtime_of(request)
    service = _service(request)
    data = await _object(request)
    title = (_string(data, "title", required=True) or "").strip()
    if len(title) > MAX_TITLE_CHARS:
        raise ApiError(
            400, f"title: longer than {MAX_TITLE_CHARS} characters", code="invalid_input"
        )
    description = _string(data, "description") or ""
    if len(description) > MAX_CONTENT_CHARS:
        raise ApiError(
            413, f"description: longer than {MAX_CONTENT_CHARS} characters", code="too_large"
        )
    assigned = _string(data, "assigned_to")
    if assigned:
        agent = await _running_agent(runtime, assigned, "assigned_to")
    else:
        try:
            agent = await service.pick_agent(f"{title}\n{description}")
        except NoAgentAvailable as exc:
            raise ApiError(409, str(exc), code="no_agent_available") from None
    task = await service.post_task(title, description, agent, created_by=actor_of(request))
    return JSONResponse(
        {
            "ok": True,
            "task_id": task["id"],
            "assigned_to": agent.id,
            "assigned_name": agent.name,
            "status": task["status"],
        },
        status_code=201,
    )


async def get_task(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    task = await _service(request).get_task(task_id)
    if task is None:
        raise ApiError(404, f"no task {task_id!r}", code="not_found")
    return JSONResponse(task)


# -- plugin ------------------------------------------------------------------------------------


@hookimpl
async def startup(runtime: Runtime) -> None:
    service = Comms(runtime)
    await service.start()
    _SERVICES[runtime] = service


@hookimpl
async def shutdown(runtime: Runtime) -> None:
    service = _SERVICES.pop(runtime, None)
    if service is not None:
        await service.stop()


_SEND_SCHEMA = {
    "type": "object",
    "properties": {
        "to": {"type": "string", "description": "agent:<id or name> or channel:<name>:<target>"},
        "content": {"type": "string"},
        "from": {"type": "string"},
        "from_agent_id": {"type": "string"},
        "to_agent_id": {"type": "string"},
        "message": {"type": "string"},
        "thread_id": {"type": "string"},
    },
}
_TASK_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "description": {"type": "string"},
        "assigned_to": {"type": "string"},
    },
    "required": ["title"],
}


@hookimpl
def register_routes(register: Callable[[RouteSpec], None]) -> None:
    tags = ("comms",)
    register(
        RouteSpec(
            "/comms/events",
            list_events,
            name="comms_events",
            summary="Recent communication events, newest first",
            tags=tags,
            query=(QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS}),),
            response_model=_OBJECT,
        )
    )
    register(
        RouteSpec(
            "/comms/events/stream",
            stream_events,
            name="comms_events_stream",
            summary="Server-sent events of communication events as they are recorded",
            tags=tags,
            cost=5,
            response_media_type="text/event-stream",
            response_model={"type": "string"},
            responses={429: "Too many streams are open"},
        )
    )
    register(
        RouteSpec(
            "/comms/topology",
            topology,
            name="comms_topology",
            summary="Agents and channels as nodes; parent/child and message routes as edges",
            tags=tags,
            response_model=_OBJECT,
        )
    )
    register(
        RouteSpec(
            "/comms/send",
            send,
            methods=("POST",),
            name="comms_send",
            summary="Deliver a message to an agent or through a channel",
            tags=tags,
            request_model=_SEND_SCHEMA,
            response_model=_OBJECT,
            responses={
                404: "Unknown agent or channel",
                409: "Loop detected",
                502: "The agent or channel failed",
            },
        )
    )
    register(
        RouteSpec(
            "/comms/task",
            post_task,
            methods=("POST",),
            name="comms_task",
            summary="Dispatch a task to an agent (chosen by skills when not given)",
            tags=tags,
            request_model=_TASK_SCHEMA,
            response_model=_OBJECT,
            responses={404: "Unknown assignee", 409: "No running agent"},
        )
    )
    register(
        RouteSpec(
            "/comms/tasks/{task_id}",
            get_task,
            name="comms_task_get",
            summary="One dispatched task",
            tags=tags,
            response_model=_OBJECT,
            responses={404: "No such task"},
        )
    )
