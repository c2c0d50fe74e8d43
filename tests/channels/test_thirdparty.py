"""A third-party adapter from its own distribution (``tests/channels/thirdparty``).

``fangwire-channel-example`` is installed by the test run like any outside plugin; these
tests prove it is discovered through its entry point, listed and configured through the API,
works end to end, and passes the conformance harness, against a small chat server here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from fangwire_channel_example import ExampleChannel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fangwire.app import create_app
from fangwire.runtime import Runtime
from fangwire.testing.channels import ChannelConformance
from fangwire.testing.live import live_server

pytestmark = pytest.mark.anyio

TOKEN = "example-bot-token-0123456789"
TIMEOUT = 10


class ChatServer:
    """The example platform: a bot token, users who write to the bot, the bot's answers."""

    def __init__(self) -> None:
        self.users = {"alice", "bob"}
        self.updates: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.throttled: list[float] = []
        self.stalled = 0
        self.send_attempts = 0
        self._new = anyio.Event()
        self.app = Starlette(
            routes=[
                Route("/messages", self.messages, methods=["POST"]),
                Route("/updates", self.poll, methods=["GET"]),
            ]
        )

    def write(self, sender: str, text: str) -> None:
        self.updates.append({"id": len(self.updates) + 1, "from": sender, "text": text})
        self._new.set()
        self._new = anyio.Event()

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {TOKEN}"

    async def messages(self, request: Request) -> JSONResponse:
        self.send_attempts += 1
        if self.stalled:
            self.stalled -= 1
            await anyio.sleep(5)
        if not self._authorized(request):
            return JSONResponse({"error": "bad token"}, status_code=401)
        if self.throttled:
            delay = self.throttled.pop(0)
            return JSONResponse(
                {"error": "slow"}, status_code=429, headers={"retry-after": str(delay)}
            )
        data = await request.json()
        if data.get("to") not in self.users:
            return JSONResponse({"error": f"no such user {data.get('to')}"}, status_code=404)
        self.sent.append({"id": len(self.sent) + 1, **data})
        return JSONResponse({"id": len(self.sent)})

    async def poll(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"error": "bad token"}, status_code=401)
        after = int(request.query_params.get("after", "0"))
        with anyio.move_on_after(1.0):  # the real server holds up to ?timeout; tests need less
            while not [u for u in self.updates if u["id"] > after]:
                await self._new.wait()
        return JSONResponse([u for u in self.updates if u["id"] > after])


class ChatPeer:
    target = "alice"
    refused_target = "mallory"

    def __init__(self, server: ChatServer, url: str) -> None:
        self.server = server
        self.settings = {"base_url": url, "token": TOKEN}
        self.unreachable_settings = {**self.settings, "base_url": "http://127.0.0.1:9"}

    async def inbound(self, text: str) -> None:
        self.server.write("alice", text)

    async def received(self, count: int) -> list[str]:
        while len(self.server.sent) < count:
            await anyio.sleep(0.02)
        return [m["text"] for m in self.server.sent]

    def throttle_next(self, retry_after: float) -> None:
        self.server.throttled.append(retry_after)

    def stall_next(self) -> None:
        self.server.stalled += 1

    def attempts(self) -> int:
        return self.server.send_attempts


@pytest.fixture
async def chat() -> AsyncIterator[ChatPeer]:
    server = ChatServer()
    async with live_server(server.app) as url:
        yield ChatPeer(server, url)


def test_discovered_through_its_own_distributions_entry_point(runtime: Runtime) -> None:
    record = runtime.pm.records["example"]
    assert record.group == "fangwire.channels"
    assert record.distribution == "fangwire-channel-example"
    assert record.status == "loaded"
    assert runtime.channels.adapter_class("example") is ExampleChannel


async def test_listed_configured_and_answering_through_the_api(make_runtime, chat: ChatPeer):
    runtime = make_runtime("")
    async with live_server(create_app(runtime)) as url, httpx.AsyncClient(base_url=url) as http:
        listing = (await http.get("/api/channels")).json()
        item = next(c for c in listing["channels"] if c["name"] == "example")
        assert item["display_name"] == "Example chat" and item["status"] == "unconfigured"
        assert [f["key"] for f in item["fields"]] == ["base_url", "token"]
        response = await http.post(
            "/api/channels/example/configure",
            json={"fields": {**chat.settings, "agent": "assistant"}},
        )
        assert response.status_code == 200, response.text
        assert response.json()["activated"] is True
        assert TOKEN not in runtime.config_file.path.read_text()
        chat.server.write("bob", "hello from outside")
        with anyio.fail_after(TIMEOUT):
            while not chat.server.sent:
                await anyio.sleep(0.02)
        assert chat.server.sent[0] == {"id": 1, "to": "bob", "text": "echo: hello from outside"}
        response = await http.post("/api/channels/example/test", json={"target": "mallory"})
        assert response.status_code == 502
        assert "no such user mallory" in response.json()["error"]["message"]
        item = (await http.get("/api/channels/example")).json()
        assert item["status"] == "running" and item["counters"]["received"] == 1


@pytest.mark.anyio
class TestThirdPartyConformance(ChannelConformance):
    adapter = ExampleChannel

    @pytest.fixture
    async def peer(self, chat: ChatPeer) -> ChatPeer:
        return chat
