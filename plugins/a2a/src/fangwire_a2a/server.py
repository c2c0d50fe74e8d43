"""fangwire as an A2A server: cards, the JSON-RPC binding, and the service behind them.

The protocol work (JSON-RPC 1.0 method names with the ``A2A-Version`` check, the 0.3 method
names through the SDK's compatibility adapter, SSE streaming, A2A error codes, task lifecycle)
is done by ``a2a-sdk``'s ``JsonRpcDispatcher`` and ``DefaultRequestHandler``; fangwire supplies
the executor (:mod:`fangwire_a2a.executor`), the persistent task store
(:mod:`fangwire_a2a.taskstore`), the caller's identity and the agent a request is for.

Endpoints (served by :class:`fangwire_a2a.transport.A2ATransport`):

- ``GET /.well-known/agent-card.json`` and ``GET /.well-known/agent.json`` (public): the card
  of the daemon, whose interfaces point at ``/a2a``.
- ``GET /a2a/agents`` (public): one card per running agent; ``GET /a2a/agents/{id}`` one of them.
- ``POST /a2a`` (JSON-RPC, the default agent) and ``POST /a2a/agents/{id}`` (JSON-RPC, that
  agent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from a2a.auth.user import User
from a2a.extensions.common import HTTP_EXTENSION_HEADER, get_requested_extensions
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes.common import ServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.types.a2a_pb2 import AgentCard, AgentSkill
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from fangwire.agents import Agent
from fangwire.http.context import principal_of
from fangwire.http.errors import ApiError
from fangwire.http.jsonbody import parse_json_bytes
from fangwire_a2a.cards import agent_skill, build_card, card_json
from fangwire_a2a.executor import AgentBridge
from fangwire_a2a.settings import A2ASettings
from fangwire_a2a.taskstore import AGENT_KEY, PersistentTaskStore

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

#: Request-scope key carrying the resolved local agent id to the call-context builder.
SCOPE_AGENT = "fangwire.a2a.agent_id"
RPC_PATH = "/a2a"
CARD_CACHE_CONTROL = "no-cache"
STOP_TIMEOUT_SECONDS = 5.0
#: Streams (SSE) open at once over the JSON-RPC binding; more get 429.
MAX_STREAMS = 64
STREAM_METHODS = frozenset(
    {"message/stream", "tasks/resubscribe", "SendStreamingMessage", "SubscribeToTask"}
)


class Caller(User):
    """The authenticated fangwire principal, as the SDK sees it (tasks are scoped to it)."""

    def __init__(self, subject: str) -> None:
        self._subject = subject

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self._subject


def caller_context(request: Request, agent_id: str) -> ServerCallContext:
    principal = principal_of(request)
    return ServerCallContext(
        user=Caller(principal.subject if principal else "anonymous"),
        state={"headers": dict(request.headers), AGENT_KEY: agent_id},
        requested_extensions=get_requested_extensions(
            request.headers.getlist(HTTP_EXTENSION_HEADER)
        ),
    )


class CallContextBuilder(ServerCallContextBuilder):
    def build(self, request: Request) -> ServerCallContext:
        return caller_context(request, str(request.scope.get(SCOPE_AGENT, "")))


class A2AServer:
    """The served side of A2A for one runtime (exists while the runtime serves)."""

    def __init__(self, runtime: Runtime, settings: A2ASettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.tasks = PersistentTaskStore(
            runtime.store, retention_days=settings.task_retention_days, max_tasks=settings.max_tasks
        )
        self.handler = DefaultRequestHandler(
            agent_executor=AgentBridge(runtime),
            task_store=self.tasks,
            # Only its capabilities matter to the handler; served cards are built per request.
            agent_card=build_card(
                name=settings.name,
                description=settings.description,
                url="http://127.0.0.1/a2a",
                version=runtime.version,
                skills=[
                    AgentSkill(id="chat", name="chat", description="local agents", tags=["chat"])
                ],
                auth_required=False,
            ),
        )
        self.open_streams = 0
        self.dispatcher = JsonRpcDispatcher(
            request_handler=self.handler,
            context_builder=CallContextBuilder(),
            enable_v0_3_compat=True,
        )

    async def start(self) -> None:
        await self.tasks.fail_interrupted()
        await self.tasks.prune()

    async def stop(self) -> None:
        """Stop running tasks (they are marked failed at the next start), bounded in time."""
        with anyio.move_on_after(STOP_TIMEOUT_SECONDS):
            await self.handler.aclose()

    # -- agents and URLs ------------------------------------------------------------------------

    def base_url(self, request: Request) -> str:
        return self.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")

    def auth_required(self) -> bool:
        return any(p.is_configured() for p in self.runtime.auth_providers)

    async def running_agents(self) -> list[Agent]:
        return [a for a in await self.runtime.agents.all() if a.state == "running"]

    async def default_agent(self) -> Agent:
        """The agent answering on ``/a2a``: ``[a2a] default_agent``, else the oldest running."""
        wanted = self.settings.default_agent
        if wanted:
            agent = await self.runtime.agents.find(wanted)
            if agent is not None and agent.state == "running":
                return agent
            raise ApiError(
                503, f"the default A2A agent {wanted!r} is not running", code="a2a_no_agent"
            )
        agents = await self.running_agents()
        if not agents:
            raise ApiError(503, "no running agent can answer A2A requests", code="a2a_no_agent")
        return agents[0]

    async def agent(self, name_or_id: str) -> Agent:
        agent = await self.runtime.agents.find(name_or_id)
        if agent is None or agent.state != "running":
            raise ApiError(404, f"no running agent {name_or_id!r}", code="not_found")
        return agent

    def _card(self, url: str, agents: list[Agent]) -> AgentCard:
        return build_card(
            name=self.settings.name,
            description=self.settings.description,
            url=url,
            version=self.runtime.version,
            skills=[agent_skill(a) for a in agents],
            auth_required=self.auth_required(),
        )

    def agent_card(self, agent: Agent, base: str) -> dict[str, Any]:
        card = build_card(
            name=agent.name,
            # Never the system prompt: this card is public.
            description=f"The fangwire agent {agent.name}",
            url=f"{base}/a2a/agents/{agent.id}",
            version=self.runtime.version,
            skills=[agent_skill(agent)],
            auth_required=self.auth_required(),
        )
        return {**card_json(card), "id": agent.id}

    # -- endpoints ------------------------------------------------------------------------------

    async def well_known_card(self, request: Request) -> Response:
        base = self.base_url(request)
        card = self._card(f"{base}{RPC_PATH}", await self.running_agents())
        return JSONResponse(card_json(card), headers={"cache-control": CARD_CACHE_CONTROL})

    async def list_agents(self, request: Request) -> Response:
        base = self.base_url(request)
        cards = [self.agent_card(a, base) for a in await self.running_agents()]
        return JSONResponse(
            {"items": cards, "agents": cards, "total": len(cards), "offset": 0, "limit": None}
        )

    async def get_agent_card(self, request: Request) -> Response:
        agent = await self.agent(request.path_params["agent_id"])
        return JSONResponse(self.agent_card(agent, self.base_url(request)))

    async def jsonrpc_default(self, request: Request) -> Response:
        return await self._jsonrpc(request, await self.default_agent())

    async def jsonrpc_agent(self, request: Request) -> Response:
        return await self._jsonrpc(request, await self.agent(request.path_params["agent_id"]))

    async def _jsonrpc(self, request: Request, agent: Agent) -> Response:
        raw = await request.body()  # a body over the limit is a 413 before any parsing
        try:
            body = parse_json_bytes(raw, max_depth=self.runtime.config.http.max_json_depth)
        except ApiError as exc:
            return JSONResponse(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": exc.message}}
            )
        streams = isinstance(body, dict) and body.get("method") in STREAM_METHODS
        if streams and self.open_streams >= MAX_STREAMS:
            raise ApiError(
                429,
                f"too many A2A streams are open (limit {MAX_STREAMS})",
                code="a2a_stream_limit",
                headers={"Retry-After": "5"},
            )
        request.scope[SCOPE_AGENT] = agent.id
        response = await self.dispatcher.handle_requests(request)
        if not streams or response.media_type != "text/event-stream":
            return response
        self.open_streams += 1
        return CountedStream(response, self._stream_closed)

    def _stream_closed(self) -> None:
        self.open_streams -= 1


class CountedStream(Response):
    """Wraps a streaming response so the stream's end (or the client leaving) is counted."""

    def __init__(self, inner: Response, closed: Callable[[], None]) -> None:
        self._inner = inner
        self._closed = closed
        self.status_code = inner.status_code
        self.media_type = inner.media_type
        self.raw_headers = inner.raw_headers  # shared: headers added here reach the stream
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._inner(scope, receive, send)
        finally:
            self._closed()
