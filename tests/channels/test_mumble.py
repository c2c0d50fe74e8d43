"""The ``mumble`` channel against a real murmurd, with a second Mumble client as the user.

The user's client is a minimal Mumble client written with the adapter's protocol module (it
speaks the real server's protocol; the server is the peer that matters). Channel setup and the
ACL that refuses text in one channel are done by a SuperUser client the same way.
"""

from __future__ import annotations

import contextlib
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import given
from hypothesis import strategies as st

from fangwire.channelkit.chunking import measure
from fangwire.channels import ChannelError, LengthUnit, OutboundMessage
from fangwire.runtime import Runtime
from fangwire.testing.channels import ChannelConformance
from fangwire_channels import mumble as mumble_module
from fangwire_channels import mumble_proto as proto
from fangwire_channels.mumble import MumbleChannel, fit_parts, html_to_text, text_to_html
from fangwire_channels.mumble_proto import MessageType as T
from tests.channels.servers import murmur as murmur_server
from tests.channels.servers.murmur import Murmur
from tests.channels.servers.silent import silent_server

TIMEOUT = 20
BOT = "fangbot"
LOBBY = "Lobby"
QUIET = "Quiet"
#: Mumble's TextMessage permission bit (ChanACL::TextMessage).
PERMISSION_TEXT = 0x200

pytestmark = pytest.mark.anyio

murmur = murmur_server.murmur  # the session-scoped server fixture


class MumbleUser:
    """A minimal Mumble client: logs in, tracks users and channels, sends and collects text."""

    def __init__(self, server: Murmur, name: str, password: str | None = None) -> None:
        self.server = server
        self.name = name
        self.password = server.password if password is None else password
        self.session_id: int | None = None
        self.users: dict[int, str] = {}
        self.user_channels: dict[int, int] = {}
        self.channels: dict[int, str] = {}
        self.texts: list[tuple[str, str, list[int], list[int]]] = []
        self.changed = anyio.Event()
        self._stack = contextlib.AsyncExitStack()
        self.stream: proto.FrameStream

    async def __aenter__(self) -> MumbleUser:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with anyio.fail_after(TIMEOUT):
            raw = await anyio.connect_tcp(
                "127.0.0.1", self.server.port, ssl_context=context, tls_standard_compatible=False
            )
        self.stream = proto.FrameStream(raw)
        await self.stream.send(T.VERSION, [(1, proto.version_number(1, 3, 4)), (2, "test")])
        await self.stream.send(T.AUTHENTICATE, [(1, self.name), (2, self.password), (5, True)])
        with anyio.fail_after(TIMEOUT):
            while self.session_id is None:
                kind, message = await self.stream.receive()
                if kind == T.REJECT:
                    raise AssertionError(f"rejected: {message.text(2)}")
                self._handle(kind, message)
        tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.callback(tg.cancel_scope.cancel)
        tg.start_soon(self._reader)
        tg.start_soon(self._pinger)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        with contextlib.suppress(Exception):
            await self.stream.aclose()

    def _handle(self, kind: int, message: proto.Message) -> None:
        if kind == T.SERVER_SYNC:
            self.session_id = message.integer(1)
        elif kind == T.CHANNEL_STATE and 3 in message:
            self.channels[message.integer(1) or 0] = message.text(3)
        elif kind == T.USER_STATE:
            sid = message.integer(1) or 0
            if 3 in message:
                self.users[sid] = message.text(3)
            self.user_channels[sid] = message.integer(5, self.user_channels.get(sid, 0)) or 0
        elif kind == T.USER_REMOVE:
            self.users.pop(message.integer(1) or 0, None)
        elif kind == T.TEXT_MESSAGE:
            sender = self.users.get(message.integer(1) or 0, "?")
            self.texts.append((sender, message.text(5), message.integers(2), message.integers(3)))
        self.changed.set()
        self.changed = anyio.Event()

    async def _reader(self) -> None:
        with contextlib.suppress(
            anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError
        ):
            while True:
                self._handle(*await self.stream.receive())

    async def _pinger(self) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            while True:
                await anyio.sleep(10)
                await self.stream.send(T.PING, [(1, 0)])

    async def until(self, check: Callable[[], bool]) -> None:
        with anyio.fail_after(TIMEOUT):
            while not check():
                await self.changed.wait()

    def channel_id(self, name: str) -> int:
        return next(cid for cid, cname in self.channels.items() if cname == name)

    def session_of(self, name: str) -> int:
        return next(sid for sid, uname in self.users.items() if uname == name)

    @property
    def channel(self) -> int:
        return self.user_channels.get(self.session_id or 0, 0)

    async def join(self, channel: str) -> None:
        cid = self.channel_id(channel)
        await self.stream.send(T.USER_STATE, [(1, self.session_id or 0), (5, cid)])
        await self.until(lambda: self.channel == cid)

    async def tell(self, user: str, text: str) -> None:
        await self.until(lambda: user in self.users.values())
        await self.stream.send(T.TEXT_MESSAGE, [(2, [self.session_of(user)]), (5, text)])

    async def say(self, text: str) -> None:
        await self.stream.send(T.TEXT_MESSAGE, [(3, [self.channel]), (5, text)])

    async def next_text(self, sender: str, start: int = 0) -> tuple[str, str, list[int], list[int]]:
        """The first text from ``sender`` at index ``start`` or later of :attr:`texts`."""

        def found() -> bool:
            return any(t[0] == sender for t in self.texts[start:])

        await self.until(found)
        return next(t for t in self.texts[start:] if t[0] == sender)


