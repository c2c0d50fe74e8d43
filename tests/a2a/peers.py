"""Real ``a2a-sdk`` servers for fangwire's client to talk to, built the way the SDK documents:
an ``AgentExecutor``, ``DefaultRequestHandler`` with an in-memory task store, and the SDK's
Starlette routes (card, JSON-RPC with or without 0.3 compatibility)."""

from __future__ import annotations

from contextlib import asynccontextmanager

import anyio
from a2a.helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import (
    create_agent_card_routes,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Part,
)
from starlette.applications import Starlette

from fangwire.testing.live import live_server


class PeerExecutor(AgentExecutor):
    """Answers ``"peer: " + text`` after ``delay`` seconds, as a task with one artifact."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.inputs: list[str] = []

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        if context.current_task is None:
            await event_queue.enqueue_event(new_task_from_user_message(context.message))
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work()
        text = context.get_user_input()
        self.inputs.append(text)
        if self.delay:
            await anyio.sleep(self.delay)
        await updater.add_artifact([Part(text=f"peer: {text}")], name="answer")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def peer_app(
    base_url: str,
    *,
    versions: tuple[str, ...] = ("1.0",),
    compat: bool = False,
    card_paths: tuple[str, ...] = ("/.well-known/agent-card.json",),
    executor: PeerExecutor | None = None,
    binding: str = "JSONRPC",
    name: str = "sdk peer",
    description: str = "an a2a-sdk server",
) -> Starlette:
    """A Starlette app serving an SDK agent at ``{base_url}/rpc`` (JSON-RPC) or
    ``{base_url}/rest`` (HTTP+JSON), declaring ``versions``."""
    card = AgentCard(
        name=name,
        description=description,
        version="1.2.3",
        supported_interfaces=[
            AgentInterface(
                url=f"{base_url}/rest" if binding == "HTTP+JSON" else f"{base_url}/rpc",
                protocol_binding=binding,
                protocol_version=v,
            )
            for v in versions
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="echo", description="echoes", tags=["echo"])],
    )
    handler = DefaultRequestHandler(
        agent_executor=executor or PeerExecutor(),
        task_store=InMemoryTaskStore(),
        agent_card=card,
    )
    routes = [r for path in card_paths for r in create_agent_card_routes(card, card_url=path)]
    if binding == "HTTP+JSON":
        routes += create_rest_routes(handler, enable_v0_3_compat=compat, path_prefix="/rest")
    else:
        routes += create_jsonrpc_routes(handler, "/rpc", enable_v0_3_compat=compat)
    return Starlette(routes=routes)


class LatePeer:
    """An ASGI app whose real app is set once the server's URL is known (cards need it)."""

    def __init__(self) -> None:
        self.app: Starlette | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.app is not None
        await self.app(scope, receive, send)


@asynccontextmanager
async def running_peer(**options):
    """Serve :func:`peer_app` on 127.0.0.1; yield its base URL."""
    holder = LatePeer()
    async with live_server(holder) as url:
        holder.app = peer_app(url, **options)
        yield url
