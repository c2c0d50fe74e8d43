"""Route declarations.

Plugins and the core describe each HTTP route with a :class:`RouteSpec`. The app factory turns
specs into Starlette routes wrapped with authentication, rate limiting and error handling, and
the OpenAPI document is generated from the same specs, so documentation cannot drift from
what is served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import attrs
from starlette.requests import Request
from starlette.responses import Response

from fangwire.auth import Role

Endpoint = Callable[[Request], Awaitable[Response]]
BodyKind = Literal["default", "protocol", "hooks"]
ErrorFormat = Literal["envelope", "jsonrpc"]

#: Roles GET routes need by default, and every other method.
DEFAULT_READ_ROLE = Role.VIEWER
DEFAULT_WRITE_ROLE = Role.ADMIN


@attrs.frozen
class QueryParam:
    """A documented query parameter."""

    name: str
    schema: Mapping[str, Any] = attrs.field(factory=lambda: {"type": "string"})
    description: str = ""
    required: bool = False


def _default_cost(methods: Sequence[str]) -> int:
    return 2 if all(m in ("GET", "HEAD") for m in methods) else 5


def _default_role(methods: Sequence[str]) -> Role:
    if all(m in ("GET", "HEAD") for m in methods):
        return DEFAULT_READ_ROLE
    return DEFAULT_WRITE_ROLE


@attrs.frozen
class RouteSpec:
    """One HTTP route.

    ``path`` is relative to ``/api`` when ``api`` is true (it is then served under both
    ``/api`` and ``/api/v1``), otherwise absolute. ``role=None`` makes the route public.
    ``cost`` is what one call spends from the caller's rate-limit budget (default 2 for reads,
    5 for writes, out of ``rate_limit.api_requests_per_minute``). ``body`` picks the
    configured body-size limit. ``errors="jsonrpc"`` makes the refusals the core itself
    raises for the route (authentication, role, rate limit, body size) JSON-RPC error objects
    instead of the error envelope, for JSON-RPC protocol endpoints.
    ``request_model``/``response_model`` are attrs classes (or JSON-schema dicts) used for
    the OpenAPI document; ``responses`` documents other statuses.
    """

    path: str
    endpoint: Endpoint
    methods: tuple[str, ...] = ("GET",)
    name: str = ""
    summary: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    api: bool = True
    role: Role | None = attrs.field(
        default=attrs.Factory(lambda self: _default_role(self.methods), takes_self=True)
    )
    cost: int = attrs.field(
        default=attrs.Factory(lambda self: _default_cost(self.methods), takes_self=True)
    )
    body: BodyKind = "default"
    errors: ErrorFormat = "envelope"
    request_model: type[Any] | Mapping[str, Any] | None = None
    response_model: type[Any] | Mapping[str, Any] | None = None
    response_media_type: str = "application/json"
    responses: Mapping[int, str] = attrs.field(factory=dict)
    query: Sequence[QueryParam] = ()

    @property
    def public(self) -> bool:
        return self.role is None

    def mount_paths(self) -> tuple[str, ...]:
        if self.api:
            return (f"/api{self.path}", f"/api/v1{self.path}")
        return (self.path,)
