"""The ``webhook`` channel against a live fangwire and a real local HTTP receiver.

Every inbound request is a real HTTP POST to fangwire served by uvicorn on 127.0.0.1, signed
here with the standard library; every reply is a real POST to :class:`Receiver`, which
verifies the signature on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from fangwire.app import create_app
from fangwire.channels import ChannelError, OutboundMessage
from fangwire.runtime import Runtime
from fangwire.testing.channels import ChannelConformance
from fangwire.testing.live import live_server
from fangwire_channels.webhook import WebhookChannel
from tests.channels.servers.receiver import Receiver

pytestmark = pytest.mark.anyio

SECRET = "whsec-0123456789-very-secret"
TIMEOUT = 10
URL = "/channels/webhook/webhook"


def config(callback: str, *, strict: bool = False, extra: str = "") -> str:
    return (
        f'[channels.webhook]\ncallback_url = "{callback}"\nlisten_port = 8460\n'
        f'agent = "assistant"\nrequire_timestamp = {"true" if strict else "false"}\n{extra}'
    )


def sign(body: bytes, *, stamp: str | None = None, secret: str = SECRET) -> str:
    signed = f"{stamp}.".encode() + body if stamp is not None else body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def payload(text: str = "hello", **extra: object) -> bytes:
    return json.dumps(
        {"sender_id": "u-42", "sender_name": "Ada", "message": text, **extra}
    ).encode()


def now_ms(offset: float = 0.0) -> str:
    return str(int((time.time() + offset) * 1000))


class Live:
    def __init__(self, runtime: Runtime, url: str, receiver: Receiver, receiver_url: str) -> None:
        self.runtime = runtime
        self.http = httpx.AsyncClient(base_url=url, timeout=TIMEOUT)
        self.receiver = receiver
        self.receiver_url = receiver_url

    @property
    def adapter(self) -> WebhookChannel:
        adapter = self.runtime.channels.running("webhook").adapter
        assert isinstance(adapter, WebhookChannel)
        return adapter

    async def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return await self.http.post(URL, content=body, headers=headers)


async def start(
    make_runtime, *, strict: bool = False, secret: str | None = SECRET, extra: str = ""
):
    receiver = Receiver(SECRET, strict=strict)
    environ = {"WEBHOOK_SECRET": secret} if secret else {}
    async with live_server(receiver.app) as receiver_url:
        runtime = make_runtime(
            config(f"{receiver_url}/hook", strict=strict, extra=extra), environ=environ
        )
        async with live_server(create_app(runtime)) as url:
            live = Live(runtime, url, receiver, receiver_url)
            async with live.http:
                yield live


@pytest.fixture
async def live(make_runtime) -> AsyncIterator[Live]:
    async for value in start(make_runtime):
        yield value


@pytest.fixture
async def strict(make_runtime) -> AsyncIterator[Live]:
    async for value in start(make_runtime, strict=True):
        yield value


async def test_signed_message_is_answered_through_the_signed_callback(live: Live) -> None:
    body = payload("ping", thread_id="t-9")
    response = await live.post(body, {"x-webhook-signature": sign(body)})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    with anyio.fail_after(TIMEOUT):
        received = await live.receiver.wait_for(1)
    assert live.receiver.rejected == []
    answer = received[0]
    assert answer["message"] == "echo: ping"
    assert answer["recipient_id"] == "u-42" and answer["sender_id"] == "fangwire"
    assert answer["thread_id"] == "t-9"
    headers = live.receiver.headers[0]
    assert headers["x-webhook-timestamp"].isdigit() and headers["x-webhook-id"]
    counters = live.runtime.channels.runners["webhook"].counters
    with anyio.fail_after(TIMEOUT):
        while counters.sent < 1:  # the receiver answers before the core counts the send
            await anyio.sleep(0.01)
    assert counters.received == 1 and counters.sent == 1


async def test_chat_id_routes_the_answer(live: Live) -> None:
    body = payload("to the room", chat_id="room-7")
    assert (await live.post(body, {"x-webhook-signature": sign(body)})).status_code == 200
    with anyio.fail_after(TIMEOUT):
        received = await live.receiver.wait_for(1)
    assert received[0]["recipient_id"] == "room-7"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-webhook-signature": "sha256=" + "0" * 64},
        {"x-webhook-signature": "md5=abc"},
        {"x-webhook-signature": "sha256=not-hex"},
        {"x-webhook-signature": sign(payload(), secret="another-secret")},
    ],
)
async def test_bad_or_missing_signature_is_401_and_nothing_is_delivered(live: Live, headers):
    response = await live.post(payload(), headers)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "signature verification failed"
    assert live.runtime.channels.runners["webhook"].counters.received == 0


async def test_signature_is_over_the_raw_bytes(live: Live) -> None:
    body = payload()
    reformatted = json.dumps(json.loads(body), indent=2).encode()
    response = await live.post(reformatted, {"x-webhook-signature": sign(body)})
    assert response.status_code == 401


async def test_timestamp_window_and_replayed_ids(live: Live) -> None:
    body = payload("once")
    stale = {"x-webhook-signature": sign(body), "x-webhook-timestamp": now_ms(-3600)}
    assert (await live.post(body, stale)).status_code == 401
    future = {"x-webhook-signature": sign(body), "x-webhook-timestamp": now_ms(+3600)}
    assert (await live.post(body, future)).status_code == 401
    garbled = {"x-webhook-signature": sign(body), "x-webhook-timestamp": "yesterday"}
    assert (await live.post(body, garbled)).status_code == 400
    fresh = {
        "x-webhook-signature": sign(body),
        "x-webhook-timestamp": now_ms(),
        "x-webhook-id": "evt-1",
    }
    assert (await live.post(body, fresh)).status_code == 200
    assert (await live.post(body, fresh)).status_code == 401
    seconds = dict(fresh, **{"x-webhook-id": "evt-2", "x-webhook-timestamp": str(int(time.time()))})
    assert (await live.post(body, seconds)).status_code == 200
    with anyio.fail_after(TIMEOUT):
        await live.receiver.wait_for(2)


async def test_without_an_id_a_delivery_is_its_timestamp_and_signature(live: Live) -> None:
    body = payload("same words")
    first = {"x-webhook-signature": sign(body), "x-webhook-timestamp": now_ms()}
    assert (await live.post(body, first)).status_code == 200
    assert (await live.post(body, first)).status_code == 401, "the same delivery again"
    later = dict(first, **{"x-webhook-timestamp": str(int(first["x-webhook-timestamp"]) + 1)})
    assert (await live.post(body, later)).status_code == 200, "the same words, sent again"
    with anyio.fail_after(TIMEOUT):
        await live.receiver.wait_for(2)


async def test_require_timestamp_signs_timestamp_and_body(strict: Live) -> None:
    body = payload("strict")
    stamp = now_ms()
    plain = {"x-webhook-signature": sign(body)}
    assert (await strict.post(body, plain)).status_code == 401
    body_only = dict(plain, **{"x-webhook-timestamp": stamp, "x-webhook-id": "a"})
    assert (await strict.post(body, body_only)).status_code == 401
    no_id = {"x-webhook-signature": sign(body, stamp=stamp), "x-webhook-timestamp": stamp}
    assert (await strict.post(body, no_id)).status_code == 401
    good = dict(no_id, **{"x-webhook-id": "b"})
    assert (await strict.post(body, good)).status_code == 200, "the signed timestamp is accepted"
    replay = dict(good, **{"x-webhook-id": "c"})
    assert (await strict.post(body, replay)).status_code == 401, "a new id does not help a replay"
    with anyio.fail_after(TIMEOUT):
        received = await strict.receiver.wait_for(1)
    assert strict.receiver.rejected == [], "the reply is signed over '<timestamp>.<body>' too"
    assert received[0]["message"] == "echo: strict"


async def test_without_a_secret_inbound_is_refused(make_runtime) -> None:
    async for live in start(make_runtime, secret=None):
        body = payload()
        response = await live.post(body, {"x-webhook-signature": sign(body)})
        assert response.status_code == 503
        assert "no secret" in response.json()["error"]["message"]
        with pytest.raises(ChannelError, match="secret is not set"):
            await live.adapter.send("u-1", OutboundMessage("hi"))


async def test_bodies_without_a_message_are_acknowledged_and_dropped(live: Live) -> None:
    body = json.dumps({"sender_id": "u-1"}).encode()
    response = await live.post(body, {"x-webhook-signature": sign(body)})
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    for bad in (b"not json", b"[1, 2]"):
        response = await live.post(bad, {"x-webhook-signature": sign(bad)})
        assert response.status_code == 400
    assert live.runtime.channels.runners["webhook"].counters.received == 0


async def test_receipt_ids_come_from_the_receiver_or_are_generated(live: Live) -> None:
    receipt = await live.runtime.channels.send("webhook", "u-1", OutboundMessage("one"))
    assert receipt.message_ids == ("rcv-1",)
    live.receiver.answer(200, {"ok": True})
    receipt = await live.runtime.channels.send("webhook", "u-1", OutboundMessage("two"))
    assert receipt.message_ids == (live.receiver.headers[-1]["x-webhook-id"],)
    live.receiver.answer(202, {"message_id": 77})
    receipt = await live.runtime.channels.send("webhook", "u-1", OutboundMessage("three"))
    assert receipt.message_ids == ("77",)


async def test_refusals_are_typed_and_never_counted_as_sent(live: Live) -> None:
    adapter = live.adapter
    live.receiver.answer(404, {"error": "unknown recipient u-9"})
    with pytest.raises(ChannelError, match="unknown recipient u-9") as refused:
        await live.runtime.channels.send("webhook", "u-9", OutboundMessage("hi"))
    assert refused.value.retryable is False
    live.receiver.answer(429, {"error": "slow down"}, {"Retry-After": "7"})
    with pytest.raises(ChannelError, match="slow down") as limited:
        await adapter.send("u-1", OutboundMessage("hi"))
    assert limited.value.retryable is True and limited.value.retry_after == 7.0
    live.receiver.answer(503, None)
    with pytest.raises(ChannelError, match="HTTP 503") as busy:
        await adapter.send("u-1", OutboundMessage("hi"))
    assert busy.value.retryable is True and busy.value.retry_after is None
    counters = live.runtime.channels.runners["webhook"].counters
    assert counters.sent == 0 and counters.send_failures == 1
    assert live.receiver.received == []


async def test_core_retries_a_429_after_the_delay_asked(live: Live) -> None:
    live.receiver.answer(429, {"error": "busy"}, {"Retry-After": "0"})
    receipt = await live.runtime.channels.send("webhook", "u-1", OutboundMessage("retry me"))
    assert receipt.message_ids == ("rcv-1",)
    assert [m["message"] for m in live.receiver.received] == ["retry me"]


async def test_unreachable_callback_is_a_retryable_error(make_runtime) -> None:
    runtime = make_runtime(config("http://127.0.0.1:9/hook"), environ={"WEBHOOK_SECRET": SECRET})
    async with runtime.serving():
        adapter = runtime.channels.running("webhook").adapter
        with pytest.raises(ChannelError, match="callback failed") as failed:
            await adapter.send("u-1", OutboundMessage("hi"))
        assert failed.value.retryable is True


async def test_api_lists_configures_and_tests_the_channel(make_runtime) -> None:
    receiver = Receiver(SECRET)
    async with live_server(receiver.app) as receiver_url:
        runtime = make_runtime("")
        async with live_server(create_app(runtime)) as url, httpx.AsyncClient(base_url=url) as http:
            item = (await http.get("/api/channels/webhook")).json()
            assert item["category"] == "notifications" and item["status"] == "unconfigured"
            assert item["webhook_endpoint"] == URL
            fields = {f["key"]: f for f in item["fields"]}
            assert fields["secret"]["type"] == "secret"
            assert fields["secret"]["env_var"] == "WEBHOOK_SECRET"
            assert "unused" in fields["listen_port"]["help"]
            response = await http.post(
                "/api/channels/webhook/configure",
                json={"fields": {"secret": SECRET, "callback_url": f"{receiver_url}/hook"}},
            )
            assert response.status_code == 200 and response.json()["activated"] is True
            assert SECRET not in runtime.config_file.path.read_text()
            response = await http.post("/api/channels/webhook/test", json={"target": "ops"})
            assert response.status_code == 200, response.text
            assert receiver.received[-1]["message"] == "fangwire test message"
            receiver.answer(400, {"error": "recipient ops is muted"})
            response = await http.post("/api/channels/webhook/test", json={"target": "ops"})
            assert response.status_code == 502
            assert "recipient ops is muted" in response.json()["error"]["message"]
            body = payload("via api")
            response = await http.post(
                URL, content=body, headers={"x-webhook-signature": sign(body)}
            )
            assert response.status_code == 200
            with anyio.fail_after(TIMEOUT):
                await receiver.wait_for(2)


async def test_secret_stays_out_of_repr_logs_and_responses(live: Live, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    body = payload("quiet")
    await live.post(body, {"x-webhook-signature": "sha256=" + "1" * 64})
    await live.post(body, {"x-webhook-signature": sign(body)})
    with anyio.fail_after(TIMEOUT):
        await live.receiver.wait_for(1)
    listing = (await live.http.get("/api/channels")).text
    assert SECRET not in repr(live.adapter) and SECRET not in caplog.text
    assert SECRET not in listing and SECRET not in json.dumps(live.receiver.received)


async def test_stops_within_bound_and_refuses_pushes_after(live: Live) -> None:
    with anyio.fail_after(6):
        await live.runtime.channels.stop_all()
    body = payload()
    response = await live.post(body, {"x-webhook-signature": sign(body)})
    assert response.status_code == 503


async def test_id_header_deduplicates_even_without_a_timestamp(live: Live) -> None:
    body = payload("dup")
    headers = {"x-webhook-signature": sign(body), "x-webhook-id": uuid.uuid4().hex}
    assert (await live.post(body, headers)).status_code == 200
    assert (await live.post(body, headers)).status_code == 401
    with anyio.fail_after(TIMEOUT):
        await live.receiver.wait_for(1)


class WebhookPeer:
    """A sender of signed pushes and the receiver of the callbacks, for the harness."""

    target = "u-1"
    refused_target = "nobody"
    unreachable_settings = None

    def __init__(self, receiver: Receiver, receiver_url: str) -> None:
        self.receiver = receiver
        self.receiver.refuse.add(self.refused_target)
        self.settings = {"secret": SECRET, "callback_url": f"{receiver_url}/hook"}
        self.runtime: Runtime | None = None

    def attach(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def signed_push(self, text: str) -> tuple[bytes, dict[str, str]]:
        body = payload(text)
        stamp = now_ms()
        headers = {
            "x-webhook-signature": sign(body),
            "x-webhook-timestamp": stamp,
            "x-webhook-id": uuid.uuid4().hex,
        }
        return body, headers

    def forge(self, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        return dict(headers, **{"x-webhook-signature": sign(body, secret="forger")})

    async def inbound(self, text: str) -> None:
        assert self.runtime is not None, "the harness attaches the runtime first"
        transport = httpx.ASGITransport(app=create_app(self.runtime), client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:4545") as http:
            body, headers = self.signed_push(text)
            response = await http.post(URL, content=body, headers=headers)
            assert response.status_code == 200, response.text

    async def received(self, count: int) -> list[str]:
        return [m["message"] for m in await self.receiver.wait_for(count)]

    def throttle_next(self, retry_after: float) -> None:
        self.receiver.answer(429, {"error": "slow down"}, {"Retry-After": str(retry_after)})

    def stall_next(self) -> None:
        self.receiver.stall += 1

    def attempts(self) -> int:
        return self.receiver.attempts


@pytest.mark.anyio
class TestWebhookConformance(ChannelConformance):
    adapter = WebhookChannel

    @pytest.fixture
    async def peer(self) -> AsyncIterator[WebhookPeer]:
        receiver = Receiver(SECRET)
        async with live_server(receiver.app) as url:
            yield WebhookPeer(receiver, url)