async def _prepare_channels(server: Murmur) -> None:
    """As SuperUser: create the Lobby and the Quiet channel, where nobody may write."""
    async with MumbleUser(server, "SuperUser", server.superuser_password) as admin:
        for name in (LOBBY, QUIET):
            if name not in admin.channels.values():
                await admin.stream.send(T.CHANNEL_STATE, [(2, 0), (3, name)])
        await admin.until(lambda: {LOBBY, QUIET} <= set(admin.channels.values()))
        deny_text = proto.encode([(1, True), (2, True), (5, "all"), (6, 0), (7, PERMISSION_TEXT)])
        await admin.stream.send(
            13, [(1, admin.channel_id(QUIET)), (2, True), (4, deny_text)]
        )  # ACL
        await anyio.sleep(0.2)


@pytest.fixture(scope="module")
def channels_ready(murmur: Murmur) -> Murmur:
    anyio.run(_prepare_channels, murmur)
    return murmur


def config(server: Murmur, *, channel: str = LOBBY, extra: str = "") -> str:
    return f"""
[channels.mumble]
host = "127.0.0.1"
port = {server.port}
username = "{BOT}"
channel = "{channel}"
server_cert_sha256 = "{server.fingerprint}"
refusal_wait = 1
agent = "assistant"
{extra}
"""


ENV = {"MUMBLE_PASSWORD": murmur_server.SERVER_PASSWORD}


@pytest.fixture
async def alice(channels_ready: Murmur) -> AsyncIterator[MumbleUser]:
    async with MumbleUser(channels_ready, f"alice-{uuid.uuid4().hex[:6]}") as user:
        yield user


def adapter(runtime: Runtime) -> MumbleChannel:
    channel = runtime.channels.running("mumble").adapter
    assert isinstance(channel, MumbleChannel)
    return channel


async def wait_for(check: Callable[[], bool]) -> None:
    with anyio.fail_after(TIMEOUT):
        while not check():
            await anyio.sleep(0.05)


async def wait_running(runtime: Runtime) -> None:
    def up() -> bool:
        runner = runtime.channels.runners.get("mumble")
        if runner is None or runner.state != "running":
            return False
        session = adapter(runtime)._session
        return session is not None and not session.ended

    await wait_for(up)


async def wait_error(runtime: Runtime) -> str:
    await wait_for(lambda: runtime.channels.runners["mumble"].counters.last_error is not None)
    return runtime.channels.runners["mumble"].status


# -- end to end ----------------------------------------------------------------------------------


