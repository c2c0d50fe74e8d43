"""The ``ntfy`` channel against a local fake of ntfy's documented API, served by uvicorn.

The other party is a real HTTP client of that server: it publishes to the topic with
``POST /<topic>`` and reads the topic back with ``GET /<topic>/json?poll=1``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

from fangwire.app import create_app
from fangwire.channels import ChannelError, OutboundMessage
from fangwire.runtime import Runtime
from fangwire.testing.channels import ChannelConformance
from fangwire.testing.live import live_server
from fangwire_channels.ntfy import NtfyChannel
from tests.channels.fakes.ntfy import FakeNtfy

pytestmark = pytest.mark.anyio

TIMEOUT = 10
TOPIC = "fangwire-alerts"
TOKEN = "tk_0123456789abcdefghijklmnopqrs"


class Setup:
    def __init__(self, fake: FakeNtfy, url: str, client: httpx.AsyncClient) -> None:
        self.fake = fake
        self.url = url
        self.client = client

    def runtime(self, make_runtime, *, token: str | None = None, extra: str = "") -> Runtime:
        text = (
            f'[channels.ntfy]\ntopic = "{TOPIC}"\nserver_url = "{self.url}"\n'
            f'agent = "assistant"\n{extra}'
        )
        return make_runtime(text, environ={"NTFY_TOKEN": token} if token else {})

    async def publish(self, text: str, *, token: str | None = None) -> dict:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = await self.client.post(f"/{TOPIC}", content=text.encode(), headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def topic_texts(self, *, token: str | None = None) -> list[str]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = await self.client.get(f"/{TOPIC}/json", params={"poll": "1"}, headers=headers)
        assert response.status_code == 200, response.text
        return [line["message"] for line in map(_json, response.text.splitlines()) if line]

    async def wait_for_text(self, text: str, *, token: str | None = None) -> list[str]:
        with anyio.fail_after(TIMEOUT):
            while text not in (texts := await self.topic_texts(token=token)):
                await anyio.sleep(0.05)
        return texts

    async def wait_subscribed(self, count: int = 1) -> None:
        with anyio.fail_after(TIMEOUT):
            while self.fake.subscriber_count < count:
                await anyio.sleep(0.02)


def _json(line: str) -> dict:
    return json.loads(line) if line.strip() else {}


async def make_setup(fake: FakeNtfy) -> AsyncIterator[Setup]:
    async with live_server(fake.app) as url, httpx.AsyncClient(base_url=url, timeout=5) as client:
        try:
            yield Setup(fake, url, client)
        finally:
            fake.drop_subscribers()


@pytest.fixture
async def ntfy() -> AsyncIterator[Setup]:
    async for setup in make_setup(FakeNtfy(keepalive=0.2)):
        yield setup


def adapter(runtime: Runtime) -> NtfyChannel:
    channel = runtime.channels.running("ntfy").adapter
    assert isinstance(channel, NtfyChannel)
    return channel


async def test_a_message_on_the_topic_is_answered_on_the_topic(ntfy: Setup, make_runtime):
    runtime = ntfy.runtime(make_runtime)
    async with runtime.serving():
        await ntfy.wait_subscribed()
        await ntfy.publish("hello bot")
        texts = await ntfy.wait_for_text("echo: hello bot")
        await anyio.sleep(0.3)  # time enough for an echo loop to show itself
        assert await ntfy.topic_texts() == texts == ["hello bot", "echo: hello bot"]
        counters = runtime.channels.runners["ntfy"].counters
        assert counters.received == 1 and counters.sent == 1
        assert ntfy.fake.publishes[-1]["headers"]["content-type"].startswith("text/plain")


async def test_reconnect_resumes_from_the_last_id_without_loss_or_duplicates(
    ntfy: Setup, make_runtime
):
    runtime = ntfy.runtime(make_runtime)
    async with runtime.serving():
        await ntfy.wait_subscribed()
        await ntfy.publish("m0")
        await ntfy.wait_for_text("echo: m0")
        last = adapter(runtime).last_id
        assert last == ntfy.fake.messages[-1]["id"]
        ntfy.fake.drop_subscribers()
        await ntfy.publish("m1")
        await ntfy.publish("m2")
        await ntfy.wait_subscribed()
        await ntfy.wait_for_text("echo: m2")
        await ntfy.wait_for_text("echo: m1")
        assert ntfy.fake.subscriptions[0]["since"].isdigit()  # the time of the first start
        assert ntfy.fake.subscriptions[-1]["since"] == last
        await anyio.sleep(0.3)
        texts = await ntfy.topic_texts()
        assert sorted(texts) == sorted(["m0", "echo: m0", "m1", "m2", "echo: m1", "echo: m2"])
        assert runtime.channels.runners["ntfy"].status == "running"


async def test_a_restart_answers_what_was_published_while_down_and_nothing_twice(
    ntfy: Setup, make_runtime
):
    first = ntfy.runtime(make_runtime)
    async with first.serving():
        await ntfy.wait_subscribed()
        await ntfy.publish("before")
        await ntfy.wait_for_text("echo: before")
        await anyio.sleep(0.3)  # our own answer comes back on the stream and moves the position
    ntfy.fake.drop_subscribers()
    await ntfy.publish("while down")
    second = ntfy.runtime(make_runtime)
    async with second.serving():
        await ntfy.wait_subscribed()
        await ntfy.wait_for_text("echo: while down")
        await anyio.sleep(0.3)
        texts = await ntfy.topic_texts()
    assert sorted(texts) == sorted(["before", "echo: before", "while down", "echo: while down"])
    assert ntfy.fake.subscriptions[-1]["since"] not in ("", None)


async def test_a_drop_before_any_message_resumes_from_when_the_stream_opened(
    ntfy: Setup, make_runtime
):
    runtime = ntfy.runtime(make_runtime)
    async with runtime.serving():
        await ntfy.wait_subscribed()
        ntfy.fake.drop_subscribers()
        await ntfy.publish("during the gap")
        await ntfy.wait_subscribed()
        await ntfy.wait_for_text("echo: during the gap")
        assert ntfy.fake.subscriptions[-1]["since"].isdigit()
        await anyio.sleep(0.3)
        assert await ntfy.topic_texts() == ["during the gap", "echo: during the gap"]


async def test_own_messages_are_not_answered(ntfy: Setup, make_runtime):
    runtime = ntfy.runtime(make_runtime)
    async with runtime.serving():
        await ntfy.wait_subscribed()
        receipt = await runtime.channels.send("ntfy", TOPIC, OutboundMessage("bot speaking"))
        assert receipt.message_ids == (ntfy.fake.messages[-1]["id"],)
        await ntfy.publish("now you")
        await ntfy.wait_for_text("echo: now you")
        await anyio.sleep(0.3)
        assert await ntfy.topic_texts() == ["bot speaking", "now you", "echo: now you"]
        assert runtime.channels.runners["ntfy"].counters.received == 1


async def test_protected_topic_needs_the_token(make_runtime):
    fake = FakeNtfy(tokens={TOKEN: {TOPIC}}, protected={TOPIC}, keepalive=0.2)
    async for setup in make_setup(fake):
        runtime = setup.runtime(make_runtime, token=TOKEN)
        async with runtime.serving():
            await setup.wait_subscribed()
            await setup.publish("secret hello", token=TOKEN)
            await setup.wait_for_text("echo: secret hello", token=TOKEN)
            publish = setup.fake.publishes[-1]["headers"]
            assert publish["authorization"] == f"Bearer {TOKEN}"


async def test_without_the_token_publish_and_subscribe_are_refused(make_runtime, caplog):
    fake = FakeNtfy(tokens={TOKEN: {TOPIC}}, protected={TOPIC}, keepalive=0.2)
    async for setup in make_setup(fake):
        runtime = setup.runtime(make_runtime)
        async with runtime.serving():
            runner = runtime.channels.runners["ntfy"]
            with anyio.fail_after(TIMEOUT):
                while not runner.status.startswith("error"):
                    await anyio.sleep(0.02)
            assert "HTTP 403: forbidden" in runner.status
            with pytest.raises(ChannelError, match="HTTP 403: forbidden") as refused:
                await runtime.channels.send("ntfy", TOPIC, OutboundMessage("hi"))
            assert refused.value.retryable is False
            assert runner.counters.sent == 0
        wrong = setup.runtime(make_runtime, token="tk_wrong")
        async with wrong.serving():
            with pytest.raises(ChannelError, match="HTTP 401: unauthorized"):
                await wrong.channels.send("ntfy", TOPIC, OutboundMessage("hi"))
    assert "tk_wrong" not in caplog.text


async def test_answers_are_cut_at_4096_bytes(ntfy: Setup, make_runtime):
    runtime = ntfy.runtime(make_runtime)
    async with runtime.serving():
        text = " ".join(["größe"] * 2500)  # 20,000 bytes of UTF-8
        receipt = await runtime.channels.send("ntfy", TOPIC, OutboundMessage(text))
    bodies = [p["body"] for p in ntfy.fake.publishes]
    assert len(receipt.message_ids) == len(bodies) == 5
    assert all(len(b) <= 4096 for b in bodies)
    assert all("attachment" not in m for m in ntfy.fake.messages)
    assert " ".join(b.decode() for b in bodies).split() == text.split()


async def test_the_fake_turns_long_bodies_into_attachments_or_refuses_them(ntfy, make_runtime):
    runtime = ntfy.runtime(make_runtime)
    async with runtime.serving():
        channel = adapter(runtime)
        await channel.send(TOPIC, OutboundMessage("x" * 5000))
        assert ntfy.fake.messages[-1]["attachment"]["size"] == 5000
        ntfy.fake.attachments = False
        with pytest.raises(ChannelError, match="attachments not allowed"):
            await channel.send(TOPIC, OutboundMessage("x" * 5000))
        ntfy.fake.attachments, ntfy.fake.attachment_limit = True, 4500
        with pytest.raises(ChannelError, match="HTTP 413: attachment too large"):
            await channel.send(TOPIC, OutboundMessage("x" * 5000))


async def test_rate_limit_is_retryable_with_the_delay_asked(ntfy: Setup, make_runtime):
    ntfy.fake.publish_limit, ntfy.fake.retry_after = 0, 3
    runtime = ntfy.runtime(make_runtime)
    async with runtime.serving():
        with pytest.raises(ChannelError, match="too many requests") as limited:
            await adapter(runtime).send(TOPIC, OutboundMessage("hi"))
        assert limited.value.retryable is True and limited.value.retry_after == 3.0
        ntfy.fake.publish_limit = None
        receipt = await adapter(runtime).send(TOPIC, OutboundMessage("hi"))
        assert receipt.message_ids == (ntfy.fake.messages[-1]["id"],)


async def test_title_tags_and_priority_go_in_headers(ntfy: Setup, make_runtime):
    runtime = ntfy.runtime(make_runtime)
    async with runtime.serving():
        message = OutboundMessage(
            "disk full", metadata={"title": "Alert", "tags": ["warning", "skull"], "priority": 5}
        )
        await runtime.channels.send("ntfy", "other-topic", message)
        with pytest.raises(ChannelError, match="not a valid ntfy topic"):
            await runtime.channels.send("ntfy", "bad topic/../x", OutboundMessage("hi"))
    stored = ntfy.fake.messages[-1]
    assert stored["topic"] == "other-topic" and stored["title"] == "Alert"
    assert stored["tags"] == ["warning", "skull"] and stored["priority"] == 5


async def test_the_fake_checks_since_and_priority_like_ntfy(ntfy: Setup):
    first = await ntfy.publish("one")
    await ntfy.publish("two")
    polled = await ntfy.client.get(f"/{TOPIC}/json", params={"poll": "1", "since": first["id"]})
    assert [_json(line)["message"] for line in polled.text.splitlines()] == ["two"]
    latest = await ntfy.client.get(f"/{TOPIC}/json", params={"poll": "1", "since": "latest"})
    assert [_json(line)["message"] for line in latest.text.splitlines()] == ["two"]
    bad = await ntfy.client.get(f"/{TOPIC}/json", params={"poll": "1", "since": "soon"})
    assert bad.status_code == 400 and bad.json()["code"] == 40008
    bad = await ntfy.client.post(f"/{TOPIC}", content=b"x", headers={"priority": "9"})
    assert bad.status_code == 400 and bad.json()["code"] == 40007


@asynccontextmanager
async def served(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with live_server(create_app(runtime)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
            yield http


async def test_stops_within_bound_and_keeps_secrets_out(make_runtime, caplog):
    caplog.set_level(logging.DEBUG)
    fake = FakeNtfy(tokens={TOKEN: {TOPIC}}, protected={TOPIC}, keepalive=0.2)
    async for setup in make_setup(fake):
        runtime = setup.runtime(make_runtime, token=TOKEN)
        async with served(runtime) as http:
            await setup.wait_subscribed()
            channel = adapter(runtime)
            listing = (await http.get("/api/channels/ntfy")).json()
            fields = {f["key"]: f for f in listing["fields"]}
            assert fields["token"]["has_value"] is True and "value" not in fields["token"]
            assert fields["server_url"]["value"] == setup.url
            assert listing["status"] == "running" and listing["length_unit"] == "bytes"
            with anyio.fail_after(6):
                await runtime.channels.stop_all()
            with anyio.fail_after(TIMEOUT):  # the server notices at its next keepalive
                while setup.fake.subscriber_count:
                    await anyio.sleep(0.05)
            assert TOKEN not in repr(channel) and TOKEN not in caplog.text
            assert TOKEN not in str(listing)


PEER_TOKEN = "tk_peer0123456789abcdefghijklmn"


class NtfyPeer:
    """A phone on the topic, with its own token, for the harness."""

    target = TOPIC
    refused_target = "locked-topic"

    def __init__(self, fake: FakeNtfy, url: str) -> None:
        self.fake = fake
        self.url = url
        self.settings = {"topic": TOPIC, "server_url": url, "token": TOKEN}
        self.unreachable_settings = {**self.settings, "server_url": "http://127.0.0.1:9"}

    async def inbound(self, text: str) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            response = await http.post(
                f"/{TOPIC}",
                content=text.encode(),
                headers={"authorization": f"Bearer {PEER_TOKEN}"},
            )
            assert response.status_code == 200, response.text

    def _from_bot(self) -> list[str]:
        return [
            p["text"]
            for p in self.fake.publishes
            if p["headers"].get("authorization") == f"Bearer {TOKEN}"
        ]

    async def received(self, count: int) -> list[str]:
        while len(self._from_bot()) < count:
            await anyio.sleep(0.02)
        return self._from_bot()

    def throttle_next(self, retry_after: float) -> None:
        self.fake.throttle_next(retry_after)

    def stall_next(self) -> None:
        self.fake.stall_next()

    def attempts(self) -> int:
        return self.fake.publish_attempts


@pytest.mark.anyio
class TestNtfyConformance(ChannelConformance):
    adapter = NtfyChannel

    @pytest.fixture
    async def peer(self) -> AsyncIterator[NtfyPeer]:
        fake = FakeNtfy(
            tokens={TOKEN: {TOPIC}, PEER_TOKEN: {TOPIC}},
            protected={TOPIC, "locked-topic"},
            keepalive=0.2,
        )
        async for setup in make_setup(fake):
            yield NtfyPeer(fake, setup.url)
