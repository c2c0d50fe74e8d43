"""``GET /api/logs/stream``: the daemon's log records as server-sent events.

Each event is ``id: <seq>`` and ``data: <json record>``. A comment line is sent every
:data:`HEARTBEAT_SECONDS` so proxies keep the connection open and dead clients are noticed.
``level`` (default ``info``) and ``filter`` (case-insensitive substring) select records;
``Last-Event-ID`` resumes after a disconnect with the records still held in memory. At most
``http.max_log_streams`` streams run at once; beyond that the answer is 429.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from fangwire.hookspecs import hookimpl
from fangwire.http.context import runtime_of
from fangwire.http.errors import ApiError
from fangwire.http.routes import QueryParam, RouteSpec
from fangwire.logs import LogHub, Subscription, TooManySubscribers, level_number

HEARTBEAT_SECONDS = 15.0
#: Records sent at the start of a new stream (not a resume), for context.
INITIAL_BACKLOG = 50
#: A client that does not read an event within this time is disconnected.
SEND_TIMEOUT_SECONDS = 10.0
MAX_FILTER_LENGTH = 200


def _last_event_id(request: Request) -> int | None:
    value = request.headers.get("last-event-id")
    if value is None or not value.strip():
        return None
    try:
        seq = int(value)
    except ValueError:
        raise ApiError(400, "Last-Event-ID must be an integer event id") from None
    if seq < 0:
        raise ApiError(400, "Last-Event-ID must not be negative")
    return seq


def _open(hub: LogHub, request: Request) -> Subscription:
    level = request.query_params.get("level", "info")
    contains = request.query_params.get("filter") or None
    try:
        level_number(level)
    except ValueError as exc:
        raise ApiError(400, f"level: {exc}") from None
    if contains is not None and len(contains) > MAX_FILTER_LENGTH:
        raise ApiError(400, f"filter: longer than {MAX_FILTER_LENGTH} characters")
    since = _last_event_id(request)
    try:
        if since is not None:
            return hub.subscribe(level, contains, since=since)
        return hub.subscribe(level, contains, recent=INITIAL_BACKLOG)
    except TooManySubscribers:
        raise ApiError(
            429,
            "too many log streams are open; close one or raise http.max_log_streams",
            code="too_many_streams",
            headers={"Retry-After": "5"},
        ) from None


async def _events(subscription: Subscription) -> AsyncIterator[ServerSentEvent]:
    async with subscription:
        async for view in subscription:
            yield ServerSentEvent(
                data=json.dumps(view.to_json(include_seq=False), separators=(",", ":")),
                id=str(view.seq),
            )


async def stream_logs(request: Request) -> Response:
    subscription = _open(runtime_of(request).log_hub, request)
    return EventSourceResponse(
        _events(subscription),
        # Also close when the body never starts (the generator's own cleanup would not run).
        background=BackgroundTask(subscription.aclose),
        ping=HEARTBEAT_SECONDS,
        send_timeout=SEND_TIMEOUT_SECONDS,
        headers={"cache-control": "no-store"},
    )


@hookimpl
def register_routes(register: Callable[[RouteSpec], None]) -> None:
    register(
        RouteSpec(
            "/logs/stream",
            stream_logs,
            name="logs_stream",
            summary="Server-sent events of the daemon's structured log records",
            tags=("logs",),
            cost=5,
            response_media_type="text/event-stream",
            response_model={"type": "string"},
            query=(
                QueryParam(
                    "level",
                    {"type": "string", "enum": ["debug", "info", "warning", "error", "critical"]},
                    "lowest level to send (default info)",
                ),
                QueryParam(
                    "filter",
                    {"type": "string", "maxLength": MAX_FILTER_LENGTH},
                    "only records containing this text",
                ),
            ),
        )
    )
