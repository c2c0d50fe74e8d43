"""A local fake of OpenAI's documented ``POST /v1/chat/completions`` (and ``GET /v1/models``).

Serve it with :func:`fangwire.testing.live.live_server` and point a provider's ``base_url``
at ``<url>/v1``::

    app = create_fake_openai(api_key="sk-test", models={"gpt-test"})
    async with live_server(app) as url:
        ...

It checks what the real API checks — the bearer key (401), the model (404
``model_not_found``), unknown arguments, the ``messages`` list and ``max_tokens`` (400
``invalid_request_error`` naming the field) — and answers in the documented shapes, streamed
(``chat.completion.chunk`` server-sent events, a usage chunk when
``stream_options.include_usage``, then ``data: [DONE]``) or not. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``.

The answer is ``"fake: " + <last user message>``, cut to ``max_tokens`` words
(``finish_reason`` ``"length"``). Tokens are counted like the ``echo`` provider: words plus 4
per message for the prompt, words of the answer for the completion.

Test controls, attributes of the returned app:

``fail_next``
    ``(status, json_body)`` responses returned, in order, for the next calls (before any
    check; a 200 with a body of your own simulates odd successes).
``next_answers``
    Answer texts used, in order, instead of the default answer ("" makes an empty answer).
``cached_tokens``
    Reported as ``usage.prompt_tokens_details.cached_tokens``.
``delay_seconds``
    Sleep this long before answering (for timeouts).
``requests``
    Every request received: ``{"path", "headers", "body"}`` (``body`` parsed JSON or None).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

ROLES = ("system", "user", "assistant", "tool")
TOP_LEVEL_KEYS = frozenset(
    {"model", "messages", "max_tokens", "temperature", "stream", "stream_options", "user"}
)
MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_call_id"})
MESSAGE_OVERHEAD_TOKENS = 4


class FakeOpenAI(Starlette):
    """The fake's application, with its test controls and request record."""

    fail_next: list[tuple[int, dict[str, Any]]]
    next_answers: list[str]
    cached_tokens: int
    delay_seconds: float
    requests: list[dict[str, Any]]
    api_key: str
    models: set[str]


def _error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def _mask(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


def _words(text: str) -> int:
    return len(text.split())


def _check_body(body: Any) -> JSONResponse | None:
    if not isinstance(body, dict):
        return _error(400, "The request body must be a JSON object.")
    for key in body:
        if key not in TOP_LEVEL_KEYS:
            return _error(400, f"Unrecognized request argument supplied: {key}", param=key)
    if not isinstance(body.get("model"), str) or not body["model"]:
        return _error(400, "you must provide a model parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(
            400,
            "Invalid 'messages': expected a non-empty array of messages.",
            param="messages",
            code="invalid_value" if isinstance(messages, list) else "invalid_type",
        )
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            return _error(400, f"Invalid '{where}': expected an object.", param=where)
        for key in message:
            if key not in MESSAGE_KEYS:
                return _error(
                    400,
                    f"Additional properties are not allowed ('{key}' was unexpected) - '{where}'",
                    param=f"{where}.{key}",
                )
        if message.get("role") not in ROLES:
            return _error(
                400,
                f"Invalid value: {message.get('role')!r}. Supported values are: "
                "'system', 'assistant', 'user', and 'tool'.",
                param=f"{where}.role",
                code="invalid_value",
            )
        if not isinstance(message.get("content"), str):
            return _error(
                400,
                f"Invalid type for '{where}.content': expected a string.",
                param=f"{where}.content",
                code="invalid_type",
            )
    max_tokens = body.get("max_tokens")
    if "max_tokens" in body and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        return _error(
            400,
            f"Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, "
            f"but got {max_tokens!r} instead.",
            param="max_tokens",
            code="integer_below_min_value",
        )
    temperature = body.get("temperature")
    if "temperature" in body and (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or not 0 <= temperature <= 2
    ):
        return _error(
            400, "Invalid 'temperature': expected a number from 0 to 2.", param="temperature"
        )
    if "stream" in body and not isinstance(body["stream"], bool):
        return _error(400, "Invalid 'stream': expected a boolean.", param="stream")
    if "stream_options" in body:
        if body.get("stream") is not True:
            return _error(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        options = body["stream_options"]
        if not isinstance(options, dict) or not isinstance(
            options.get("include_usage", False), bool
        ):
            return _error(400, "Invalid 'stream_options'.", param="stream_options")
    return None


def create_fake_openai(*, api_key: str, models: set[str]) -> FakeOpenAI:
    """A fake OpenAI API accepting ``Authorization: Bearer <api_key>`` and serving ``models``."""
    ids = itertools.count(1)

    async def list_models(request: Request) -> Response:
        app.requests.append({"path": request.url.path, "headers": dict(request.headers)})
        denied = _check_auth(request)
        if denied is not None:
            return denied
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in app.models]
        return JSONResponse({"object": "list", "data": sorted(data, key=lambda m: m["id"])})

    def _check_auth(request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization", "")
        if not header:
            return _error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or presented.strip() != app.api_key:
            return _error(
                401,
                f"Incorrect API key provided: {_mask(presented.strip())}. You can find your "
                "API key at https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        app.requests.append(
            {"path": request.url.path, "headers": dict(request.headers), "body": body}
        )
        if app.delay_seconds:
            await anyio.sleep(app.delay_seconds)
        if app.fail_next:
            status, payload = app.fail_next.pop(0)
            return JSONResponse(payload, status_code=status)
        denied = _check_auth(request)
        if denied is not None:
            return denied
        if body is None:
            return _error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly.)",
            )
        invalid = _check_body(body)
        if invalid is not None:
            return invalid
        model = body["model"]
        if model not in app.models:
            return _error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        messages = body["messages"]
        if app.next_answers:
            answer = app.next_answers.pop(0)
        else:
            last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            answer = "fake: " + last_user
        words = answer.split(" ")
        finish_reason = "stop"
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and _words(answer) > max_tokens:
            answer = " ".join(answer.split()[:max_tokens])
            words = answer.split(" ")
            finish_reason = "length"
        prompt_tokens = sum(_words(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)
        completion_tokens = _words(answer)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": app.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        completion_id = f"chatcmpl-fake{next(ids):06d}"
        created = int(time.time())
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer, "refusal": None},
                            "logprobs": None,
                            "finish_reason": finish_reason,
                        }
                    ],
                    "usage": usage,
                    "system_fingerprint": "fp_fake",
                }
            )
        include_usage = bool(body.get("stream_options", {}).get("include_usage", False))
        deltas = [w + " " for w in words[:-1]] + [words[-1]] if answer else []

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            event = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if include_usage:
                event["usage"] = None
            event.update(extra)
            return f"data: {json.dumps(event)}\n\n".encode()

        async def events() -> AsyncIterator[bytes]:
            yield chunk(
                [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
            for delta in deltas:
                yield chunk(
                    [
                        {
                            "index": 0,
                            "delta": {"content": delta},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
            yield chunk(
                [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}]
            )
            if include_usage:
                yield chunk([], usage=usage)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app = FakeOpenAI(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
        ]
    )
    app.api_key = api_key
    app.models = set(models)
    app.fail_next = []
    app.next_answers = []
    app.cached_tokens = 0
    app.delay_seconds = 0.0
    app.requests = []
    return app
