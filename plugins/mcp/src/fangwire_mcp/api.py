"""The ``/api/mcp/...`` routes: configured servers, catalog, health, reload."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fangwire.auth import Role
from fangwire.config import ConfigError
from fangwire.http.context import actor_of, runtime_of
from fangwire.http.errors import ApiError
from fangwire.http.jsonbody import read_json
from fangwire.http.routes import RouteSpec
from fangwire.secrets import SecretStoreError
from fangwire_mcp.connection import ServerConnection
from fangwire_mcp.manager import McpManager, ServerExists, UnknownServer
from fangwire_mcp.naming import tool_name
from fangwire_mcp.spec import Credentials, ServerSpec, SpecError, spec_from_body

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

#: How long ``POST .../reconnect`` waits for the attempt to settle.
RECONNECT_WAIT_SECONDS = 30.0

MANAGERS: weakref.WeakKeyDictionary[Runtime, McpManager] = weakref.WeakKeyDictionary()
_OBJECT = {"type": "object"}


def manager_of(runtime: Runtime) -> McpManager:
    manager = MANAGERS.get(runtime)
    if manager is None:
        raise ApiError(503, "the MCP manager is not running", code="mcp_unavailable")
    return manager


def _manager(request: Request) -> McpManager:
    return manager_of(runtime_of(request))


def server_view(connection: ServerConnection) -> dict[str, Any]:
    spec = connection.spec
    view: dict[str, Any] = {
        "name": spec.name,
        "transport": spec.transport,
        "command": spec.command if spec.transport == "stdio" else None,
        "args": list(spec.args),
        "connected": connection.connected,
        "tools": [
            {
                "name": tool.name,
                "description": tool.description or "",
                "exposed_name": tool_name(spec.name, tool.name),
            }
            for tool in connection.tools
        ],
        "tools_count": len(connection.tools),
        "status": connection.status,
        "transport_config": spec.transport_view(),
        "env": list(spec.env),
        "headers": list(spec.headers),
        "timeout_secs": spec.timeout_secs,
        "enabled": spec.enabled,
        "protocol_version": connection.protocol_version,
        "transport_in_use": connection.transport_in_use,
        "tools_changed": list(connection.changed_tools),
    }
    if spec.transport != "stdio":
        view["url"] = spec.url
    if spec.template_id:
        view["template_id"] = spec.template_id
    return view


async def _body(request: Request) -> Mapping[str, Any]:
    data = await read_json(request)
    if not isinstance(data, Mapping):
        raise ApiError(400, "request body must be a JSON object", code="invalid_input")
    return data


def _spec(
    manager: McpManager, data: Mapping[str, Any], name: str | None = None
) -> tuple[ServerSpec, Credentials]:
    try:
        if "template_id" in data and "transport" not in data:
            extra = sorted(set(data) - {"template_id", "credentials", "name"})
            if extra:
                raise SpecError(f"{extra[0]}: unknown key for a catalog install")
            template_id = data["template_id"]
            if not isinstance(template_id, str):
                raise SpecError("template_id: expected a string")
            template = manager.catalog.get(template_id)
            if template is None:
                raise ApiError(404, f"no catalog template {template_id!r}", code="not_found")
            chosen = name if name is not None else data.get("name")
            if chosen is not None and not isinstance(chosen, str):
                raise SpecError("name: expected a string")
            return template.install(data.get("credentials") or {}, name=chosen)
        return spec_from_body(data, name=name)
    except SpecError as exc:
        raise ApiError(400, str(exc), code="invalid_input") from None


async def list_servers(request: Request) -> Response:
    manager = _manager(request)
    servers = [server_view(c) for _, c in sorted(manager.connections.items())]
    broken = [
        {"name": name, "connected": False, "status": f"error: {error}", "tools": []}
        for name, error in sorted(manager.config_errors.items())
    ]
    connected = [
        {
            "name": s["name"],
            "tools_count": s["tools_count"],
            "tools": s["tools"],
            "connected": True,
        }
        for s in servers
        if s["connected"]
    ]
    return JSONResponse(
        {
            "servers": servers + broken,
            "total": len(servers) + len(broken),
            # The reference daemon's split view of the same servers.
            "configured": servers + broken,
            "connected": connected,
            "total_configured": len(servers) + len(broken),
            "total_connected": len(connected),
        }
    )


async def add_server(request: Request) -> Response:
    manager = _manager(request)
    spec, credentials = _spec(manager, await _body(request))
    try:
        await manager.add(spec, credentials, actor=actor_of(request))
    except ServerExists:
        raise ApiError(409, f"an MCP server named {spec.name!r} exists", code="conflict") from None
    except SecretStoreError as exc:
        raise ApiError(503, f"credentials could not be stored: {exc}", code="secrets") from None
    except ConfigError as exc:
        raise ApiError(400, str(exc), code="invalid_config") from None
    return JSONResponse(
        {
            "status": "added",
            "name": spec.name,
            "template_id": spec.template_id,
            "server": server_view(manager.connections[spec.name]),
        },
        status_code=201,
    )


def _connection(manager: McpManager, name: str) -> ServerConnection:
    connection = manager.connections.get(name)
    if connection is None:
        raise ApiError(404, f"no MCP server {name!r}", code="not_found")
    return connection


async def get_server(request: Request) -> Response:
    manager = _manager(request)
    return JSONResponse(server_view(_connection(manager, request.path_params["name"])))


async def put_server(request: Request) -> Response:
    manager = _manager(request)
    name = request.path_params["name"]
    _connection(manager, name)
    spec, credentials = _spec(manager, await _body(request), name=name)
    try:
        await manager.replace(spec, credentials, actor=actor_of(request))
    except UnknownServer:
        raise ApiError(404, f"no MCP server {name!r}", code="not_found") from None
    return JSONResponse(
        {"status": "updated", "name": name, "server": server_view(manager.connections[name])}
    )


async def delete_server(request: Request) -> Response:
    manager = _manager(request)
    name = request.path_params["name"]
    try:
        await manager.remove(name, actor=actor_of(request))
    except UnknownServer:
        raise ApiError(404, f"no MCP server {name!r}", code="not_found") from None
    return JSONResponse({"status": "removed", "name": name})


async def reconnect_server(request: Request) -> Response:
    manager = _manager(request)
    name = request.path_params["name"]
    try:
        connection = await manager.reconnect(
            name, actor=actor_of(request), wait=RECONNECT_WAIT_SECONDS
        )
    except UnknownServer:
        raise ApiError(404, f"no MCP server {name!r}", code="not_found") from None
    if not connection.connected:
        raise ApiError(
            502,
            f"MCP server {name!r} did not connect: {connection.last_error or connection.status}",
            code="mcp_connect_failed",
        )
    return JSONResponse(
        {"id": name, "name": name, "status": "connected", "tool_count": len(connection.tools)}
    )


async def list_catalog(request: Request) -> Response:
    manager = _manager(request)
    installed = {c.spec.template_id for c in manager.connections.values()}
    entries = [t.view(installed=t.id in installed) for t in manager.catalog.templates.values()]
    return JSONResponse({"entries": entries, "count": len(entries), "total": len(entries)})


async def get_catalog_entry(request: Request) -> Response:
    manager = _manager(request)
    template_id = request.path_params["template_id"]
    template = manager.catalog.get(template_id)
    if template is None:
        raise ApiError(404, f"no catalog template {template_id!r}", code="not_found")
    installed = any(c.spec.template_id == template_id for c in manager.connections.values())
    return JSONResponse(template.view(installed=installed))


async def health(request: Request) -> Response:
    manager = _manager(request)
    items = [c.health() for _, c in sorted(manager.connections.items())]
    return JSONResponse(
        {
            "health": items,
            "count": len(items),
            "ready": sum(1 for i in items if i["status"] == "ready"),
        }
    )


async def reload(request: Request) -> Response:
    manager = _manager(request)
    try:
        result = await manager.reload(actor=actor_of(request))
    except ConfigError as exc:
        raise ApiError(400, str(exc), code="invalid_config") from None
    return JSONResponse(
        {
            "status": "reloaded",
            "new_connections": len(result["started"]),
            "started": result["started"],
            "stopped": result["stopped"],
            "catalog_entries": result["templates"],
            "catalog_errors": list(manager.catalog.errors),
        }
    )


def routes() -> list[RouteSpec]:
    tags = ("mcp",)
    not_found = {404: "No such server"}
    return [
        RouteSpec(
            "/mcp/servers",
            list_servers,
            name="mcp_servers",
            summary="Configured MCP servers with their status and tools",
            tags=tags,
            response_model=_OBJECT,
        ),
        RouteSpec(
            "/mcp/servers",
            add_server,
            methods=("POST",),
            name="mcp_server_add",
            summary="Add an MCP server (catalog template, raw or flat body)",
            tags=tags,
            request_model=_OBJECT,
            response_model=_OBJECT,
            responses={
                400: "Invalid body or missing credential",
                404: "Unknown template",
                409: "Name taken",
            },
        ),
        RouteSpec(
            "/mcp/servers/{name}",
            get_server,
            name="mcp_server",
            summary="One MCP server",
            tags=tags,
            response_model=_OBJECT,
            responses=not_found,
        ),
        RouteSpec(
            "/mcp/servers/{name}",
            put_server,
            methods=("PUT",),
            name="mcp_server_replace",
            summary="Replace an MCP server's configuration",
            tags=tags,
            request_model=_OBJECT,
            response_model=_OBJECT,
            responses={**not_found, 400: "Invalid body"},
        ),
        RouteSpec(
            "/mcp/servers/{name}",
            delete_server,
            methods=("DELETE",),
            name="mcp_server_remove",
            summary="Remove an MCP server and its credentials",
            tags=tags,
            response_model=_OBJECT,
            responses=not_found,
        ),
        RouteSpec(
            "/mcp/servers/{name}/reconnect",
            reconnect_server,
            methods=("POST",),
            name="mcp_server_reconnect",
            summary="Reconnect now and approve the current tool descriptions",
            tags=tags,
            response_model=_OBJECT,
            responses={**not_found, 502: "The server did not connect"},
        ),
        RouteSpec(
            "/mcp/catalog",
            list_catalog,
            name="mcp_catalog",
            summary="Installable MCP server templates",
            tags=tags,
            response_model=_OBJECT,
        ),
        RouteSpec(
            "/mcp/catalog/{template_id}",
            get_catalog_entry,
            name="mcp_catalog_entry",
            summary="One catalog template",
            tags=tags,
            response_model=_OBJECT,
            responses={404: "No such template"},
        ),
        RouteSpec(
            "/mcp/health",
            health,
            name="mcp_health",
            summary="Health of every configured MCP server",
            tags=tags,
            response_model=_OBJECT,
        ),
        RouteSpec(
            "/mcp/reload",
            reload,
            methods=("POST",),
            name="mcp_reload",
            summary="Reload the catalog and config.toml; reconnect changed servers",
            tags=tags,
            role=Role.ADMIN,
            response_model=_OBJECT,
        ),
    ]


def register_all(register: Callable[[RouteSpec], None]) -> None:
    for spec in routes():
        register(spec)
