"""The ``mcp`` transport: the server manager, the ``/api/mcp`` routes and ``/mcp`` itself.

Registered in ``fangwire.transports`` as ``mcp``. Between :meth:`McpTransport.start` and
:meth:`McpTransport.stop` the manager keeps the configured MCP servers connected.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from fangwire.auth import Role
from fangwire.hookspecs import hookimpl
from fangwire.http.context import runtime_of
from fangwire.http.errors import ApiError
from fangwire.http.routes import RouteSpec
from fangwire.transports import Transport
from fangwire_mcp import api
from fangwire_mcp.manager import McpManager
from fangwire_mcp.server import McpServer

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

SERVERS: weakref.WeakKeyDictionary[Runtime, McpServer] = weakref.WeakKeyDictionary()

_JSONRPC = {"type": "object", "description": "A JSON-RPC 2.0 message"}


def server_of(runtime: Runtime) -> McpServer:
    server = SERVERS.get(runtime)
    if server is None:
        raise ApiError(503, "the MCP server is not running", code="mcp_unavailable")
    return server


async def mcp_post(request: Request) -> Response:
    return await server_of(runtime_of(request)).post(request)


async def mcp_delete(request: Request) -> Response:
    return await server_of(runtime_of(request)).delete(request)


async def mcp_get(request: Request) -> Response:
    return await server_of(runtime_of(request)).get(request)


class McpTransport(Transport):
    transport_id = "mcp"
    display_name = "MCP"
    description = "MCP server manager (/api/mcp) and fangwire's own MCP endpoint (/mcp)"

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.manager: McpManager | None = None

    def routes(self) -> Sequence[RouteSpec]:
        protocol: dict[str, Any] = {
            "api": False,
            "body": "protocol",
            "errors": "jsonrpc",
            "tags": ("mcp",),
        }
        return [
            *api.routes(),
            RouteSpec(
                "/mcp",
                mcp_post,
                methods=("POST",),
                name="mcp_protocol",
                summary="MCP over Streamable HTTP (JSON-RPC 2.0), both protocol eras",
                role=Role.VIEWER,
                cost=1,
                request_model=_JSONRPC,
                response_model=_JSONRPC,
                responses={
                    202: "Notification accepted",
                    400: "JSON-RPC error (parse error, bad request, header mismatch)",
                    404: "Unknown session, or unknown method (2026-07-28)",
                },
                **protocol,
            ),
            RouteSpec(
                "/mcp",
                mcp_delete,
                methods=("DELETE",),
                name="mcp_session_end",
                summary="End an MCP session",
                role=Role.VIEWER,
                response_model=_JSONRPC,
                responses={204: "Session ended", 404: "Unknown session"},
                **protocol,
            ),
            RouteSpec(
                "/mcp",
                mcp_get,
                name="mcp_stream",
                summary="No standalone server-to-client stream is offered (405)",
                role=Role.VIEWER,
                response_model={"type": "string"},
                responses={405: "No stream"},
                **protocol,
            ),
        ]

    async def start(self) -> None:
        manager = McpManager(self.runtime)
        await manager.start()
        self.manager = manager
        api.MANAGERS[self.runtime] = manager
        SERVERS[self.runtime] = McpServer(self.runtime, manager)

    async def stop(self) -> None:
        SERVERS.pop(self.runtime, None)
        api.MANAGERS.pop(self.runtime, None)
        manager, self.manager = self.manager, None
        if manager is not None:
            await manager.stop()


@hookimpl
def register_transports(register: Any) -> None:
    register(McpTransport)
