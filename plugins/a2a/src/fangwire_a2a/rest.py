"""The document's REST routes for served tasks: ``/a2a/tasks/send``, ``/a2a/tasks/{id}``,
``/a2a/tasks/{id}/cancel``.

They run on the same request handler and task store as the JSON-RPC binding, so a task sent
here can be read or cancelled over JSON-RPC and the other way round.

``POST /a2a/tasks/send`` accepts the document's ``{"agent_id", "message": {"role", "parts":
[{"text"}]}}`` (parts with or without ``"type": "text"``), the reference's JSON-RPC-like
``{"params": {"agentId", "message", "sessionId"}}``, and a plain string as ``message``. The task
starts at once; the call waits up to ``[a2a] send_wait_seconds`` (or ``"wait_seconds"`` in the
body, 0 to return at once) for it to finish: 200 with the finished task, else 202 with the task
as it is (``submitted``/``working``), to be polled with ``GET /a2a/tasks/{id}``.

Task views: ``{"task_id", "id", "agent_id", "context_id", "status", "result", "error",
"task"}`` where ``status`` is ``submitted``, ``working``, ``completed``, ``failed``,
``cancelled``, ``rejected``, ``input-required`` or ``auth-required``; ``result`` is the agent's
answer as ``{"role": "agent", "parts": [{"type": "text", "text"}]}`` once completed; ``error``
is the reason of a failed task; ``task`` is the full A2A 1.0 task.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    Task,
    TaskState,
)
from a2a.utils.errors import A2AError, TaskNotCancelableError, TaskNotFoundError
from google.protobuf.json_format import MessageToDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fangwire.http.errors import ApiError
from fangwire.http.jsonbody import read_json
from fangwire_a2a.server import caller_context
from fangwire_a2a.taskstore import SETTLED_STATES

if TYPE_CHECKING:
    from fangwire_a2a.server import A2AServer

MAX_TEXT_CHARS = 100_000
MAX_WAIT_SECONDS = 300.0

STATUS_NAMES: Mapping[int, str] = {
    TaskState.TASK_STATE_SUBMITTED: "submitted",
    TaskState.TASK_STATE_WORKING: "working",
    TaskState.TASK_STATE_COMPLETED: "completed",
    TaskState.TASK_STATE_FAILED: "failed",
    TaskState.TASK_STATE_CANCELED: "cancelled",
    TaskState.TASK_STATE_REJECTED: "rejected",
    TaskState.TASK_STATE_INPUT_REQUIRED: "input-required",
    TaskState.TASK_STATE_AUTH_REQUIRED: "auth-required",
}


def status_name(state: int) -> str:
    return STATUS_NAMES.get(state, "unknown")


def _texts(parts: Any) -> list[str]:
    return [p.text for p in parts if p.HasField("text")]


def task_view(task: Task, agent_id: str) -> dict[str, Any]:
    state = task.status.state
    result = None
    if state == TaskState.TASK_STATE_COMPLETED:
        texts = [t for artifact in task.artifacts for t in _texts(artifact.parts)]
        if not texts and task.status.HasField("message"):
            texts = _texts(task.status.message.parts)
        result = {"role": "agent", "parts": [{"type": "text", "text": t} for t in texts]}
    error = None
    if state in (TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_REJECTED):
        reasons = _texts(task.status.message.parts) if task.status.HasField("message") else []
        error = "\n".join(reasons) or "the task failed"
    return {
        "task_id": task.id,
        "id": task.id,
        "agent_id": agent_id,
        "context_id": task.context_id,
        "status": status_name(state),
        "result": result,
        "error": error,
        "task": MessageToDict(task),
    }


def message_text(message: Any) -> str:
    """The text of a message given as a string or as ``{"role", "parts": [{"text"}]}``;
    a 4xx :class:`ApiError` names what is wrong."""
    if isinstance(message, str):
        text = message
    elif isinstance(message, Mapping):
        parts = message.get("parts")
        if not isinstance(parts, list) or not parts:
            raise ApiError(400, "message.parts: expected a non-empty list", code="invalid_input")
        texts: list[str] = []
        for index, part in enumerate(parts):
            if not isinstance(part, Mapping):
                raise ApiError(
                    400, f"message.parts[{index}]: expected an object", code="invalid_input"
                )
            kind = part.get("type", part.get("kind", "text"))
            value = part.get("text")
            if kind != "text" or not isinstance(value, str):
                raise ApiError(
                    400,
                    f"message.parts[{index}]: only text parts are supported"
                    ' (expected {"text": "..."})',
                    code="invalid_input",
                )
            texts.append(value)
        role = message.get("role", "user")
        if role not in ("user", "ROLE_USER"):
            raise ApiError(400, "message.role: expected 'user'", code="invalid_input")
        text = "\n".join(texts)
    else:
        raise ApiError(400, "message: required (an object with parts)", code="invalid_input")
    if not text.strip():
        raise ApiError(400, "message: the text is empty", code="invalid_input")
    if len(text) > MAX_TEXT_CHARS:
        raise ApiError(413, f"message: longer than {MAX_TEXT_CHARS} characters", code="too_large")
    return text


def _optional_string(data: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise ApiError(400, f"{key}: expected a non-empty string", code="invalid_input")
        return value
    return None


def _wait_seconds(data: Mapping[str, Any], default: float) -> float:
    value = data.get("wait_seconds")
    if value is None:
        return 0.0 if data.get("return_immediately") is True else default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ApiError(400, "wait_seconds: expected a number >= 0", code="invalid_input")
    return min(float(value), MAX_WAIT_SECONDS)


def _a2a_error(exc: A2AError) -> ApiError:
    if isinstance(exc, TaskNotFoundError):
        return ApiError(404, "no such task", code="not_found")
    if isinstance(exc, TaskNotCancelableError):
        return ApiError(409, "the task has already finished", code="task_not_cancelable")
    return ApiError(400, str(exc) or type(exc).__name__, code="a2a_error")


class RestRoutes:
    """Endpoints of the document's task routes, on one :class:`A2AServer`."""

    def __init__(self, server: A2AServer) -> None:
        self.server = server

    async def send(self, request: Request) -> Response:
        server = self.server
        data = await read_json(request)
        if not isinstance(data, Mapping):
            raise ApiError(400, "request body must be a JSON object", code="invalid_input")
        params = data.get("params")
        if params is not None and not isinstance(params, Mapping):
            raise ApiError(400, "params: expected an object", code="invalid_input")
        scope: Mapping[str, Any] = params if params is not None else data
        agent_ref = _optional_string(scope, "agent_id", "agentId") or _optional_string(
            data, "agent_id", "agentId"
        )
        if agent_ref is None:
            raise ApiError(400, "agent_id: required", code="invalid_input")
        text = message_text(scope.get("message", data.get("message")))
        context_id = _optional_string(scope, "session_id", "sessionId", "context_id", "contextId")
        wait = _wait_seconds(data, server.settings.send_wait_seconds)
        agent = await server.agent(agent_ref)
        context = caller_context(request, agent.id)
        message = Message(
            message_id=str(uuid.uuid4()),
            role=Role.ROLE_USER,
            parts=[Part(text=text)],
            context_id=context_id or "",
        )
        send = SendMessageRequest(
            message=message, configuration=SendMessageConfiguration(return_immediately=True)
        )
        try:
            started = await server.handler.on_message_send(send, context)
        except A2AError as exc:
            raise _a2a_error(exc) from None
        if not isinstance(started, Task):  # pragma: no cover - the bridge always makes tasks
            raise ApiError(502, "the agent answered without a task", code="a2a_error")
        task = started
        if wait > 0 and task.status.state not in SETTLED_STATES:
            task = await server.tasks.wait_settled(task.id, context, wait)
        status = 200 if task.status.state in SETTLED_STATES else 202
        return JSONResponse(task_view(task, agent.id), status_code=status)

    async def get(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        context = caller_context(request, "")
        task = await self.server.tasks.get(task_id, context)
        if task is None:
            raise ApiError(404, f"no task {task_id!r}", code="not_found")
        found = await self.server.tasks.get_any(task_id)
        return JSONResponse(task_view(task, found[2] if found else ""))

    async def cancel(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        context = caller_context(request, "")
        try:
            task = await self.server.handler.on_cancel_task(CancelTaskRequest(id=task_id), context)
        except A2AError as exc:
            raise _a2a_error(exc) from None
        if task is None:
            raise ApiError(404, f"no task {task_id!r}", code="not_found")
        found = await self.server.tasks.get_any(task_id)
        return JSONResponse(task_view(task, found[2] if found else ""))
