"""The one JSON error envelope: ``{"error": {"code", "message", "request_id"}}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

STATUS_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
}


def code_for_status(status: int) -> str:
    return STATUS_CODES.get(status, "client_error" if status < 500 else "server_error")


class ApiError(Exception):
    """An error the API reports to the caller. ``message`` must be safe to show."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or code_for_status(status)
        self.message = message
        self.headers = dict(headers or {})


def error_body(code: str, message: str, request_id: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": request_id}}


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(code, message, request_id), status_code=status, headers=dict(headers or {})
    )


#: JSON-RPC code for refusals that are not about the JSON-RPC message itself (the
#: implementation-defined server-error range); ``data`` says which.
JSONRPC_REFUSED = -32000


def jsonrpc_error_response(exc: ApiError, request_id: str) -> JSONResponse:
    """``exc`` as an id-less JSON-RPC error object, with the same HTTP status and headers.

    ``data`` carries the envelope's ``code`` and ``request_id`` so clients of either format
    can tell refusals apart.
    """
    body = {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": JSONRPC_REFUSED,
            "message": exc.message,
            "data": {"code": exc.code, "request_id": request_id},
        },
    }
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)
