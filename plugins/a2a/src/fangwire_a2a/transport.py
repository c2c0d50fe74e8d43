"""The ``a2a`` transport: fangwire's A2A server and client, and the routes of both.

Registered through the ``fangwire.transports`` entry point ``a2a``. The routes exist from build
time; the services behind them are created when the runtime starts serving (the store must be
open) and answer 503 before that.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from fangwire.auth import Role
from fangwire.hookspecs import hookimpl
from fangwire.http.errors import ApiError
from fangwire.http.routes import QueryParam, RouteSpec
from fangwire.transports import Transport
from fangwire_a2a.api_routes import ManagementRoutes
from fangwire_a2a.client import RemoteAgents
from fangwire_a2a.rest import RestRoutes
from fangwire_a2a.schema import A2A_MIGRATIONS
from fangwire_a2a.server import A2AServer
from fangwire_a2a.settings import parse_settings

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

_OBJECT: dict[str, Any] = {"type": "object"}
_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "role": {"type": "string"},
        "parts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
            },
        },
    },
}
_SEND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "agent_id": {"type": "string"},
        "message": _MESSAGE_SCHEMA,
        "session_id": {"type": "string"},
        "wait_seconds": {"type": "number", "minimum": 0},
        "params": {"type": "object"},
    },
}
_JSONRPC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "jsonrpc": {"type": "string", "enum": ["2.0"]},
        "id": {"type": ["string", "integer", "null"]},
        "method": {"type": "string"},
        "params": {"type": "object"},
    },
    "required": ["jsonrpc", "method"],
}

Endpoint = Callable[[Request], Awaitable[Response]]


class A2ATransport(Transport):
    transport_id = "a2a"
    display_name = "A2A"
    description = "Agent2Agent protocol: serve local agents, call remote ones"

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.settings = parse_settings(runtime.config.a2a, runtime)
        self.server: A2AServer | None = None
        self.remote: RemoteAgents | None = None
        self._rest: RestRoutes | None = None
        self._api: ManagementRoutes | None = None

    async def start(self) -> None:
        await self.runtime.store.migrate(A2A_MIGRATIONS)
        self.settings = parse_settings(self.runtime.config.a2a, self.runtime)
        server = A2AServer(self.runtime, self.settings)
        await server.start()
        self.server = server
        self._rest = RestRoutes(server)
        remote = RemoteAgents(self.runtime, self.settings)
        await remote.start()
        self.remote = remote
        self._api = ManagementRoutes(remote)
        self.runtime.security.uses("ssrf_protection", "a2a")

    async def stop(self) -> None:
        server, self.server, self._rest = self.server, None, None
        self.remote, self._api = None, None
        if server is not None:
            await server.stop()

    # -- wiring ---------------------------------------------------------------------------------

    def _serving(self) -> A2AServer:
        if self.server is None:
            raise ApiError(503, "the A2A service is not running", code="a2a_unavailable")
        return self.server

    def _rest_routes(self) -> RestRoutes:
        if self._rest is None:
            raise ApiError(503, "the A2A service is not running", code="a2a_unavailable")
        return self._rest

    def _on_api(self, name: str) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            if self._api is None:
                raise ApiError(503, "the A2A service is not running", code="a2a_unavailable")
            method: Endpoint = getattr(self._api, name)
            return await method(request)

        endpoint.__name__ = f"a2a_remote_{name}"
        return endpoint

    def _on_server(self, name: str) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            method: Endpoint = getattr(self._serving(), name)
            return await method(request)

        endpoint.__name__ = name
        return endpoint

    def _on_rest(self, name: str) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            method: Endpoint = getattr(self._rest_routes(), name)
            return await method(request)

        endpoint.__name__ = f"a2a_task_{name}"
        return endpoint

    def routes(self) -> Sequence[RouteSpec]:
        tags = ("a2a",)
        card = self._on_server("well_known_card")
        rpc_doc = "A2A JSON-RPC (1.0 with the A2A-Version header, 0.3 without); SSE for streams"
        return (
            RouteSpec(
                "/.well-known/agent-card.json",
                card,
                name="a2a_card",
                summary="This daemon's A2A Agent Card",
                tags=tags,
                api=False,
                role=None,
                body="protocol",
                response_model=_OBJECT,
            ),
            RouteSpec(
                "/.well-known/agent.json",
                card,
                name="a2a_card_legacy",
                summary="This daemon's A2A Agent Card (the 0.1/0.2 path)",
                tags=tags,
                api=False,
                role=None,
                body="protocol",
                response_model=_OBJECT,
            ),
            RouteSpec(
                "/a2a",
                card,
                name="a2a_card_at_endpoint",
                summary="The Agent Card, also served where its interfaces point",
                tags=tags,
                api=False,
                role=None,
                body="protocol",
                response_model=_OBJECT,
            ),
            RouteSpec(
                "/a2a/agents",
                self._on_server("list_agents"),
                name="a2a_local_agents",
                summary="Local agents available over A2A, each as an Agent Card",
                tags=tags,
                api=False,
                role=None,
                body="protocol",
                response_model=_OBJECT,
            ),
            RouteSpec(
                "/a2a/agents/{agent_id}",
                self._on_server("get_agent_card"),
                name="a2a_local_agent",
                summary="One local agent's Agent Card",
                tags=tags,
                api=False,
                role=None,
                body="protocol",
                response_model=_OBJECT,
                responses={404: "No running agent"},
            ),
            RouteSpec(
                "/a2a",
                self._on_server("jsonrpc_default"),
                methods=("POST",),
                name="a2a_jsonrpc",
                summary="A2A JSON-RPC endpoint of the default agent",
                description=rpc_doc,
                tags=tags,
                api=False,
                role=Role.USER,
                body="protocol",
                request_model=_JSONRPC_SCHEMA,
                response_model=_OBJECT,
                responses={503: "No running agent"},
            ),
            RouteSpec(
                "/a2a/agents/{agent_id}",
                self._on_server("jsonrpc_agent"),
                methods=("POST",),
                name="a2a_jsonrpc_agent",
                summary="A2A JSON-RPC endpoint of one agent",
                description=rpc_doc,
                tags=tags,
                api=False,
                role=Role.USER,
                body="protocol",
                request_model=_JSONRPC_SCHEMA,
                response_model=_OBJECT,
                responses={404: "No running agent"},
            ),
            RouteSpec(
                "/a2a/tasks/send",
                self._on_rest("send"),
                methods=("POST",),
                name="a2a_task_send",
                summary="Send a task to a local agent",
                tags=tags,
                api=False,
                role=Role.USER,
                body="protocol",
                request_model=_SEND_SCHEMA,
                response_model=_OBJECT,
                responses={
                    202: "The task is still running; poll it",
                    404: "No running agent",
                },
            ),
            RouteSpec(
                "/a2a/tasks/{task_id}",
                self._on_rest("get"),
                name="a2a_task_get",
                summary="A served task's status and result",
                tags=tags,
                api=False,
                role=Role.USER,
                body="protocol",
                response_model=_OBJECT,
                responses={404: "No such task"},
            ),
            RouteSpec(
                "/a2a/tasks/{task_id}/cancel",
                self._on_rest("cancel"),
                methods=("POST",),
                name="a2a_task_cancel",
                summary="Cancel a running task",
                tags=tags,
                api=False,
                role=Role.USER,
                body="protocol",
                response_model=_OBJECT,
                responses={404: "No such task", 409: "The task has already finished"},
            ),
            *self._management_routes(),
        )

    def _management_routes(self) -> tuple[RouteSpec, ...]:
        tags = ("a2a",)
        return (
            RouteSpec(
                "/a2a/agents",
                self._on_api("list_agents"),
                name="a2a_remote_agents",
                summary="External A2A agents, discovered or trusted",
                tags=tags,
                response_model=_OBJECT,
            ),
            RouteSpec(
                "/a2a/agents/{agent_id}",
                self._on_api("get_agent"),
                name="a2a_remote_agent",
                summary="One external agent, by id, URL or name",
                tags=tags,
                response_model=_OBJECT,
                responses={404: "Not discovered"},
            ),
            RouteSpec(
                "/a2a/discover",
                self._on_api("discover"),
                methods=("POST",),
                name="a2a_discover",
                summary="Fetch an agent's card through the outbound guard; register it pending",
                tags=tags,
                role=Role.OWNER,
                request_model={
                    "type": "object",
                    "properties": {"url": {"type": "string"}},
                    "required": ["url"],
                },
                response_model=_OBJECT,
                responses={
                    200: "Known already; card refreshed",
                    202: "Registered, pending approval",
                    400: "Refused by the outbound guard or a bad URL",
                    409: "Another agent has this name",
                    502: "The card could not be fetched or is invalid",
                },
            ),
            RouteSpec(
                "/a2a/agents/{agent_id}/approve",
                self._on_api("approve"),
                methods=("POST",),
                name="a2a_approve",
                summary="Trust a discovered agent",
                tags=tags,
                response_model=_OBJECT,
                responses={404: "Not discovered"},
            ),
            RouteSpec(
                "/a2a/send",
                self._on_api("send"),
                methods=("POST",),
                name="a2a_send",
                summary="Send a task to a trusted external agent",
                tags=tags,
                request_model={
                    "type": "object",
                    "properties": {
                        "agent_id": {"type": "string"},
                        "url": {"type": "string"},
                        "message": {"oneOf": [{"type": "string"}, _MESSAGE_SCHEMA]},
                        "session_id": {"type": "string"},
                        "wait": {"type": "boolean"},
                    },
                    "required": ["message"],
                },
                response_model=_OBJECT,
                responses={
                    403: "The agent awaits approval",
                    404: "Not discovered",
                    502: "The agent failed",
                    504: "The agent did not answer in time",
                },
            ),
            RouteSpec(
                "/a2a/tasks/{task_id}/status",
                self._on_api("task_status"),
                name="a2a_remote_task_status",
                summary="Ask an external agent for a task's state",
                tags=tags,
                role=Role.USER,
                query=(
                    QueryParam("url", description="the agent, for a task not sent from here"),
                    QueryParam("agent_id", description="the agent, by id or name"),
                ),
                response_model=_OBJECT,
                responses={404: "Unknown task", 502: "The agent failed"},
            ),
        )


@hookimpl
def register_transports(register: Callable[[type[Transport]], None]) -> None:
    register(A2ATransport)
