"""The ``matrix`` channel against a real homeserver (synapse), with a second account as the user."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

from fangwire.channels import ChannelError, OutboundMessage
from fangwire.runtime import Runtime
from fangwire.testing.channels import ChannelConformance
from fangwire_channels.matrix import MAX_CONTENT_JSON_BYTES, MAX_TEXT_BYTES, MatrixChannel, _refusal
from tests.channels.servers.synapse import (  # noqa: F401 - fixture
    MatrixUser,
    Synapse,
    synapse_fixture,
)

TIMEOUT = 40

pytestmark = pytest.mark.anyio


def config(server: Synapse, extra: str = "") -> str:
    return f"""
[channels.matrix]
homeserver_url = "{server.base_url}"
{extra}
"""


@asynccontextmanager
async def users(server: Synapse, *prefixes: str) -> AsyncIterator[list[MatrixUser]]:
    made = [server.register(prefix) for prefix in prefixes]
    try:
        yield made
    finally:
        for user in made:
            await user.aclose()


@asynccontextmanager
async def serving(
    make_runtime: Callable[..., Runtime], server: Synapse, bot: MatrixUser, extra: str = ""
) -> AsyncIterator[Runtime]:
    runtime = make_runtime(config(server, extra), environ={"MATRIX_ACCESS_TOKEN": bot.token})
    async with runtime.serving():
        with anyio.fail_after(TIMEOUT):
            while runtime.channels.running("matrix").status != "running":
                await anyio.sleep(0.05)
        yield runtime


def adapter(runtime: Runtime) -> MatrixChannel:
    channel = runtime.channels.running("matrix").adapter
    assert isinstance(channel, MatrixChannel)
    return channel


async def wait_joined(user: MatrixUser, room: str, member: str) -> None:
    with anyio.fail_after(TIMEOUT):
        while True:
            joined = await user.call("GET", f"/rooms/{room}/joined_members")
            if member in joined["joined"]:
                return
            await anyio.sleep(0.1)


async def dm_with_bot(user: MatrixUser, bot: MatrixUser) -> str:
    """A two-person room the bot joins by accepting the user's invitation."""
    room = await user.create_room([bot.user_id], direct=True)
    await wait_joined(user, room, bot.user_id)
    return room


async def answers(
    user: MatrixUser, room: str, since: str, count: int, bot: MatrixUser
) -> list[str]:
    with anyio.fail_after(TIMEOUT):
        events = await user.wait_for_messages(room, since, count, sender=bot.user_id)
    return [e["content"]["body"] for e in events]


async def test_direct_message_is_answered_through_the_homeserver(make_runtime, synapse) -> None:
    async with users(synapse, "alice", "bot") as (alice, bot):
        async with serving(make_runtime, synapse, bot) as runtime:
            room = await dm_with_bot(alice, bot)
            since = (await alice.sync())["next_batch"]
            async with runtime.bus.subscribe("channel.inbound") as sub:
                await alice.send_text(room, "hello there")
                with anyio.fail_after(TIMEOUT):
                    inbound = await sub.receive()
                assert await answers(alice, room, since, 1, bot) == ["echo: hello there"]
            counters = runtime.channels.runners["matrix"].counters
        assert inbound.payload["sender"] == alice.user_id
        assert inbound.payload["chat"] == room
        assert inbound.payload["is_group"] is False
        assert counters.sent == 1


async def test_group_room_needs_a_mention_and_threads_go_both_ways(make_runtime, synapse) -> None:
    async with users(synapse, "alice", "carol", "bot") as (alice, carol, bot):
        await bot.call("PUT", f"/profile/{bot.user_id}/displayname", json={"displayname": "Fang"})
        async with serving(make_runtime, synapse, bot) as runtime:
            room = await alice.create_room([carol.user_id, bot.user_id])
            await carol.join(room)
            await wait_joined(alice, room, bot.user_id)
            await wait_joined(alice, room, carol.user_id)
            since = (await alice.sync())["next_batch"]
            await alice.send_text(room, "just chatting among humans")
            await alice.send_text(room, "fang, are you there?")
            root = await alice.send_text(room, "thread root")
            await carol.send_text(
                room,
                f"{bot.user_id} in the thread",
                **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}},
            )
            with anyio.fail_after(TIMEOUT):
                events = await alice.wait_for_messages(room, since, 2, sender=bot.user_id)
            await anyio.sleep(0.5)
            assert runtime.channels.runners["matrix"].counters.ignored == 2
    by_body = {e["content"]["body"]: e["content"] for e in events}
    assert set(by_body) == {"echo: fang, are you there?", f"echo: {bot.user_id} in the thread"}
    assert "m.relates_to" not in by_body["echo: fang, are you there?"]
    relation = by_body[f"echo: {bot.user_id} in the thread"]["m.relates_to"]
    assert relation["rel_type"] == "m.thread"
    assert relation["event_id"] == root


