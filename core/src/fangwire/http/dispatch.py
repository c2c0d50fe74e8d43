"""The request dispatcher at the heart of the application.

It replaces Starlette's router and exception middleware for HTTP requests with one small
layer: fixed paths are found with a dictionary lookup, parameterised paths by an ordered scan;
the endpoint is called; :class:`~fangwire.http.errors.ApiError` and Starlette's
``HTTPException`` become the JSON error envelope. Every layer a request crosses costs time on
every request, so the stack is kept to this dispatcher and :class:`EnvelopeMiddleware`.
Lifespan and WebSocket scopes go to a Starlette router.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route, Router
from starlette.types import Receive, Scope, Send

from fangwire.http.context import request_id_of
from fangwire.http.errors import ApiError, code_for_status, error_response


class Dispatcher:
    """Routes HTTP requests to endpoints and renders their errors."""

    def __init__(self, routes: Sequence[Route], router: Router) -> None:
        self.router = router
        self._dynamic = [route for route in routes if "{" in route.path]
        self._static: dict[str, list[Route]] = {}
        for route in routes:
            if "{" not in route.path:
                self._static.setdefault(route.path, []).append(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.router(scope, receive, send)
            return
        scope.setdefault("router", self.router)
        route, allowed = self._find(scope)
        response: Response
        if route is None:
            if allowed:
                message = f"method {scope['method']} is not allowed on {scope['path']}"
                response = error_response(
                    405,
                    "method_not_allowed",
                    message,
                    request_id_of(scope),
                    {"Allow": ", ".join(sorted(allowed))},
                )
            else:
                response = error_response(
                    404, "not_found", f"no route for {scope['path']}", request_id_of(scope)
                )
            await response(scope, receive, send)
            return
        scope["route"] = route
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except ApiError as exc:
            response = error_response(
                exc.status, exc.code, exc.message, request_id_of(scope), exc.headers
            )
        except HTTPException as exc:
            response = _http_error(scope, exc)
        await response(scope, receive, send)

    def _find(self, scope: Scope) -> tuple[Route | None, set[str]]:
        """The route for this request, or ``None`` and the methods the path does allow."""
        method = scope["method"]
        static = self._static.get(scope["path"]) if not scope.get("root_path") else None
        allowed: set[str] = set()
        if static is not None:
            for route in static:
                methods = route.methods or set()
                if method in methods:
                    scope["path_params"] = {}
                    return route, set()
                allowed |= methods
            return None, allowed
        for route in self._dynamic:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                return route, set()
            if match is Match.PARTIAL:
                allowed |= route.methods or set()
        return None, allowed


def _http_error(scope: Scope, exc: HTTPException) -> Response:
    message = {
        404: f"no route for {scope['path']}",
        413: "request body is larger than this route accepts",
    }.get(exc.status_code, str(exc.detail))
    return error_response(
        exc.status_code,
        code_for_status(exc.status_code),
        message,
        request_id_of(scope),
        exc.headers,
    )
