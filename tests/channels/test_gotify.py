"""The ``gotify`` channel against a local fake of Gotify's documented REST + WebSocket API.

The other parties are real clients of that server: a second application publishing with its
own app token, and a "phone" reading with a client token over REST and the WebSocket stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from httpx_ws import aconnect_ws

from fangwire.app import create_app
from fangwire.channels import ChannelError, OutboundMessage
from fangwire.runtime import Runtime
from fangwire.testing.channels import ChannelConformance
from fangwire.testing.live import live_server
from fangwire_channels.gotify import GotifyChannel
from tests.channels.fakes.gotify import UNAUTHORIZED, FakeGotify

pytestmark = pytest.mark.anyio

TIMEOUT = 10


class Setup:
    def __init__(self, fake: FakeGotify, url: str, http: httpx.AsyncClient) -> None:
        self.fake = fake
        self.url = url
        self.http = http
        self.bot = fake.add_app("fangwire bot")
        self.monitor = fake.add_app("monitor", default_priority=2)
        self.phone = fake.add_client("phone")

    def runtime(self, make_runtime, *, app: str | None = None, client: str | None = None):
        environ = {
            "GOTIFY_APP_TOKEN": app or self.bot["token"],
            "GOTIFY_CLIENT_TOKEN": client or self.phone,
        }
        text = f'[channels.gotify]\nserver_url = "{self.url}"\nagent = "assistant"\n'
        return make_runtime(text, environ=environ)

    async def push(self, text: str, title: str = "Monitor") -> dict[str, Any]:
        response = await self.http.post(
            "/message",
            json={"message": text, "title": title},
            headers={"x-gotify-key": self.monitor["token"]},
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def messages(self) -> list[dict[str, Any]]:
        response = await self.http.get("/message", headers={"x-gotify-key": self.phone})
        assert response.status_code == 200, response.text
        return list(reversed(response.json()["messages"]))

    async def wait_for(self, text: str) -> list[dict[str, Any]]:
        with anyio.fail_after(TIMEOUT):
            while True:
                messages = await self.messages()
                if text in [m["message"] for m in messages]:
                    return messages
                await anyio.sleep(0.05)

    async def wait_streams(self, count: int = 1) -> None:
        with anyio.fail_after(TIMEOUT):
            while self.fake.stream_count < count:
                await anyio.sleep(0.02)


@pytest.fixture
async def gotify() -> AsyncIterator[Setup]:
    fake = FakeGotify()
    async with live_server(fake.app, ws="wsproto") as url:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            try:
                yield Setup(fake, url, http)
            finally:
                fake.drop_streams()


def adapter(runtime: Runtime) -> GotifyChannel:
    channel = runtime.channels.running("gotify").adapter
    assert isinstance(channel, GotifyChannel)
    return channel


async def test_a_push_from_another_app_is_answered(gotify: Setup, make_runtime):
    runtime = gotify.runtime(make_runtime)
    async with runtime.serving():
        await gotify.wait_streams()
        assert adapter(runtime).app_id == gotify.bot["id"]
        async with httpx.AsyncClient(timeout=5) as phone_http:
            async with aconnect_ws(
                f"{gotify.url}/stream", phone_http, headers={"x-gotify-key": gotify.phone}
            ) as phone:
                await gotify.wait_streams(2)
                await gotify.push("disk almost full")
                with anyio.fail_after(TIMEOUT):
                    first = json.loads(await phone.receive_text())
                    second = json.loads(await phone.receive_text())
        assert first["message"] == "disk almost full" and first["appid"] == gotify.monitor["id"]
        assert second["message"] == "echo: disk almost full"
        assert second["appid"] == gotify.bot["id"]
        assert second["title"] == "fangwire" and second["priority"] == 5
        await anyio.sleep(0.3)  # time enough for an echo loop to show itself
        assert [m["message"] for m in await gotify.messages()] == [
            "disk almost full",
            "echo: disk almost full",
        ]
        counters = runtime.channels.runners["gotify"].counters
        assert counters.received == 1 and counters.sent == 1


async def test_the_fake_keeps_app_and_client_tokens_apart(gotify: Setup):
    as_app = await gotify.http.get("/application", headers={"x-gotify-key": gotify.bot["token"]})
    assert as_app.status_code == 401
    assert as_app.json() == {
        "error": "Unauthorized",
        "errorCode": 401,
        "errorDescription": UNAUTHORIZED,
    }
    as_client = await gotify.http.post(
        "/message", json={"message": "x"}, headers={"authorization": f"Bearer {gotify.phone}"}
    )
    assert as_client.status_code == 401
    by_query = await gotify.http.post(
        "/message", params={"token": gotify.monitor["token"]}, json={"message": "x"}
    )
    assert by_query.status_code == 200 and by_query.json()["priority"] == 2


async def test_swapped_tokens_are_refused_with_the_servers_reason(gotify: Setup, make_runtime):
    runtime = gotify.runtime(make_runtime, app=gotify.phone, client=gotify.bot["token"])
    async with runtime.serving():
        runner = runtime.channels.runners["gotify"]
        with anyio.fail_after(TIMEOUT):
            while not runner.status.startswith("error"):
                await anyio.sleep(0.02)
        assert UNAUTHORIZED in runner.status and "HTTP 401" in runner.status
        with pytest.raises(ChannelError, match="HTTP 401"):
            await runner.adapter.send("x", OutboundMessage("hi"))
        assert gotify.fake.messages == []


async def test_an_app_token_of_someone_else_is_refused_at_start(gotify: Setup, make_runtime):
    runtime = gotify.runtime(make_runtime, app="Anot-a-known-app")
    async with runtime.serving():
        runner = runtime.channels.runners["gotify"]
        with anyio.fail_after(TIMEOUT):
            while not runner.status.startswith("error"):
                await anyio.sleep(0.02)
        assert "app_token is not an application" in runner.status


async def test_send_refusals_are_typed(gotify: Setup, make_runtime):
    runtime = gotify.runtime(make_runtime)
    async with runtime.serving():
        channel = adapter(runtime)
        gotify.fake.fail_next(503)
        with pytest.raises(ChannelError, match="HTTP 503") as busy:
            await channel.send("me", OutboundMessage("hi"))
        assert busy.value.retryable is True
        gotify.fake.fail_next(429, {"Retry-After": "4"})
        with pytest.raises(ChannelError, match="HTTP 429") as limited:
            await channel.send("me", OutboundMessage("hi"))
        assert limited.value.retryable is True and limited.value.retry_after == 4.0
        with pytest.raises(ChannelError, match="Field 'message' is required") as bad:
            await channel.send("me", OutboundMessage(""))
        assert bad.value.retryable is False
        gotify.fake.fail_next(502)
        receipt = await runtime.channels.send("gotify", "me", OutboundMessage("after a retry"))
        assert receipt.message_ids == (str(gotify.fake.messages[-1]["id"]),)
        assert runtime.channels.runners["gotify"].counters.sent == 1


async def test_reconnects_after_the_server_drops_the_stream(gotify: Setup, make_runtime):
    runtime = gotify.runtime(make_runtime)
    async with runtime.serving():
        await gotify.wait_streams()
        gotify.fake.drop_streams()
        await gotify.push("while you were away")  # no stream is open: caught up on reconnect
        runner = runtime.channels.runners["gotify"]
        with anyio.fail_after(TIMEOUT):
            while runner.status == "running":
                await anyio.sleep(0.01)
        await gotify.wait_streams()
        await gotify.wait_for("echo: while you were away")
        with anyio.fail_after(TIMEOUT):
            while runner.status != "running":
                await anyio.sleep(0.01)
        await gotify.push("still there?")
        messages = await gotify.wait_for("echo: still there?")
        assert runner.loop.attempts >= 2
        await anyio.sleep(0.3)
        texts = [m["message"] for m in await gotify.messages()]
        assert texts == [m["message"] for m in messages]
        assert texts.count("echo: while you were away") == 1


async def test_messages_from_before_the_start_are_not_answered(gotify: Setup, make_runtime):
    await gotify.push("old news")
    runtime = gotify.runtime(make_runtime)
    async with runtime.serving():
        await gotify.wait_streams()
        await gotify.push("fresh")
        await gotify.wait_for("echo: fresh")
        await anyio.sleep(0.3)
        assert [m["message"] for m in await gotify.messages()] == [
            "old news",
            "fresh",
            "echo: fresh",
        ]


async def test_configure_test_stop_and_secrets(gotify: Setup, make_runtime, caplog):
    caplog.set_level(logging.DEBUG)
    runtime = make_runtime("")
    async with live_server(create_app(runtime)) as url, httpx.AsyncClient(base_url=url) as http:
        item = (await http.get("/api/channels/gotify")).json()
        fields = {f["key"]: f for f in item["fields"]}
        assert [k for k, f in fields.items() if f["type"] == "secret"] == [
            "app_token",
            "client_token",
        ]
        assert fields["app_token"]["env_var"] == "GOTIFY_APP_TOKEN"
        response = await http.post(
            "/api/channels/gotify/configure",
            json={
                "fields": {
                    "server_url": gotify.url,
                    "app_token": gotify.bot["token"],
                    "client_token": gotify.phone,
                }
            },
        )
        assert response.status_code == 200 and response.json()["activated"] is True
        await gotify.wait_streams()
        response = await http.post("/api/channels/gotify/test")
        assert response.status_code == 200, response.text
        assert gotify.fake.messages[-1]["message"] == "fangwire test message"
        channel = adapter(runtime)
        listing = (await http.get("/api/channels")).text
        with anyio.fail_after(6):
            await runtime.channels.stop_all()
        with anyio.fail_after(TIMEOUT):
            while gotify.fake.stream_count:
                await anyio.sleep(0.02)
    for token in (gotify.bot["token"], gotify.phone):
        assert token not in repr(channel) and token not in caplog.text
        assert token not in listing and token not in runtime.config_file.path.read_text()


class GotifyPeer:
    """Another application pushing, and the user's client reading, for the harness."""

    target = "admin"
    refused_target = None

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.settings = {
            "server_url": setup.url,
            "app_token": setup.bot["token"],
            "client_token": setup.phone,
        }
        self.unreachable_settings = {**self.settings, "server_url": "http://127.0.0.1:9"}

    async def inbound(self, text: str) -> None:
        await self.setup.push(text)

    def _from_bot(self) -> list[str]:
        bot = self.setup.bot["id"]
        return [m["message"] for m in self.setup.fake.messages if m["appid"] == bot]

    async def received(self, count: int) -> list[str]:
        while len(self._from_bot()) < count:
            await anyio.sleep(0.02)
        return self._from_bot()

    def throttle_next(self, retry_after: float) -> None:
        self.setup.fake.fail_next(429, {"Retry-After": str(retry_after)})

    def stall_next(self) -> None:
        self.setup.fake.stalled += 1

    def attempts(self) -> int:
        return self.setup.fake.publish_attempts


@pytest.mark.anyio
class TestGotifyConformance(ChannelConformance):
    adapter = GotifyChannel

    @pytest.fixture
    async def peer(self, gotify: Setup) -> GotifyPeer:
        return GotifyPeer(gotify)
