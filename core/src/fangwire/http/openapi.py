"""The OpenAPI 3.1 document, generated from the registered :class:`RouteSpec` objects."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import attrs

from fangwire.http.jsonschema import Schema, SchemaBuilder
from fangwire.http.routes import RouteSpec

_PATH_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?}")


@attrs.frozen
class ErrorDetail:
    """What went wrong."""

    code: str
    message: str
    request_id: str


@attrs.frozen
class ErrorEnvelope:
    """Every error response."""

    error: ErrorDetail


_ERROR_STATUSES: dict[int, str] = {
    400: "Bad request: malformed JSON, wrong types or missing fields",
    413: "Request body too large",
    429: "Rate limited",
}
_AUTH_STATUSES: dict[int, str] = {401: "Missing or invalid credential", 403: "Role too low"}


def _operation_id(spec: RouteSpec, path: str, method: str) -> str:
    base = spec.name or re.sub(r"[^a-zA-Z0-9]+", "_", path).strip("_")
    suffix = "_v1" if path.startswith("/api/v1/") else ""
    return f"{method.lower()}_{base}{suffix}"


def build_openapi(
    specs: Iterable[RouteSpec], *, title: str, version: str, description: str = ""
) -> dict[str, Any]:
    """Describe every route in ``specs``."""
    builder = SchemaBuilder()
    error_ref = builder.schema_for(ErrorEnvelope)
    paths: dict[str, dict[str, Any]] = {}
    for spec in specs:
        for path in spec.mount_paths():
            openapi_path = _PATH_PARAM.sub(r"{\1}", path)
            item = paths.setdefault(openapi_path, {})
            for method in spec.methods:
                if method == "HEAD":
                    continue
                item[method.lower()] = _operation(spec, path, method, builder, error_ref)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(builder.components.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _operation(
    spec: RouteSpec, path: str, method: str, builder: SchemaBuilder, error_ref: Schema
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": _operation_id(spec, path, method),
        "summary": spec.summary or spec.name,
    }
    if spec.description:
        operation["description"] = spec.description
    if spec.tags:
        operation["tags"] = list(spec.tags)
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(path)
    ]
    parameters.extend(
        {
            "name": q.name,
            "in": "query",
            "required": q.required,
            "schema": dict(q.schema),
            **({"description": q.description} if q.description else {}),
        }
        for q in spec.query
    )
    if parameters:
        operation["parameters"] = parameters
    if spec.request_model is not None and method not in ("GET", "DELETE"):
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": builder.schema_for(spec.request_model)}},
        }
    ok: dict[str, Any] = {"description": "Success"}
    if spec.response_model is not None:
        ok["content"] = {
            spec.response_media_type: {"schema": builder.schema_for(spec.response_model)}
        }
    responses: dict[str, Any] = {"200": ok}
    documented = dict(_ERROR_STATUSES)
    if not spec.public:
        documented.update(_AUTH_STATUSES)
    documented.update(spec.responses)
    for status, text in sorted(documented.items()):
        responses[str(status)] = {
            "description": text,
            "content": {"application/json": {"schema": error_ref}},
        }
    operation["responses"] = responses
    operation["security"] = [] if spec.public else [{"bearer": []}, {"apiKey": []}]
    return operation