async def test_direct_message_is_answered(make_runtime: Any, alice: MumbleUser) -> None:
    runtime = make_runtime(config(alice.server), environ=ENV)
    async with runtime.serving():
        await wait_running(runtime)
        await alice.tell(BOT, "hello &lt;there&gt;")
        _, text, sessions, channels = await alice.next_text(BOT)
        counters = runtime.channels.runners["mumble"].counters
        await wait_for(lambda: counters.sent == 1)
    assert html_to_text(text) == "echo: hello <there>"
    assert text == "echo: hello &lt;there&gt;"
    assert sessions == [alice.session_id]
    assert channels == []
    assert counters.received == 1


async def test_channel_messages_need_a_mention(make_runtime: Any, alice: MumbleUser) -> None:
    runtime = make_runtime(config(alice.server), environ=ENV)
    async with runtime.serving(), runtime.bus.subscribe("channel.inbound") as inbound:
        await wait_running(runtime)
        await alice.join(LOBBY)
        await alice.until(lambda: BOT in alice.users.values())
        await alice.until(lambda: alice.user_channels[alice.session_of(BOT)] == alice.channel)
        await alice.say("just chatting")
        await alice.say(f"{BOT}: are you there?")
        _, text, sessions, channels = await alice.next_text(BOT)
        with anyio.fail_after(TIMEOUT):
            first = await inbound.receive()
            second = await inbound.receive()
        counters = runtime.channels.runners["mumble"].counters
    assert html_to_text(text) == f"echo: {BOT}: are you there?"
    assert channels == [alice.channel_id(LOBBY)]
    assert sessions == []
    assert second.payload["chat"] == f"channel:{LOBBY}"
    assert second.payload["is_group"] is True
    assert second.payload["sender"] == alice.name
    assert first.payload["text"] == "just chatting"
    assert counters.received == 2
    assert counters.ignored == 1


async def test_send_by_user_name_and_channel(make_runtime: Any, alice: MumbleUser) -> None:
    runtime = make_runtime(config(alice.server), environ=ENV)
    async with runtime.serving():
        await wait_running(runtime)
        await alice.join(LOBBY)
        await runtime.channels.send("mumble", alice.name, OutboundMessage(text="just you\nok"))
        _, text, sessions, _ = await alice.next_text(BOT)
        assert (text, sessions) == ("just you<br/>ok", [alice.session_id])
        start = len(alice.texts)
        receipt = await runtime.channels.send(
            "mumble", f"channel:{LOBBY}", OutboundMessage(text="everyone")
        )
        _, text, _, channels = await alice.next_text(BOT, start)
        assert (text, channels) == ("everyone", [alice.channel_id(LOBBY)])
        assert len(receipt.message_ids) == 1
        with pytest.raises(ChannelError, match="no user or channel named"):
            await runtime.channels.send("mumble", "nobody-here", OutboundMessage(text="x"))


async def test_the_servers_refusal_is_an_error(make_runtime: Any, alice: MumbleUser) -> None:
    runtime = make_runtime(config(alice.server), environ=ENV)
    async with runtime.serving():
        await wait_running(runtime)
        with pytest.raises(ChannelError, match="refused the message: permission"):
            await runtime.channels.send("mumble", f"channel:{QUIET}", OutboundMessage(text="x"))
        await alice.join(QUIET)
        with pytest.raises(ChannelError, match="refused the message: permission"):
            await runtime.channels.send("mumble", alice.name, OutboundMessage(text="psst"))
        counters = runtime.channels.runners["mumble"].counters
        assert counters.sent == 0
        assert counters.send_failures == 2
        assert not [t for t in alice.texts if t[0] == BOT]


async def test_wrong_server_password_is_reported(make_runtime: Any, channels_ready: Murmur) -> None:
    runtime = make_runtime(config(channels_ready), environ={"MUMBLE_PASSWORD": "wrong"})
    async with runtime.serving():
        status = await wait_error(runtime)
    assert status.startswith("error: the server refused the login")


async def test_certificate_is_verified(make_runtime: Any, channels_ready: Murmur) -> None:
    unpinned = config(channels_ready).replace(
        f'server_cert_sha256 = "{channels_ready.fingerprint}"', ""
    )
    runtime = make_runtime(unpinned, environ=ENV)
    async with runtime.serving():
        status = await wait_error(runtime)
    assert "CERTIFICATE_VERIFY_FAILED" in status
    other = config(channels_ready).replace(channels_ready.fingerprint, "ab" * 32)
    runtime = make_runtime(other, environ=ENV)
    async with runtime.serving():
        status = await wait_error(runtime)
    assert "does not match server_cert_sha256" in status


