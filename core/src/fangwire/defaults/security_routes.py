"""``GET /api/security``: the live state of the 16 security systems."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fangwire.hookspecs import hookimpl
from fangwire.http.context import runtime_of
from fangwire.http.routes import RouteSpec
from fangwire.security.registry import SYSTEMS

_STATUS = {"type": "string", "enum": ["active", "inactive", "not_configured"]}

REPORT_SCHEMA = {
    "type": "object",
    "properties": {
        "security_systems": {
            "type": "object",
            "properties": dict.fromkeys(SYSTEMS, _STATUS),
            "required": list(SYSTEMS),
        },
        "details": {"type": "object"},
        "total_systems": {"type": "integer"},
        "all_active": {"type": "boolean"},
    },
    "required": ["security_systems", "total_systems", "all_active"],
}


async def security(request: Request) -> Response:
    return JSONResponse(runtime_of(request).security.report())


@hookimpl
def register_routes(register: Callable[[RouteSpec], None]) -> None:
    register(
        RouteSpec(
            "/security",
            security,
            name="security",
            summary="State of the 16 security systems, computed from the running daemon",
            tags=("security",),
            cost=2,
            response_model=REPORT_SCHEMA,
        )
    )
