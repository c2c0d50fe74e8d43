"""A plugin with routes that exercise the HTTP machinery (bodies, roles, failures)."""

from __future__ import annotations

from collections.abc import Callable

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fangwire.auth import Role
from fangwire.hookspecs import hookimpl
from fangwire.http.jsonbody import read_model
from fangwire.http.routes import RouteSpec


@attrs.frozen
class Greeting:
    name: str
    times: int = 1
    tags: list[str] = attrs.field(factory=list)


async def echo(request: Request) -> Response:
    greeting = await read_model(request, Greeting)
    return JSONResponse({"hello": greeting.name, "times": greeting.times})


async def boom(request: Request) -> Response:
    raise RuntimeError("secret internals /etc/fangwire")


async def whoami(request: Request) -> Response:
    from fangwire.http.context import principal_of

    principal = principal_of(request)
    assert principal is not None
    return JSONResponse({"subject": principal.subject, "role": principal.role.label})


@hookimpl
def register_routes(register: Callable[[RouteSpec], None]) -> None:
    register(
        RouteSpec(
            "/test/echo",
            echo,
            methods=("POST",),
            name="test_echo",
            role=Role.USER,
            request_model=Greeting,
            response_model={"type": "object"},
        )
    )
    register(
        RouteSpec(
            "/test/small",
            echo,
            methods=("POST",),
            name="test_small",
            role=None,
            body="hooks",
            request_model=Greeting,
        )
    )
    register(RouteSpec("/test/boom", boom, name="test_boom", role=None))
    register(RouteSpec("/test/whoami", whoami, name="test_whoami"))
    register(RouteSpec("/test/admin", whoami, name="test_admin", role=Role.ADMIN))