async def test_unknown_channel_is_reported(make_runtime: Any, channels_ready: Murmur) -> None:
    runtime = make_runtime(config(channels_ready, channel="Nowhere"), environ=ENV)
    async with runtime.serving():
        status = await wait_error(runtime)
    assert "no channel named 'Nowhere'" in status


async def test_reconnects_after_the_server_restarts(
    make_runtime: Any, channels_ready: Murmur
) -> None:
    runtime = make_runtime(config(channels_ready), environ=ENV)
    async with runtime.serving():
        await wait_running(runtime)
        first = adapter(runtime)._session
        channels_ready.restart()
        await wait_for(lambda: adapter(runtime)._session is not first)
        await wait_running(runtime)
        async with MumbleUser(channels_ready, "carol") as carol:
            await carol.tell(BOT, "still there?")
            _, text, _, _ = await carol.next_text(BOT)
        runner = runtime.channels.runners["mumble"]
        assert runner.status == "running"
        assert "connection lost" in (runner.counters.last_error or "")
    assert text == "echo: still there?"


async def test_stops_within_a_bound(make_runtime: Any, channels_ready: Murmur) -> None:
    runtime = make_runtime(config(channels_ready), environ=ENV)
    with anyio.fail_after(TIMEOUT):
        async with runtime.serving():
            await wait_running(runtime)
            channel = adapter(runtime)
            session = channel._session
    assert session is not None and session.ended
    assert channel._session is None


# -- protocol and text ---------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varints_round_trip(value: int) -> None:
    data = proto.encode_varint(value)
    assert proto.decode_varint(data + b"\xff", 0) == (value, len(data))


def test_known_encodings() -> None:
    # Field 1 varint 150 and field 2 "testing": the protobuf documentation's examples.
    assert proto.encode([(1, 150)]) == bytes.fromhex("089601")
    assert proto.encode([(2, "testing")]) == bytes.fromhex("120774657374696e67")
    assert proto.encode([(2, [1, 2])]) == bytes.fromhex("10011002")
    assert proto.encode_varint(-1) == b"\xff" * 9 + b"\x01"


def test_decode_fields_packed_and_unpacked() -> None:
    message = proto.decode(bytes.fromhex("0896011207746573") + b"ting" + bytes.fromhex("1a020304"))
    assert message.integer(1) == 150
    assert message.text(2) == "testing"
    assert message.integers(3) == [3, 4]
    assert proto.decode(proto.encode([(3, [7, 8])])).integers(3) == [7, 8]
    # fixed64 and fixed32 fields are skipped
    assert proto.decode(bytes.fromhex("0901020304050607081d01020304") + b"\x20\x05").integer(4) == 5


@pytest.mark.parametrize(
    "data", [b"\x08", b"\x12\x05ab", b"\x0b", b"\x80" * 11, b"\x09\x01", b"\x00\x01"]
)
def test_malformed_bodies_are_refused(data: bytes) -> None:
    with pytest.raises(proto.ProtocolError):
        proto.decode(data)


def test_frames() -> None:
    data = proto.frame(T.TEXT_MESSAGE, b"abc")
    assert data == b"\x00\x0b\x00\x00\x00\x03abc"
    assert proto.parse_header(data[:6]) == (11, 3)
    with pytest.raises(proto.ProtocolError):
        proto.parse_header(proto.HEADER.pack(11, proto.MAX_BODY + 1))


def test_html_both_ways() -> None:
    assert text_to_html("a < b & c\nd") == "a &lt; b &amp; c<br/>d"
    assert html_to_text("<p>hi <b>there</b><br/>x &amp; y</p>") == "hi there\nx & y"


def test_escaped_text_is_split_to_fit() -> None:
    text = "<" * 30 + " and more words after it"
    parts = fit_parts(text, 40)
    assert len(parts) > 1
    assert "".join(parts).replace(" ", "") == text.replace(" ", "")
    assert all(measure(text_to_html(p), LengthUnit.UTF16_UNITS) <= 40 for p in parts)


