"""Reading JSON request bodies safely.

``json.loads`` raises ``RecursionError`` (not ``ValueError``) on deeply nested input, and huge
integers raise ``ValueError``; both become 400 here, as does any body nested deeper than the
configured depth. Bodies are structured into attrs classes by the runtime's converter, whose
errors name the offending field.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from starlette.requests import Request

from fangwire.config import format_structure_error
from fangwire.http.context import runtime_of
from fangwire.http.errors import ApiError

T = TypeVar("T")


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True if ``value`` nests containers deeper than ``limit`` (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_json_bytes(raw: bytes, *, max_depth: int) -> Any:
    """Parse ``raw`` as JSON or raise a 400 :class:`ApiError` that says why."""
    if not raw.strip():
        raise ApiError(400, "request body is empty; expected a JSON document", code="invalid_json")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ApiError(
            400, f"JSON body is nested too deeply (limit {max_depth})", code="invalid_json"
        ) from None
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not valid UTF-8", code="invalid_json") from None
    except ValueError as exc:
        raise ApiError(400, f"malformed JSON: {exc}", code="invalid_json") from None
    if json_depth_exceeds(value, max_depth):
        raise ApiError(
            400, f"JSON body is nested too deeply (limit {max_depth})", code="invalid_json"
        )
    return value


async def read_json(request: Request) -> Any:
    """The request body as parsed JSON (400 on bad JSON, 415 on a non-JSON content type)."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise ApiError(415, f"expected Content-Type application/json, got {media!r}")
    raw = await request.body()
    runtime = runtime_of(request)
    return parse_json_bytes(raw, max_depth=runtime.config.http.max_json_depth)


async def read_model(request: Request, model: type[T]) -> T:
    """The request body structured into ``model``; 400 names the field that is wrong."""
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_input")
    converter = runtime_of(request).converter
    try:
        return converter.structure(data, model)
    except Exception as exc:
        problems = format_structure_error(exc).replace("\n", "; ")
        raise ApiError(400, f"invalid request body: {problems}", code="invalid_input") from None