async def test_restart_resumes_without_answering_twice_or_dropping(make_runtime, synapse) -> None:
    async with users(synapse, "alice", "bot") as (alice, bot):
        # The bot is in the room before fangwire ever ran: that history is never answered.
        room = await alice.create_room([bot.user_id], direct=True)
        await bot.join(room)
        since = (await alice.sync())["next_batch"]
        await alice.send_text(room, "old history")
        async with serving(make_runtime, synapse, bot):
            await alice.send_text(room, "first")
            assert await answers(alice, room, since, 1, bot) == ["echo: first"]
        since = (await alice.sync())["next_batch"]
        await alice.send_text(room, "while the daemon was down")
        async with serving(make_runtime, synapse, bot) as runtime:
            await alice.send_text(room, "after the restart")
            got = await answers(alice, room, since, 2, bot)
            await anyio.sleep(1.0)
            later = await alice.sync(since)
            assert runtime.channels.runners["matrix"].counters.received == 2
    assert got == ["echo: while the daemon was down", "echo: after the restart"]
    timeline = later["rooms"]["join"][room]["timeline"]["events"]
    from_bot = [e for e in timeline if e["sender"] == bot.user_id and e["type"] == "m.room.message"]
    assert len(from_bot) == 2


async def test_invitation_from_an_unlisted_user_is_declined(make_runtime, synapse) -> None:
    async with users(synapse, "alice", "mallory", "bot") as (alice, mallory, bot):
        extra = f'allowed_users = ["{alice.user_id}"]'
        async with serving(make_runtime, synapse, bot, extra):
            accepted = await dm_with_bot(alice, bot)
            declined = await mallory.create_room([bot.user_id], direct=True)
            with anyio.fail_after(TIMEOUT):
                while True:
                    state = await mallory.call("GET", f"/rooms/{declined}/state")
                    member = [e for e in state if e.get("state_key") == bot.user_id]
                    if member and member[0]["content"]["membership"] == "leave":
                        break
                    await anyio.sleep(0.1)
        joined = await bot.call("GET", "/joined_rooms")
    assert accepted in joined["joined_rooms"]
    assert declined not in joined["joined_rooms"]


async def test_configured_rooms_are_joined_at_start(make_runtime, synapse) -> None:
    async with users(synapse, "alice", "bot") as (alice, bot):
        room = await alice.create_room()
        await alice.call(
            "PUT", f"/rooms/{room}/state/m.room.join_rules", json={"join_rule": "public"}
        )
        async with serving(make_runtime, synapse, bot, f'allowed_rooms = ["{room}"]'):
            await wait_joined(alice, room, bot.user_id)
            since = (await alice.sync())["next_batch"]
            await alice.send_text(room, "first words in a configured room")
            got = await answers(alice, room, since, 1, bot)
    assert got == ["echo: first words in a configured room"]


async def test_send_refusals_carry_the_errcode(make_runtime, synapse) -> None:
    async with users(synapse, "alice", "bot") as (alice, bot):
        private = await alice.create_room()
        async with serving(make_runtime, synapse, bot) as runtime:
            with pytest.raises(ChannelError, match="M_FORBIDDEN") as forbidden:
                await runtime.channels.send("matrix", private, OutboundMessage(text="hi"))
            with pytest.raises(ChannelError, match=r"M_FORBIDDEN|M_NOT_FOUND"):
                await runtime.channels.send(
                    "matrix", "!doesnotexist:localhost", OutboundMessage(text="hi")
                )
            counters = runtime.channels.runners["matrix"].counters
            assert counters.sent == 0
            assert counters.send_failures == 2
    assert forbidden.value.retryable is False


async def test_a_retry_of_the_same_message_is_stored_once(make_runtime, synapse) -> None:
    async with users(synapse, "alice", "bot") as (alice, bot):
        async with serving(make_runtime, synapse, bot) as runtime:
            room = await dm_with_bot(alice, bot)
            channel = adapter(runtime)
            message = OutboundMessage(text="once")
            first = await channel.send(room, message)
            again = await channel.send(room, message)
            other = await channel.send(room, OutboundMessage(text="once"))
    assert first.message_ids == again.message_ids
    assert other.message_ids != first.message_ids