def test_discovered_through_its_entry_point(runtime: Runtime) -> None:
    record = runtime.pm.records["mumble"]
    assert record.group == "fangwire.channels"
    assert record.status == "loaded"
    assert runtime.channels.adapter_class("mumble") is MumbleChannel


# -- conformance ---------------------------------------------------------------------------------


class MumblePeer:
    """A Mumble user for the conformance harness, on its own event loop (a blocking portal)."""

    def __init__(self, server: Murmur, user: MumbleUser, portal: BlockingPortal) -> None:
        self.user = user
        self.portal = portal
        self.settings = {
            "host": "127.0.0.1",
            "port": server.port,
            "username": BOT,
            "password": server.password,
            "channel": LOBBY,
            "server_cert_sha256": server.fingerprint,
        }
        self.target = user.name
        self.refused_target: str | None = f"channel:{QUIET}"
        self.unreachable_settings: dict[str, Any] | None = {
            **self.settings,
            "port": murmur_server.free_port(),
        }

    async def inbound(self, text: str) -> None:
        await anyio.to_thread.run_sync(self.portal.call, self.user.tell, BOT, text)

    async def _received(self, count: int) -> list[str]:
        await self.user.until(lambda: sum(t[0] == BOT for t in self.user.texts) >= count)
        return [html_to_text(t[1]) for t in self.user.texts if t[0] == BOT]

    async def received(self, count: int) -> list[str]:
        return await anyio.to_thread.run_sync(self.portal.call, self._received, count)


class TestMumbleConformance(ChannelConformance):
    adapter = MumbleChannel

    @pytest.fixture
    def peer(self, channels_ready: Murmur) -> Iterator[MumblePeer]:
        user = MumbleUser(channels_ready, f"dora-{uuid.uuid4().hex[:6]}")
        with start_blocking_portal() as portal, portal.wrap_async_context_manager(user):
            yield MumblePeer(channels_ready, user, portal)


async def test_stop_while_the_server_hangs_closes_the_connection(make_runtime: Any) -> None:
    async with silent_server() as hung:
        text = f"""
[channels.mumble]
host = "127.0.0.1"
port = {hung.port}
username = "{BOT}"
verify_tls = false
"""
        runtime = make_runtime(text, environ=ENV)
        with anyio.fail_after(TIMEOUT):
            async with runtime.serving():
                await hung.accepted.wait()
                assert runtime.channels.runners["mumble"].state == "starting"
            await hung.closed_by_client.wait()


async def test_pings_keep_an_idle_connection_open(
    make_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server that drops clients silent for 3 s (murmur checks every 15.5 s), and the adapter
    # pinging every 0.5 s: the session must outlive the server's check.
    monkeypatch.setattr(mumble_module, "PING_INTERVAL", 0.5)
    with murmur_server.running_murmur(extra_ini="timeout=3\n") as strict:
        text = config(strict, channel="").replace('channel = ""', "")
        runtime = make_runtime(text, environ=ENV)
        async with runtime.serving():
            await wait_running(runtime)
            session = adapter(runtime)._session
            await anyio.sleep(17)
            assert adapter(runtime)._session is session
            assert session is not None and not session.ended
            assert runtime.channels.runners["mumble"].counters.last_error is None


async def test_a_message_the_core_cannot_take_ends_the_session(
    make_runtime: Any, alice: MumbleUser
) -> None:
    runtime = make_runtime(config(alice.server), environ=ENV)
    async with runtime.serving():
        await wait_running(runtime)
        runner = runtime.channels.runners["mumble"]
        first = adapter(runtime)._session

        async def refuse(message: Any) -> None:
            raise ChannelError("the inbox is full")

        runner.deliver = refuse  # type: ignore[method-assign]
        await alice.tell(BOT, "hello")
        await wait_for(lambda: runner.counters.last_error is not None)
        assert runner.counters.last_error == "the inbox is full"
        assert first is not None and first.ended
        del runner.deliver
        await wait_running(runtime)
        await alice.tell(BOT, "again")
        _, text, _, _ = await alice.next_text(BOT)
    assert text == "echo: again"
