"""The Starlette application, built from the runtime's registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message

from fangwire.http.context import request_id_of
from fangwire.http.dispatch import Dispatcher
from fangwire.http.errors import ApiError, jsonrpc_error_response
from fangwire.http.facts import facts_of
from fangwire.http.headers import SECURITY_HEADERS
from fangwire.http.middleware import EnvelopeMiddleware
from fangwire.http.routes import Endpoint, RouteSpec
from fangwire.http.security import Gatekeeper
from fangwire.runtime import Runtime
from fangwire.security.registry import SystemState


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"request body is larger than this route accepts ({limit} bytes)",
        code="payload_too_large",
    )


def _limit_body(request: Request, limit: int) -> Request:
    """The request with its body capped at ``limit`` bytes (413 beyond it)."""
    facts = facts_of(request.scope)
    if not facts.may_have_body:
        return request
    declared = facts.content_length
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    received = 0
    upstream = request.receive

    async def receive() -> Message:
        nonlocal received
        message = await upstream()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(limit)
        return message

    return Request(request.scope, receive)


def _guard(spec: RouteSpec, gatekeeper: Gatekeeper, body_limit: int) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        decision = await gatekeeper.admit(request, spec)
        response = await spec.endpoint(_limit_body(request, body_limit))
        if decision is not None:
            response.headers.update(decision.headers())
        return response

    async def jsonrpc_endpoint(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ApiError as exc:
            return jsonrpc_error_response(exc, request_id_of(request.scope))

    chosen = jsonrpc_endpoint if spec.errors == "jsonrpc" else endpoint
    chosen.__name__ = spec.name or spec.endpoint.__name__
    return chosen


def _body_limit(spec: RouteSpec, runtime: Runtime) -> int:
    http = runtime.config.http
    return {
        "default": http.max_request_body_bytes,
        "protocol": http.max_protocol_body_bytes,
        "hooks": http.max_hooks_body_bytes,
    }[spec.body]


def _headers_probe(app: Starlette) -> SystemState:
    """Active while the app's outermost middleware is the one that adds the headers."""
    outermost: Any = app.user_middleware[0].cls if app.user_middleware else None
    if outermost is not EnvelopeMiddleware:
        return SystemState("inactive", {"reason": "the envelope middleware is not installed"})
    return SystemState("active", {"headers": [name.decode() for name, _ in SECURITY_HEADERS]})


def _limiter_probe(runtime: Runtime) -> SystemState:
    limits = runtime.config.rate_limit
    details = {
        "requests_per_minute": limits.api_requests_per_minute,
        "apply_to_loopback": limits.apply_to_loopback,
        "auth_failures_allowed": limits.auth_failures_allowed,
    }
    if not limits.enabled:
        return SystemState("inactive", {**details, "reason": "rate_limit.enabled is false"})
    return SystemState("active", details)


class FangwireApp(Starlette):
    """Starlette with fangwire's lean request path.

    HTTP requests cross only the user middleware (the envelope, and CORS when configured)
    and the :class:`Dispatcher`; Starlette's own error and exception middleware are not
    needed because the envelope middleware and the dispatcher render every error.
    """

    dispatcher: Dispatcher

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = self.dispatcher
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


def create_app(runtime: Runtime) -> Starlette:
    """Build the ASGI application serving ``runtime``; its lifespan serves the runtime."""
    gatekeeper = Gatekeeper(runtime)
    routes = [
        Route(
            path,
            _guard(spec, gatekeeper, _body_limit(spec, runtime)),
            methods=list(spec.methods),
            name=f"{spec.name}:{path}" if spec.name else None,
        )
        for _, spec in runtime.routes
        for path in spec.mount_paths()
    ]
    middleware = [Middleware(EnvelopeMiddleware, runtime=runtime, gatekeeper=gatekeeper)]
    if runtime.config.http.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(runtime.config.http.cors_origins),
                allow_methods=["GET", "POST", "PUT", "DELETE"],
                allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
                expose_headers=["X-Request-ID", "Retry-After", "RateLimit", "RateLimit-Policy"],
            )
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with runtime.serving():
            yield

    router = Router(routes=list(routes), lifespan=lifespan, redirect_slashes=False)
    app = FangwireApp(middleware=middleware, lifespan=lifespan)
    runtime.security.register("security_headers", lambda: _headers_probe(app))
    runtime.security.register("gcra_rate_limiter", lambda: _limiter_probe(runtime))
    app.router = router
    app.dispatcher = Dispatcher(routes, router)
    app.state.runtime = runtime
    app.state.gatekeeper = gatekeeper
    return app