async def test_long_answers_fit_the_event_size_limit(make_runtime, synapse) -> None:
    async with users(synapse, "alice", "bot") as (alice, bot):
        async with serving(make_runtime, synapse, bot) as runtime:
            room = await dm_with_bot(alice, bot)
            channel = adapter(runtime)
            # Worst case for JSON escaping at the limit, in a thread: still accepted.
            quotes = '"' * MAX_TEXT_BYTES
            root = await alice.send_text(room, "root")
            accepted = await channel.send(room, OutboundMessage(text=quotes, thread_id=root))
            assert accepted.message_ids[0].startswith("$")
            with pytest.raises(ChannelError, match=str(MAX_CONTENT_JSON_BYTES)):
                await channel.send(room, OutboundMessage(text="\x01" * 10_000))
            since = (await alice.sync())["next_batch"]
            words = " ".join(f"w{n}" for n in range(20_000))
            receipt = await runtime.channels.send("matrix", room, OutboundMessage(text=words))
            found: dict[str, str] = {}
            with anyio.fail_after(TIMEOUT):
                while not set(receipt.message_ids) <= set(found):
                    data = await alice.sync(since, timeout_ms=5000)
                    since = data["next_batch"]
                    timeline = data.get("rooms", {}).get("join", {}).get(room, {})
                    for event in timeline.get("timeline", {}).get("events", []):
                        found[event["event_id"]] = event.get("content", {}).get("body", "")
            got = [found[event_id] for event_id in receipt.message_ids]
    assert len(receipt.message_ids) >= 2
    assert all(len(part.encode()) <= MAX_TEXT_BYTES for part in got)
    assert " ".join(got).split() == words.split()


async def test_rate_limited_send_waits_as_the_homeserver_asks(make_runtime, synapse) -> None:
    async with users(synapse, "alice", "bot") as (alice, bot):
        async with serving(make_runtime, synapse, bot) as runtime:
            room = await dm_with_bot(alice, bot)
            channel = adapter(runtime)
            since = (await alice.sync())["next_batch"]
            # From now on the bot may send one message per second (synapse's admin override).
            admin = synapse.register_admin("admin")
            try:
                override = await admin.client.post(
                    f"{synapse.base_url}/_synapse/admin/v1/users/{bot.user_id}/override_ratelimit",
                    json={"messages_per_second": 1, "burst_count": 1},
                )
                override.raise_for_status()
            finally:
                await admin.aclose()
            with anyio.fail_after(TIMEOUT):
                await runtime.channels.send("matrix", room, OutboundMessage(text="first"))
            with pytest.raises(ChannelError, match="M_LIMIT_EXCEEDED") as limited:
                await channel.send(room, OutboundMessage(text="too soon"))
            with anyio.fail_after(TIMEOUT):
                receipt = await runtime.channels.send(
                    "matrix", room, OutboundMessage(text="after the limit")
                )
            got = await answers(alice, room, since, 2, bot)
    assert limited.value.retryable is True
    assert limited.value.retry_after is not None
    assert 0 < limited.value.retry_after <= 30
    assert len(receipt.message_ids) == 1
    assert got == ["first", "after the limit"]


