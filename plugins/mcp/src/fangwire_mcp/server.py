"""``/mcp``: fangwire as an MCP server over Streamable HTTP, in both protocol eras.

**Handshake era (2024-11-05 … 2025-11-25).** ``initialize`` creates a session whose id comes
back in ``Mcp-Session-Id``; every later request must carry it (400 without, 404 for an unknown
or ended one) and, when present, an ``MCP-Protocol-Version`` header naming a supported version
(400 otherwise). Notifications and responses get 202 with no body. ``DELETE /mcp`` ends the
session. Responses are ``application/json``; there is no server-to-client stream, so
``GET /mcp`` answers 405.

**Stateless era (2026-07-28).** A request whose ``MCP-Protocol-Version`` header is not a
handshake version, or whose ``params._meta`` carries the protocol version, is checked with the
SDK's validation ladder (``_meta`` envelope, ``MCP-Protocol-Version``/``Mcp-Method``/
``Mcp-Name`` agreeing with the body: -32020; unsupported version: -32022) and answered without
a session; ``server/discover`` describes the server. Results carry ``resultType`` and the
server info in ``_meta``; an unknown method is 404 with -32601.

Errors are JSON-RPC error objects: -32700 for unparseable JSON, -32600 for a body that is not
one request, -32601 for an unknown method, -32602 for bad params or an unknown tool. The
route needs a credential (the ``viewer`` role); which tools a caller sees and may call depends
on its role. A browser ``Origin`` other than the daemon's own is refused (403) by the core.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import jsonschema  # type: ignore[import-untyped]
import mcp_types
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
)
from mcp_types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    MODERN_PROTOCOL_VERSIONS,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from fangwire import __version__
from fangwire.auth import Principal, Role
from fangwire.http.context import principal_of
from fangwire.http.errors import ApiError
from fangwire.http.jsonbody import json_depth_exceeds
from fangwire_mcp.connection import ServerConnection, ServerUnavailable
from fangwire_mcp.manager import McpManager, ToolNotApproved
from fangwire_mcp.prompts import LocalPrompt
from fangwire_mcp.resources import LocalResource, LocalResourceTemplate, match_template
from fangwire_mcp.tools import (
    LOCAL_TOOLS,
    LOG_LEVELS,
    PROXIED_TOOL_ROLE,
    LocalTool,
    RawResult,
    ToolContext,
    ToolFailure,
)

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

log = logging.getLogger("fangwire.mcp.server")

SERVER_NAME = "fangwire"
SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
MAX_SESSIONS = 10_000
SESSION_IDLE_SECONDS = 1800.0

PARSE_ERROR = mcp_types.PARSE_ERROR
INVALID_REQUEST = mcp_types.INVALID_REQUEST
METHOD_NOT_FOUND = mcp_types.METHOD_NOT_FOUND
INVALID_PARAMS = mcp_types.INVALID_PARAMS
INTERNAL_ERROR = mcp_types.INTERNAL_ERROR

_SERVER_INFO = {"name": SERVER_NAME, "title": "fangwire", "version": __version__}
_CAPABILITIES: dict[str, Any] = {
    "tools": {"listChanged": False},
    "prompts": {"listChanged": False},
    "resources": {"listChanged": False, "subscribe": False},
    "completions": {},
}
#: At most this many completion values are returned (the spec's limit).
MAX_COMPLETIONS = 100
#: "Resource not found" in the handshake era; 2026-07-28 uses -32602 instead.
LEGACY_RESOURCE_NOT_FOUND = -32002
#: The handshake era also has ``logging/setLevel`` (removed in 2026-07-28).
_LEGACY_CAPABILITIES: dict[str, Any] = {**_CAPABILITIES, "logging": {}}
_INSTRUCTIONS = (
    "fangwire connects AI agents to chat channels, other agents and MCP servers. "
    "Tools named mcp_<server>_<tool> are proxied to connected MCP servers."
)


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@attrs.define
class Session:
    id: str
    version: str
    subject: str
    last_seen: float
    log_level: str | None = None


class Sessions:
    """Handshake-era sessions, kept in memory, evicted when idle or when over the cap."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, version: str, subject: str) -> Session:
        self._expire()
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
        session = Session(secrets.token_urlsafe(24), version, subject, time.monotonic())
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str, subject: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None or session.subject != subject:
            return None
        now = time.monotonic()
        if now - session.last_seen > SESSION_IDLE_SECONDS:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    def end(self, session_id: str, subject: str) -> bool:
        if self.get(session_id, subject) is None:
            return False
        del self._sessions[session_id]
        return True

    def _expire(self) -> None:
        cutoff = time.monotonic() - SESSION_IDLE_SECONDS
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.last_seen >= cutoff:
                break
            self._sessions.popitem(last=False)

    def __len__(self) -> int:
        return len(self._sessions)


