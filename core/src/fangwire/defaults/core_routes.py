"""The core's own routes: health, the plugin list and the OpenAPI document.

Registered through the same ``register_routes`` hook third-party plugins use.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, Literal

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fangwire.hookspecs import hookimpl
from fangwire.http.context import runtime_of
from fangwire.http.openapi import build_openapi
from fangwire.http.routes import RouteSpec


@attrs.frozen
class Health:
    """Liveness, safe to show anyone."""

    status: Literal["ok"]
    version: str


@attrs.frozen
class StoreStatus:
    ok: bool
    backend: str
    schema: dict[str, int]
    detail: str


@attrs.frozen
class PluginCounts:
    loaded: int
    failed: int
    disabled: int


@attrs.frozen
class HealthDetail:
    """Health with the state of the store, the plugins and the secrets backend."""

    status: Literal["ok", "degraded"]
    version: str
    uptime_seconds: float
    store: StoreStatus
    plugins: PluginCounts
    secrets_backend: str
    auth_configured: bool


@attrs.frozen
class PluginInfo:
    """One plugin as ``/-/plugins`` lists it."""

    name: str
    group: str
    module: str
    distribution: str | None
    version: str | None
    status: Literal["loaded", "failed", "disabled"]
    error: str | None
    hooks: list[str]


@attrs.frozen
class PluginList:
    plugins: list[PluginInfo]
    total: int


@functools.cache
def _health_body(version: str) -> bytes:
    return json.dumps({"status": "ok", "version": version}, separators=(",", ":")).encode()


async def health(request: Request) -> Response:
    # Liveness only, and cheap: load balancers call it often. /api/health/detail checks the
    # store and plugins.
    return Response(_health_body(runtime_of(request).version), media_type="application/json")


async def health_detail(request: Request) -> Response:
    runtime = runtime_of(request)
    store_health = await runtime.store.health()
    records = list(runtime.pm.records.values())
    gatekeeper = request.app.state.gatekeeper
    body: dict[str, Any] = {
        "status": "ok" if store_health.ok else "degraded",
        "version": runtime.version,
        "uptime_seconds": round(runtime.uptime_seconds, 3),
        "store": {
            "ok": store_health.ok,
            "backend": store_health.backend,
            "schema": dict(store_health.schema),
            "detail": store_health.detail,
        },
        "plugins": {
            status: sum(r.status == status for r in records)
            for status in ("loaded", "failed", "disabled")
        },
        "secrets_backend": runtime.secrets_backend.kind,
        "auth_configured": gatekeeper.auth_configured,
    }
    return JSONResponse(body)


async def list_plugins(request: Request) -> Response:
    return Response(runtime_of(request).pm.listing_json(), media_type="application/json")


async def openapi(request: Request) -> Response:
    runtime = runtime_of(request)
    document = build_openapi(
        (spec for _, spec in runtime.routes),
        title="fangwire",
        version=runtime.version,
        description="Communication and network daemon for AI agents.",
    )
    return JSONResponse(document)


@hookimpl
def register_routes(register: Callable[[RouteSpec], None]) -> None:
    register(
        RouteSpec(
            "/health",
            health,
            name="health",
            summary="Liveness and version",
            tags=("system",),
            role=None,
            cost=1,
            response_model=Health,
        )
    )
    register(
        RouteSpec(
            "/health/detail",
            health_detail,
            name="health_detail",
            summary="Health of the store, plugins and secrets backend",
            tags=("system",),
            cost=1,
            response_model=HealthDetail,
        )
    )
    register(
        RouteSpec(
            "/-/plugins",
            list_plugins,
            api=False,
            name="plugins",
            summary="Every plugin with its distribution, version, group, hooks and status",
            tags=("system",),
            cost=2,
            response_model=PluginList,
        )
    )
    register(
        RouteSpec(
            "/openapi.json",
            openapi,
            name="openapi",
            summary="This OpenAPI 3.1 document",
            tags=("system",),
            cost=2,
            response_model={"type": "object"},
        )
    )