async def test_rate_limits_are_retryable_and_refusals_are_not() -> None:
    response = httpx.Response(
        429,
        json={"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 2500},
    )
    error = _refusal(response, response.json())
    assert error.retryable is True
    assert error.retry_after == 2.5
    assert error.reason == "M_LIMIT_EXCEEDED: Too Many Requests"
    busy = httpx.Response(429, headers={"Retry-After": "3"}, json={"errcode": "M_LIMIT_EXCEEDED"})
    assert _refusal(busy, busy.json()).retry_after == 3.0
    gone = httpx.Response(404, json={"errcode": "M_NOT_FOUND", "error": "Unknown room"})
    refused = _refusal(gone, gone.json())
    assert (refused.retryable, refused.reason) == (False, "M_NOT_FOUND: Unknown room")


async def test_receive_recovers_after_the_homeserver_restarts(make_runtime, synapse) -> None:
    async with users(synapse, "alice", "bot") as (alice, bot):
        async with serving(make_runtime, synapse, bot) as runtime:
            room = await dm_with_bot(alice, bot)
            runner = runtime.channels.running("matrix")
            await anyio.to_thread.run_sync(synapse.restart)
            with anyio.fail_after(TIMEOUT):
                while runner.counters.last_error is None:
                    await anyio.sleep(0.05)
                while runner.status != "running":
                    await anyio.sleep(0.05)
            since = (await alice.sync())["next_batch"]
            await alice.send_text(room, "are you back?")
            assert await answers(alice, room, since, 1, bot) == ["echo: are you back?"]


async def test_password_login_and_secrets_stay_out_of_logs(
    make_runtime, synapse, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with users(synapse, "alice", "bot") as (alice, bot):
        extra = f'user_id = "{bot.user_id}"'
        runtime = make_runtime(config(synapse, extra), environ={"MATRIX_PASSWORD": bot.password})
        async with runtime.serving():
            with anyio.fail_after(TIMEOUT):
                while runtime.channels.running("matrix").status != "running":
                    await anyio.sleep(0.05)
            channel = adapter(runtime)
            assert channel._token is not None
            session_token = channel._token.reveal()
            assert channel.user_id == bot.user_id
            room = await dm_with_bot(alice, bot)
            since = (await alice.sync())["next_batch"]
            await alice.send_text(room, "hi via password login")
            assert await answers(alice, room, since, 1, bot) == ["echo: hi via password login"]
            shown = repr(channel) + repr(channel.ctx)
        # The session opened with the password was closed at stop.
        probe = httpx.get(
            synapse.url("/account/whoami"),
            headers={"Authorization": f"Bearer {session_token}"},
            timeout=10,
        )
    assert probe.status_code == 401
    for secret in (bot.password, session_token):
        assert secret not in shown
        assert secret not in caplog.text


async def test_stop_is_bounded_while_a_sync_is_pending(make_runtime, synapse) -> None:
    async with users(synapse, "bot") as (bot,):
        with anyio.fail_after(15):
            async with serving(make_runtime, synapse, bot) as runtime:
                await anyio.sleep(0.5)  # a 30 s long-poll is now open
        assert "matrix" not in runtime.channels.runners


async def test_missing_credentials_are_reported(make_runtime, synapse) -> None:
    runtime = make_runtime(config(synapse))
    async with runtime.serving():
        runner = runtime.channels.running("matrix")
        with anyio.fail_after(TIMEOUT):
            while runner.counters.last_error is None:
                await anyio.sleep(0.05)
    assert "access_token" in runner.counters.last_error


# -- conformance ---------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MatrixPeer:
    """A second Matrix account in a two-person room with the bot (plain HTTP calls)."""

    def __init__(self, server: Synapse) -> None:
        self.server = server
        self.alice = server.register("peer")
        self.bot = server.register("bot")
        headers = {"Authorization": f"Bearer {self.alice.token}"}
        created = httpx.post(
            server.url("/createRoom"),
            json={"preset": "private_chat", "invite": [self.bot.user_id], "is_direct": True},
            headers=headers,
            timeout=10,
        )
        created.raise_for_status()
        self.room = created.json()["room_id"]
        joined = httpx.post(
            server.url(f"/join/{self.room}"),
            json={},
            headers={"Authorization": f"Bearer {self.bot.token}"},
            timeout=10,
        )
        joined.raise_for_status()
        synced = httpx.get(server.url("/sync"), params={"timeout": 0}, headers=headers, timeout=10)
        self._since = synced.json()["next_batch"]
        self._got: list[str] = []
        self._txn = 0
        self.settings = {"homeserver_url": server.base_url, "access_token": self.bot.token}
        self.target = self.room
        self.refused_target = "!doesnotexist:localhost"
        self.unreachable_settings = {
            "homeserver_url": f"http://127.0.0.1:{_closed_port()}",
            "access_token": self.bot.token,
        }

    async def inbound(self, text: str) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            self._txn += 1
            response = await client.put(
                self.server.url(f"/rooms/{self.room}/send/m.room.message/peer{self._txn}"),
                json={"msgtype": "m.text", "body": text},
                headers={"Authorization": f"Bearer {self.alice.token}"},
            )
            response.raise_for_status()

    async def received(self, count: int) -> list[str]:
        headers = {"Authorization": f"Bearer {self.alice.token}"}
        async with httpx.AsyncClient(timeout=30) as client:
            while len(self._got) < count:
                response = await client.get(
                    self.server.url("/sync"),
                    params={"since": self._since, "timeout": 5000},
                    headers=headers,
                )
                response.raise_for_status()
                data = response.json()
                self._since = data["next_batch"]
                room = data.get("rooms", {}).get("join", {}).get(self.room, {})
                for event in room.get("timeline", {}).get("events", []):
                    if event["type"] == "m.room.message" and event["sender"] == self.bot.user_id:
                        self._got.append(event["content"]["body"])
        return list(self._got)


class TestMatrixConformance(ChannelConformance):
    adapter = MatrixChannel

    @pytest.fixture
    def peer(self, synapse: Synapse) -> MatrixPeer:
        return MatrixPeer(synapse)