class McpServer:
    """The ``/mcp`` endpoint of one runtime."""

    def __init__(self, runtime: Runtime, manager: McpManager) -> None:
        self.runtime = runtime
        self.manager = manager
        self.sessions = Sessions()
        self.local_tools: dict[str, LocalTool] = {tool.name: tool for tool in LOCAL_TOOLS}
        self._validators: dict[str, Any] = {}
        self.local_prompts: dict[str, LocalPrompt] = {}
        self.local_resources: dict[str, LocalResource] = {}
        self.local_templates: list[LocalResourceTemplate] = []

    def add_resource(self, resource: LocalResource | LocalResourceTemplate) -> None:
        """Offer a local resource or resource template (from a plugin's ``startup`` hook)."""
        if isinstance(resource, LocalResourceTemplate):
            self.local_templates.append(resource)
            return
        if resource.uri in self.local_resources:
            raise ValueError(f"an MCP resource {resource.uri!r} is already offered")
        self.local_resources[resource.uri] = resource

    def add_prompt(self, prompt: LocalPrompt) -> None:
        """Offer one more local prompt (plugins call this from their ``startup`` hook)."""
        if prompt.name in self.local_prompts:
            raise ValueError(f"an MCP prompt named {prompt.name!r} is already offered")
        self.local_prompts[prompt.name] = prompt

    def add_tool(self, tool: LocalTool) -> None:
        """Offer one more local tool (plugins call this from their ``startup`` hook)."""
        if tool.name in self.local_tools:
            raise ValueError(f"an MCP tool named {tool.name!r} is already offered")
        self.local_tools[tool.name] = tool

    # -- HTTP -----------------------------------------------------------------------------

    async def post(self, request: Request) -> Response:
        principal = _principal(request)
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return _error(None, PARSE_ERROR, "Parse error: the body is not valid JSON", 400)
        if json_depth_exceeds(body, self.runtime.config.http.max_json_depth):
            return _error(None, PARSE_ERROR, "Parse error: JSON nested too deeply", 400)
        if not isinstance(body, dict):
            return _error(
                None, INVALID_REQUEST, "Invalid Request: expected one JSON-RPC object", 400
            )
        if body.get("jsonrpc") != "2.0":
            return _error(
                body.get("id"), INVALID_REQUEST, "Invalid Request: jsonrpc must be '2.0'", 400
            )
        method = body.get("method")
        if method is None:
            if "id" in body and ("result" in body or "error" in body):
                return Response(status_code=202)
            return _error(body.get("id"), INVALID_REQUEST, "Invalid Request: no method", 400)
        if not isinstance(method, str):
            return _error(
                body.get("id"), INVALID_REQUEST, "Invalid Request: method must be a string", 400
            )
        request_id = body.get("id")
        is_notification = "id" not in body
        if not is_notification and (
            request_id is None
            or isinstance(request_id, bool)
            or not isinstance(request_id, str | int)
        ):
            return _error(
                None, INVALID_REQUEST, "Invalid Request: id must be a string or integer", 400
            )
        params = body.get("params")
        if params is not None and not isinstance(params, dict):
            return _error(
                request_id, INVALID_PARAMS, "Invalid params: params must be an object", 400
            )
        headers = request.headers
        if _is_modern(headers, method, params):
            return await self._modern(request, body, method, params or {}, principal)
        return await self._legacy(request, body, method, params or {}, principal)

    async def delete(self, request: Request) -> Response:
        principal = _principal(request)
        session_id = request.headers.get(SESSION_HEADER)
        if not session_id:
            return _error(
                None, INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required", 400
            )
        if not self.sessions.end(session_id, principal.subject):
            return _error(None, INVALID_REQUEST, "Session not found", 404)
        return Response(status_code=204)

    async def get(self, request: Request) -> Response:
        return Response(
            status_code=405,
            headers={"Allow": "POST, DELETE"},
            content=b"",
        )

    # -- eras -----------------------------------------------------------------------------

    async def _legacy(
        self,
        request: Request,
        body: Mapping[str, Any],
        method: str,
        params: Mapping[str, Any],
        principal: Principal,
    ) -> Response:
        request_id = body.get("id")
        is_notification = "id" not in body
        if method == "initialize":
            if is_notification:
                return _error(None, INVALID_REQUEST, "initialize must be a request", 400)
            requested = params.get("protocolVersion")
            if not isinstance(requested, str):
                return _error(
                    request_id, INVALID_PARAMS, "Invalid params: protocolVersion is required", 200
                )
            version = (
                requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
            )
            created = self.sessions.create(version, principal.subject)
            result = {
                "protocolVersion": version,
                "capabilities": _LEGACY_CAPABILITIES,
                "serverInfo": _SERVER_INFO,
                "instructions": _INSTRUCTIONS,
            }
            return _result(request_id, result, headers={"Mcp-Session-Id": created.id})
        session_id = request.headers.get(SESSION_HEADER)
        if not session_id:
            return _error(
                request_id, INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required", 400
            )
        session = self.sessions.get(session_id, principal.subject)
        if session is None:
            return _error(request_id, INVALID_REQUEST, "Session not found", 404)
        header_version = request.headers.get(VERSION_HEADER)
        if header_version is not None and header_version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return _error(
                request_id,
                INVALID_REQUEST,
                f"Bad Request: unsupported MCP-Protocol-Version {header_version[:40]!r}",
                400,
            )
        if is_notification:
            return Response(status_code=202)
        if method == "logging/setLevel":
            level = params.get("level")
            if level not in LOG_LEVELS:
                return _error(
                    request_id,
                    INVALID_PARAMS,
                    f"Invalid params: level must be one of {LOG_LEVELS}",
                    200,
                )
            session.log_level = level
            return _result(request_id, {})
        return await self._respond(
            request,
            request_id,
            method,
            params,
            principal,
            modern=False,
            log_level=session.log_level,
        )

    async def _modern(
        self,
        request: Request,
        body: Mapping[str, Any],
        method: str,
        params: Mapping[str, Any],
        principal: Principal,
    ) -> Response:
        request_id = body.get("id")
        verdict = classify_inbound_request(
            body,
            headers={k: v for k, v in request.headers.items()},
            supported_modern_versions=MODERN_PROTOCOL_VERSIONS,
        )
        if isinstance(verdict, InboundLadderRejection):
            status = ERROR_CODE_HTTP_STATUS.get(verdict.code, 400)
            return _error(request_id, verdict.code, verdict.message, status, verdict.data)
        if "id" not in body:
            return Response(status_code=202)
        if method == "server/discover":
            result: dict[str, Any] = {
                "supportedVersions": list(MODERN_PROTOCOL_VERSIONS),
                "capabilities": _CAPABILITIES,
                "instructions": _INSTRUCTIONS,
                "ttlMs": 0,
                "cacheScope": "private",
            }
            return _result(request_id, _modern_result(result))
        meta = params.get("_meta")
        level = meta.get(mcp_types.LOG_LEVEL_META_KEY) if isinstance(meta, dict) else None
        return await self._respond(
            request,
            request_id,
            method,
            params,
            principal,
            modern=True,
            log_level=level if level in LOG_LEVELS else None,
        )

    async def _respond(
        self,
        request: Request,
        request_id: Any,
        method: str,
        params: Mapping[str, Any],
        principal: Principal,
        *,
        modern: bool,
        log_level: str | None,
    ) -> Response:
        """Run one request; the answer is JSON, or an event stream when the caller asked
        for notifications (a progress token or a log level) and accepts one."""
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if isinstance(token, bool) or not isinstance(token, str | int):
            token = None
        accepts_stream = "text/event-stream" in request.headers.get("accept", "")
        streaming = (
            method == "tools/call"
            and accepts_stream
            and (token is not None or log_level is not None)
        )
        if not streaming:
            context = ToolContext(principal.subject)
            try:
                result = await self._dispatch(method, params, principal, context, modern=modern)
            except RpcError as exc:
                status = ERROR_CODE_HTTP_STATUS.get(exc.code, 200) if modern else 200
                return _error(request_id, exc.code, exc.message, status, exc.data)
            return _result(request_id, _modern_result(result) if modern else result)
        return StreamingResponse(
            self._stream(request_id, method, params, principal, modern, token, log_level),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no", "Cache-Control": "no-store"},
        )

    async def _stream(
        self,
        request_id: Any,
        method: str,
        params: Mapping[str, Any],
        principal: Principal,
        modern: bool,
        token: str | int | None,
        log_level: str | None,
    ) -> AsyncIterator[bytes]:
        """Notifications as they come, then the response; closing the stream cancels."""
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](32)

        async def notify(message: Mapping[str, Any]) -> None:
            await send.send({"jsonrpc": "2.0", **message})

        async def run() -> None:
            async with send:
                context = ToolContext(
                    principal.subject, notify=notify, progress_token=token, log_level=log_level
                )
                try:
                    result = await self._dispatch(method, params, principal, context, modern=modern)
                except RpcError as exc:
                    await send.send(_error_body(request_id, exc.code, exc.message, exc.data))
                    return
                final = _modern_result(result) if modern else result
                await send.send({"jsonrpc": "2.0", "id": request_id, "result": final})

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            async with receive:
                async for message in receive:
                    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
                    yield f"event: message\ndata: {data}\n\n".encode()

    # -- methods --------------------------------------------------------------------------

    async def _dispatch(
        self,
        method: str,
        params: Mapping[str, Any],
        principal: Principal,
        context: ToolContext,
        *,
        modern: bool,
    ) -> dict[str, Any]:
        if method == "ping" and not modern:
            return {}
        if method == "tools/list":
            result: dict[str, Any] = {"tools": self.tool_definitions(principal.role)}
            if modern:
                result.update(ttlMs=0, cacheScope="private")
            return result
        if method == "tools/call":
            return await self.call_tool(params, principal, modern=modern, context=context)
        if method == "prompts/list":
            listed: dict[str, Any] = {"prompts": self.prompt_definitions(principal.role)}
            if modern:
                listed.update(ttlMs=0, cacheScope="private")
            return listed
        if method == "prompts/get":
            return await self.get_prompt(params, principal)
        if method == "resources/list":
            found: dict[str, Any] = {"resources": self.resource_definitions(principal.role)}
            if modern:
                found.update(ttlMs=0, cacheScope="private")
            return found
        if method == "resources/templates/list":
            templates: dict[str, Any] = {
                "resourceTemplates": self.template_definitions(principal.role)
            }
            if modern:
                templates.update(ttlMs=0, cacheScope="private")
            return templates
        if method == "completion/complete":
            return await self.complete(params, principal)
        if method == "resources/read":
            return await self.read_resource(params, principal, modern=modern)
        raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method[:100]}")

    def tool_definitions(self, role: Role) -> list[dict[str, Any]]:
        tools = [t.definition() for t in self.local_tools.values() if role >= t.role]
        if role >= PROXIED_TOOL_ROLE:
            for name, proxied in self.manager.tools().items():
                definition = proxied.tool.model_dump(by_alias=True, exclude_none=True, mode="json")
                definition["name"] = name
                tools.append(definition)
        return tools

    def resource_definitions(self, role: Role) -> list[dict[str, Any]]:
        found = [r.definition() for r in self.local_resources.values() if role >= r.role]
        if role >= PROXIED_TOOL_ROLE:
            for _, resource in self.manager.resources().values():
                found.append(resource.model_dump(by_alias=True, exclude_none=True, mode="json"))
        return found

    def template_definitions(self, role: Role) -> list[dict[str, Any]]:
        found = [t.definition() for t in self.local_templates if role >= t.role]
        if role >= PROXIED_TOOL_ROLE:
            for _, template in self.manager.resource_templates():
                found.append(template.model_dump(by_alias=True, exclude_none=True, mode="json"))
        return found

    async def read_resource(
        self, params: Mapping[str, Any], principal: Principal, *, modern: bool
    ) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str) or not uri:
            raise RpcError(INVALID_PARAMS, "Invalid params: uri is required")
        not_found = RpcError(
            INVALID_PARAMS if modern else LEGACY_RESOURCE_NOT_FOUND,
            "Resource not found",
            {"uri": uri[:500]},
        )
        local = self.local_resources.get(uri)
        if local is not None and principal.role >= local.role:
            return {"contents": [dict(c) for c in await local.read()]}
        for template in self.local_templates:
            variables = match_template(template.uri_template, uri)
            if variables is not None and principal.role >= template.role:
                return {"contents": [dict(c) for c in await template.read(uri, variables)]}
        if principal.role < PROXIED_TOOL_ROLE:
            raise not_found
        try:
            result = await self.manager.read_resource(uri, actor=principal.subject)
        except KeyError:
            raise not_found from None
        except ServerUnavailable as exc:
            raise RpcError(INTERNAL_ERROR, str(exc)) from None
        except MCPError as exc:
            raise RpcError(exc.code, exc.message, exc.error.data) from None
        dumped: dict[str, Any] = result.model_dump(by_alias=True, exclude_none=True, mode="json")
        dumped.pop("resultType", None)
        return dumped

    async def complete(self, params: Mapping[str, Any], principal: Principal) -> dict[str, Any]:
        """``completion/complete`` for a prompt argument or a resource-template variable."""
        ref, argument = params.get("ref"), params.get("argument")
        context = params.get("context")
        if not isinstance(ref, dict) or ref.get("type") not in ("ref/prompt", "ref/resource"):
            raise RpcError(
                INVALID_PARAMS, "Invalid params: ref must be a ref/prompt or ref/resource"
            )
        if not (
            isinstance(argument, dict)
            and isinstance(argument.get("name"), str)
            and isinstance(argument.get("value"), str)
        ):
            raise RpcError(INVALID_PARAMS, "Invalid params: argument needs a name and a value")
        known = context.get("arguments") if isinstance(context, dict) else None
        extra = (
            {k: v for k, v in known.items() if isinstance(v, str)}
            if isinstance(known, dict)
            else None
        )
        values: list[str] | None = None
        if ref["type"] == "ref/prompt":
            values = await self._complete_prompt(ref.get("name"), argument, extra, principal)
        else:
            values = await self._complete_template(ref.get("uri"), argument, extra, principal)
        found = list(values or [])
        return {
            "completion": {
                "values": found[:MAX_COMPLETIONS],
                "total": len(found),
                "hasMore": len(found) > MAX_COMPLETIONS,
            }
        }

    async def _complete_prompt(
        self,
        name: Any,
        argument: Mapping[str, str],
        context: Mapping[str, str] | None,
        principal: Principal,
    ) -> list[str] | None:
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, "Invalid params: ref.name is required")
        local = self.local_prompts.get(name)
        if local is not None and principal.role >= local.role:
            if local.complete is None:
                return None
            return list(await local.complete(argument["name"], argument["value"]))
        proxied = self.manager.prompts().get(name) if principal.role >= PROXIED_TOOL_ROLE else None
        if proxied is None:
            raise RpcError(INVALID_PARAMS, f"Unknown prompt: {name[:200]}")
        connection, prompt = proxied
        reference = mcp_types.PromptReference(type="ref/prompt", name=prompt.name)
        return await self._complete_upstream(connection, reference, argument, context)

    async def _complete_template(
        self,
        uri: Any,
        argument: Mapping[str, str],
        context: Mapping[str, str] | None,
        principal: Principal,
    ) -> list[str] | None:
        if not isinstance(uri, str):
            raise RpcError(INVALID_PARAMS, "Invalid params: ref.uri is required")
        if any(t.uri_template == uri for t in self.local_templates if principal.role >= t.role):
            return None
        if principal.role >= PROXIED_TOOL_ROLE:
            for connection, template in self.manager.resource_templates():
                if template.uri_template == uri:
                    reference = mcp_types.ResourceTemplateReference(type="ref/resource", uri=uri)
                    return await self._complete_upstream(connection, reference, argument, context)
        raise RpcError(INVALID_PARAMS, f"Unknown resource template: {uri[:200]}")

    async def _complete_upstream(
        self,
        connection: ServerConnection,
        reference: mcp_types.PromptReference | mcp_types.ResourceTemplateReference,
        argument: Mapping[str, str],
        context: Mapping[str, str] | None,
    ) -> list[str] | None:
        try:
            values: list[str] | None = await connection.complete(reference, argument, context)
        except ServerUnavailable as exc:
            raise RpcError(INTERNAL_ERROR, str(exc)) from None
        except MCPError as exc:
            raise RpcError(exc.code, exc.message, exc.error.data) from None
        return values

    def prompt_definitions(self, role: Role) -> list[dict[str, Any]]:
        prompts = [p.definition() for p in self.local_prompts.values() if role >= p.role]
        if role >= PROXIED_TOOL_ROLE:
            for name, (_, prompt) in self.manager.prompts().items():
                definition = prompt.model_dump(by_alias=True, exclude_none=True, mode="json")
                definition["name"] = name
                prompts.append(definition)
        return prompts

    async def get_prompt(self, params: Mapping[str, Any], principal: Principal) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise RpcError(INVALID_PARAMS, "Invalid params: name is required")
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict) or not all(
            isinstance(v, str) for v in arguments.values()
        ):
            raise RpcError(INVALID_PARAMS, "Invalid params: arguments must map names to strings")
        local = self.local_prompts.get(name)
        if local is not None and principal.role >= local.role:
            missing = local.missing(arguments)
            if missing:
                raise RpcError(INVALID_PARAMS, f"Invalid params: missing argument {missing[0]!r}")
            messages = await local.render(arguments)
            return {"description": local.description, "messages": [dict(m) for m in messages]}
        if principal.role < PROXIED_TOOL_ROLE:
            raise RpcError(INVALID_PARAMS, f"Unknown prompt: {name[:200]}")
        try:
            result = await self.manager.get_prompt(name, arguments, actor=principal.subject)
        except KeyError:
            raise RpcError(INVALID_PARAMS, f"Unknown prompt: {name[:200]}") from None
        except ServerUnavailable as exc:
            raise RpcError(INTERNAL_ERROR, str(exc)) from None
        except MCPError as exc:
            raise RpcError(exc.code, exc.message, exc.error.data) from None
        dumped: dict[str, Any] = result.model_dump(by_alias=True, exclude_none=True, mode="json")
        dumped.pop("resultType", None)
        return dumped

    async def call_tool(
        self,
        params: Mapping[str, Any],
        principal: Principal,
        *,
        modern: bool,
        context: ToolContext | None = None,
    ) -> dict[str, Any]:
        """Run a tool for ``principal``; :class:`RpcError` for protocol errors."""
        context = context if context is not None else ToolContext(principal.subject)
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise RpcError(INVALID_PARAMS, "Invalid params: name is required")
        arguments = params.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "Invalid params: arguments must be an object")
        local = self.local_tools.get(name)
        if local is not None:
            if principal.role < local.role:
                raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}")
            return await self._call_local(local, arguments, principal, context)
        if principal.role < PROXIED_TOOL_ROLE:
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name[:200]}")
        try:
            progress = context.progress if context.wants_progress else None
            result = await self.manager.call(
                name, arguments, actor=principal.subject, progress=progress
            )
        except KeyError:
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name[:200]}") from None
        except ToolNotApproved:
            raise RpcError(
                INVALID_PARAMS,
                f"Tool {name[:200]} changed its description since it was approved; "
                "an operator must reconnect its server to approve it",
            ) from None
        except ServerUnavailable as exc:
            return _tool_error(str(exc))
        except MCPError as exc:
            raise RpcError(exc.code, exc.message, exc.error.data) from None
        dumped: dict[str, Any] = result.model_dump(by_alias=True, exclude_none=True, mode="json")
        dumped.pop("resultType", None)
        return dumped

    def _validator(self, tool: LocalTool) -> Any:
        validator = self._validators.get(tool.name)
        if validator is None:
            validator = self._validators[tool.name] = _compile(tool.input_schema)
        return validator

    async def _call_local(
        self,
        tool: LocalTool,
        arguments: Mapping[str, Any],
        principal: Principal,
        context: ToolContext,
    ) -> dict[str, Any]:
        error = jsonschema.exceptions.best_match(self._validator(tool).iter_errors(arguments))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "arguments"
            return _tool_error(f"invalid arguments: {where}: {error.message}")
        outcome = "error"
        try:
            value = await tool.handler(self.runtime, arguments, context)
            outcome = "ok"
        except ToolFailure as exc:
            outcome = "tool_error"
            return _tool_error(str(exc))
        finally:
            with anyio.CancelScope(shield=True):
                await self.runtime.audit.record(
                    "mcp_tool_call",
                    details={"server": SERVER_NAME, "tool": tool.name, "actor": principal.subject},
                    outcome=outcome,
                )
        if isinstance(value, RawResult):
            return {"content": [dict(block) for block in value.content], "isError": value.is_error}
        text = json.dumps(value, ensure_ascii=False, default=str)
        return {
            "content": [{"type": "text", "text": text}],
            "structuredContent": value,
            "isError": False,
        }


def _compile(schema: Mapping[str, Any]) -> Any:
    """A validator for ``schema`` (checked once, here; the draft follows ``$schema``)."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def _principal(request: Request) -> Principal:
    principal = principal_of(request)
    if principal is None:  # pragma: no cover - the route is never public
        raise ApiError(401, "a credential is required")
    return principal


def _is_modern(headers: Mapping[str, str], method: str, params: Any) -> bool:
    if method == "server/discover":
        return True
    if method == "initialize" or SESSION_HEADER in headers:
        return False
    version = headers.get(VERSION_HEADER)
    if version is not None:
        return version not in HANDSHAKE_PROTOCOL_VERSIONS
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and mcp_types.PROTOCOL_VERSION_META_KEY in meta


def _tool_error(message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "isError": True}


def _result(
    request_id: Any, result: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse({"jsonrpc": "2.0", "id": request_id, "result": result}, headers=headers)


def _error_body(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    valid = isinstance(request_id, str | int) and not isinstance(request_id, bool)
    return {"jsonrpc": "2.0", "id": request_id if valid else None, "error": error}


def _error(request_id: Any, code: int, message: str, status: int, data: Any = None) -> Response:
    return JSONResponse(_error_body(request_id, code, message, data), status_code=status)


def _modern_result(result: dict[str, Any]) -> dict[str, Any]:
    """A 2026-07-28 result: ``resultType`` and the server info in ``_meta``."""
    result["resultType"] = "complete"
    meta = result.get("_meta")
    result["_meta"] = {
        **(meta if isinstance(meta, dict) else {}),
        mcp_types.SERVER_INFO_META_KEY: _SERVER_INFO,
    }
    return result
