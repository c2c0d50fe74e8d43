"""The ``xmpp`` channel against a real prosody server, with a second slixmpp client as the user.

The user (``alice``) writes to the bot directly and in MUC rooms; the bound ``assistant``
agent (offline ``echo`` provider) answers through fangwire, and the answer must arrive at the
user's client. Refusals are the server's own error bounces.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
import slixmpp
from anyio.from_thread import BlockingPortal, start_blocking_portal
from slixmpp.plugins.xep_0004 import Form

from fangwire.channels import ChannelContext, ChannelError, OutboundMessage
from fangwire.runtime import Runtime
from fangwire.testing.channels import ChannelConformance
from fangwire_channels.xmpp import XmppChannel, _client_class, _mentions, _Session
from tests.channels.servers import prosody as prosody_server
from tests.channels.servers.prosody import Prosody
from tests.channels.servers.silent import silent_server

TIMEOUT = 20
BOT_PASSWORD = "bot-secret-" + uuid.uuid4().hex[:8]
USER_PASSWORD = "alice-pw"

pytestmark = pytest.mark.anyio

prosody = prosody_server.prosody  # the session-scoped server fixtures
prosody_tls = prosody_server.prosody_tls


@pytest.fixture(scope="module")
def accounts(prosody: Prosody) -> Iterator[tuple[str, str]]:
    yield prosody.register("bot", BOT_PASSWORD), prosody.register("alice", USER_PASSWORD)


def config(server: Prosody, *, rooms: list[str] = (), extra: str = "") -> str:  # type: ignore[assignment]
    room_list = ", ".join(f'"{r}"' for r in rooms)
    return f"""
[channels.xmpp]
jid = "bot@{server.domain}"
server = "127.0.0.1"
port = {server.port}
rooms = [{room_list}]
use_tls = false
allow_plaintext = true
agent = "assistant"
{extra}
"""


def new_room(server: Prosody) -> str:
    return f"room-{uuid.uuid4().hex[:8]}@{server.muc_domain}"


class User:
    """A real XMPP client (slixmpp) logged in as a test user; collects what it receives."""

    def __init__(
        self, server: Prosody, jid: str, password: str, nick: str = "alice", *, tls: bool = False
    ) -> None:
        self.server = server
        self.nick = nick
        self.client = slixmpp.ClientXMPP(jid, password)
        self.client.enable_direct_tls = False
        if tls:
            self.client.ca_certs = server.dir / "cert.pem"
        else:
            self.client.enable_starttls = False
            self.client.enable_plaintext = True
            self.client.plugin["feature_mechanisms"].unencrypted_plain = True
        self.client.register_plugin("xep_0045")
        self.client.register_plugin("xep_0203")
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.client.add_event_handler("message", self.messages.put_nowait)

    async def __aenter__(self) -> User:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.client.add_event_handler("session_start", lambda _: started.set_result(None))
        self.client.connect("127.0.0.1", self.server.port)
        with anyio.fail_after(TIMEOUT):
            await started
        self.client.send_presence()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.move_on_after(3):
            await self.client.disconnect(wait=1.0)
        self.client.abort()

    async def join(self, room: str) -> None:
        muc = self.client.plugin["xep_0045"]
        presence, *_ = await muc.join_muc_wait(
            slixmpp.JID(room), self.nick, maxstanzas=0, timeout=TIMEOUT
        )
        if 201 in presence["muc"]["status_codes"]:  # created it: unlock as an instant room
            await muc.set_room_config(slixmpp.JID(room), Form(), timeout=TIMEOUT)

    def say(self, to: str, text: str, *, groupchat: bool = False, thread: str = "") -> None:
        msg = self.client.make_message(
            mto=to, mbody=text, mtype="groupchat" if groupchat else "chat"
        )
        if thread:
            msg["thread"] = thread
        msg.send()

    async def next_from(self, sender: str) -> Any:
        """The next message whose ``from`` (bare, or full for rooms) is ``sender``."""
        with anyio.fail_after(TIMEOUT):
            while True:
                msg = await self.messages.get()
                if msg["type"] != "error" and sender in (str(msg["from"]), msg["from"].bare):
                    return msg


@pytest.fixture
async def alice(prosody: Prosody, accounts: tuple[str, str]) -> AsyncIterator[User]:
    async with User(prosody, accounts[1], USER_PASSWORD) as user:
        yield user


def adapter(runtime: Runtime) -> XmppChannel:
    channel = runtime.channels.running("xmpp").adapter
    assert isinstance(channel, XmppChannel)
    return channel


async def wait_for(check: Callable[[], bool]) -> None:
    with anyio.fail_after(TIMEOUT):
        while not check():
            await anyio.sleep(0.05)


async def wait_running(runtime: Runtime, *, after_error: bool = False) -> None:
    with anyio.fail_after(TIMEOUT):
        while True:
            runner = runtime.channels.runners.get("xmpp")
            if runner is not None and runner.state == "running":
                session = adapter(runtime)._session
                if session is not None and not session.ended:
                    return
            await anyio.sleep(0.05)


async def test_direct_message_is_answered_in_its_thread(
    make_runtime: Any, prosody: Prosody, accounts: tuple[str, str], alice: User
) -> None:
    runtime = make_runtime(config(prosody), environ={"XMPP_PASSWORD": BOT_PASSWORD})
    async with runtime.serving():
        await wait_running(runtime)
        alice.say(accounts[0], "hello there", thread="thread-1")
        answer = await alice.next_from(accounts[0])
        counters = runtime.channels.runners["xmpp"].counters
        # The send returns once the bounce window has passed without a refusal.
        await wait_for(lambda: counters.sent == 1)
    assert answer["body"] == "echo: hello there"
    assert answer["type"] == "chat"
    assert answer["thread"] == "thread-1"
    assert counters.received == 1
    assert counters.sent == 1


async def test_room_messages_need_a_mention_and_own_echo_is_ignored(
    make_runtime: Any, prosody: Prosody, accounts: tuple[str, str], alice: User
) -> None:
    room = new_room(prosody)
    runtime = make_runtime(config(prosody, rooms=[room]), environ={"XMPP_PASSWORD": BOT_PASSWORD})
    async with runtime.serving(), runtime.bus.subscribe("channel.inbound") as inbound:
        await wait_running(runtime)
        await alice.join(room)
        alice.say(room, "just chatting", groupchat=True)
        alice.say(room, "bot: are you there?", groupchat=True)
        answer = await alice.next_from(f"{room}/bot")
        with anyio.fail_after(TIMEOUT):
            first = await inbound.receive()
            second = await inbound.receive()
        # The room reflects the bot's answer back to the bot: it must not come in as a message.
        await anyio.sleep(0.5)
        counters = runtime.channels.runners["xmpp"].counters
    assert answer["body"] == "echo: bot: are you there?"
    assert answer["type"] == "groupchat"
    assert [first.payload["text"], second.payload["text"]] == [
        "just chatting",
        "bot: are you there?",
    ]
    assert second.payload["chat"] == room
    assert second.payload["is_group"] is True
    assert second.payload["sender_name"] == "alice"
    assert counters.received == 2
    assert counters.ignored == 1
    assert counters.sent == 1


async def test_room_history_is_not_replayed_as_new_messages(
    make_runtime: Any, prosody: Prosody, accounts: tuple[str, str], alice: User
) -> None:
    room = new_room(prosody)
    await alice.join(room)
    alice.say(room, "bot: this is old news", groupchat=True)
    await alice.next_from(f"{room}/alice")  # the room has stored it
    runtime = make_runtime(config(prosody, rooms=[room]), environ={"XMPP_PASSWORD": BOT_PASSWORD})
    async with runtime.serving():
        await wait_running(runtime)
        alice.say(room, "bot: new", groupchat=True)
        answer = await alice.next_from(f"{room}/bot")
        counters = runtime.channels.runners["xmpp"].counters
    assert answer["body"] == "echo: bot: new"
    assert counters.received == 1


async def test_send_to_rooms_by_target(
    make_runtime: Any, prosody: Prosody, accounts: tuple[str, str], alice: User
) -> None:
    configured, other = new_room(prosody), new_room(prosody)
    runtime = make_runtime(
        config(prosody, rooms=[configured]), environ={"XMPP_PASSWORD": BOT_PASSWORD}
    )
    async with runtime.serving():
        await wait_running(runtime)
        await alice.join(configured)
        await alice.join(other)
        receipt = await runtime.channels.send(
            "xmpp", configured, OutboundMessage(text="to the room", thread_id="t9")
        )
        msg = await alice.next_from(f"{configured}/bot")
        assert msg["type"] == "groupchat"
        assert msg["body"] == "to the room"
        assert msg["thread"] == "t9"
        assert msg["id"] == receipt.message_ids[0]
        # A room not in the configuration: recognised through service discovery, joined.
        await runtime.channels.send("xmpp", other, OutboundMessage(text="elsewhere"))
        msg = await alice.next_from(f"{other}/bot")
        assert (msg["type"], msg["body"]) == ("groupchat", "elsewhere")
        # A bare user JID gets a chat message.
        await runtime.channels.send("xmpp", accounts[1], OutboundMessage(text="just you"))
        msg = await alice.next_from(accounts[0])
        assert (msg["type"], msg["body"]) == ("chat", "just you")


async def test_refusals_are_reported_with_the_servers_reason(
    make_runtime: Any, prosody: Prosody, accounts: tuple[str, str]
) -> None:
    runtime = make_runtime(config(prosody), environ={"XMPP_PASSWORD": BOT_PASSWORD})
    async with runtime.serving():
        await wait_running(runtime)
        with pytest.raises(ChannelError, match="service-unavailable"):
            await runtime.channels.send(
                "xmpp", f"nobody@{prosody.domain}", OutboundMessage(text="anyone?")
            )
        with pytest.raises(ChannelError, match=r"refused: (not-allowed|remote-server-not-found)"):
            await runtime.channels.send(
                "xmpp", "someone@elsewhere.example", OutboundMessage(text="hi")
            )
        with pytest.raises(ChannelError, match="not a JID"):
            await runtime.channels.send("xmpp", "@@", OutboundMessage(text="hi"))
        counters = runtime.channels.runners["xmpp"].counters
    assert counters.sent == 0
    assert counters.send_failures == 3


async def test_reconnects_after_the_server_drops_the_stream(
    make_runtime: Any, prosody: Prosody, accounts: tuple[str, str]
) -> None:
    runtime = make_runtime(config(prosody), environ={"XMPP_PASSWORD": BOT_PASSWORD})
    async with runtime.serving():
        await wait_running(runtime)
        first = adapter(runtime)._session
        prosody.restart()
        with anyio.fail_after(TIMEOUT):
            while adapter(runtime)._session is first:
                await anyio.sleep(0.05)
        await wait_running(runtime)
        assert adapter(runtime)._session is not first
        async with User(prosody, accounts[1], USER_PASSWORD) as user:
            user.say(accounts[0], "still there?")
            answer = await user.next_from(accounts[0])
        runner = runtime.channels.runners["xmpp"]
        assert runner.status == "running"
        assert runner.counters.last_error is not None
        assert "connection lost" in runner.counters.last_error
    assert answer["body"] == "echo: still there?"


async def test_stops_within_a_bound_and_logs_out(
    make_runtime: Any, prosody: Prosody, accounts: tuple[str, str]
) -> None:
    runtime = make_runtime(config(prosody), environ={"XMPP_PASSWORD": BOT_PASSWORD})
    with anyio.fail_after(TIMEOUT):
        async with runtime.serving():
            await wait_running(runtime)
            channel = adapter(runtime)
            session = channel._session
            assert session is not None
    assert session.ended
    assert channel._session is None


async def test_wrong_password_is_reported_not_retried_hot(
    make_runtime: Any, prosody: Prosody, accounts: tuple[str, str]
) -> None:
    runtime = make_runtime(config(prosody), environ={"XMPP_PASSWORD": "wrong"})
    async with runtime.serving():
        with anyio.fail_after(TIMEOUT):
            while runtime.channels.runners["xmpp"].counters.last_error is None:
                await anyio.sleep(0.05)
        runner = runtime.channels.runners["xmpp"]
        assert runner.status.startswith("error: authentication failed")
        with pytest.raises(ChannelError, match="not connected"):
            await adapter(runtime).send(accounts[1], OutboundMessage(text="x"))


async def test_plaintext_needs_an_explicit_opt_in(make_runtime: Any, prosody: Prosody) -> None:
    text = config(prosody).replace("allow_plaintext = true", "")
    runtime = make_runtime(text, environ={"XMPP_PASSWORD": BOT_PASSWORD})
    async with runtime.serving():
        with anyio.fail_after(TIMEOUT):
            while runtime.channels.runners["xmpp"].counters.last_error is None:
                await anyio.sleep(0.05)
        assert "allow_plaintext" in (runtime.channels.runners["xmpp"].counters.last_error or "")


async def test_tls_is_required_by_default(make_runtime: Any, prosody: Prosody) -> None:
    # The test server offers no TLS: with the defaults the bot must refuse to log in.
    text = config(prosody).replace("use_tls = false", "").replace("allow_plaintext = true", "")
    runtime = make_runtime(text, environ={"XMPP_PASSWORD": BOT_PASSWORD})
    async with runtime.serving():
        with anyio.fail_after(TIMEOUT):
            while runtime.channels.runners["xmpp"].counters.last_error is None:
                await anyio.sleep(0.05)
        assert runtime.channels.runners["xmpp"].state == "error"
        assert "offered no TLS" in runtime.channels.runners["xmpp"].status
        assert adapter(runtime)._session is None


def tls_config(server: Prosody, *, trust: bool) -> str:
    ca = f'ca_file = "{server.dir / "cert.pem"}"' if trust else ""
    return f"""
[channels.xmpp]
jid = "bot@{server.domain}"
server = "127.0.0.1"
port = {server.port}
agent = "assistant"
{ca}
"""


async def test_starttls_with_a_trusted_certificate(make_runtime: Any, prosody_tls: Prosody) -> None:
    bot = prosody_tls.register("bot", BOT_PASSWORD)
    user = prosody_tls.register("alice", USER_PASSWORD)
    runtime = make_runtime(
        tls_config(prosody_tls, trust=True), environ={"XMPP_PASSWORD": BOT_PASSWORD}
    )
    async with runtime.serving():
        await wait_running(runtime)
        session = adapter(runtime)._session
        assert session is not None
        assert isinstance(session.client.socket, ssl.SSLObject | ssl.SSLSocket)
        async with User(prosody_tls, user, USER_PASSWORD, tls=True) as alice:
            alice.say(bot, "over TLS")
            answer = await alice.next_from(bot)
    assert answer["body"] == "echo: over TLS"


async def test_untrusted_certificate_is_refused(make_runtime: Any, prosody_tls: Prosody) -> None:
    prosody_tls.register("bot", BOT_PASSWORD)
    runtime = make_runtime(
        tls_config(prosody_tls, trust=False), environ={"XMPP_PASSWORD": BOT_PASSWORD}
    )
    async with runtime.serving():
        await wait_for(lambda: runtime.channels.runners["xmpp"].counters.last_error is not None)
        status = runtime.channels.runners["xmpp"].status
        assert adapter(runtime)._session is None
    assert "CERTIFICATE_VERIFY_FAILED" in status


async def test_password_never_in_repr_or_logs(
    make_runtime: Any,
    prosody: Prosody,
    accounts: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    runtime = make_runtime(config(prosody), environ={"XMPP_PASSWORD": BOT_PASSWORD})
    async with runtime.serving():
        await wait_running(runtime)
        channel = adapter(runtime)
        shown = repr(channel) + repr(channel.ctx)
    plain = base64.b64encode(f"\0bot\0{BOT_PASSWORD}".encode()).decode()
    assert "SEND:" in caplog.text  # the wire log was captured
    assert BOT_PASSWORD not in shown
    assert BOT_PASSWORD not in caplog.text
    assert plain not in caplog.text


def test_mentions_match_the_nick_as_a_word() -> None:
    assert _mentions("bot: hi", "bot")
    assert _mentions("hey @Bot!", "bot")
    assert not _mentions("robots everywhere", "bot")
    assert not _mentions("anything", "")


class XmppPeer:
    """``alice`` on the prosody server, as the conformance harness's platform user.

    The harness's fixtures are synchronous, so her client runs on its own event loop in a
    thread (an anyio blocking portal) and the peer's methods call into it.
    """

    def __init__(self, server: Prosody, bot: str, user: User, portal: BlockingPortal) -> None:
        self.bot = bot
        self.user = user
        self.portal = portal
        self.settings = {
            "jid": bot,
            "password": BOT_PASSWORD,
            "server": "127.0.0.1",
            "port": server.port,
            "use_tls": False,
            "allow_plaintext": True,
        }
        self.target = str(user.client.boundjid.bare)
        self.refused_target: str | None = f"nobody@{server.domain}"
        self.unreachable_settings: dict[str, Any] | None = {
            **self.settings,
            "port": prosody_server.free_port(),
        }
        self.texts: list[str] = []

    async def inbound(self, text: str) -> None:
        await anyio.to_thread.run_sync(self.portal.call, self.user.say, self.bot, text)

    async def _collect(self, count: int) -> list[str]:
        while len(self.texts) < count:
            msg = await self.user.next_from(self.bot)
            self.texts.append(str(msg["body"]))
        return list(self.texts)

    async def received(self, count: int) -> list[str]:
        return await anyio.to_thread.run_sync(self.portal.call, self._collect, count)


class TestXmppConformance(ChannelConformance):
    adapter = XmppChannel

    @pytest.fixture
    def peer(self, prosody: Prosody, accounts: tuple[str, str]) -> Iterator[XmppPeer]:
        async def connect() -> User:
            return await User(prosody, accounts[1], USER_PASSWORD).__aenter__()

        with start_blocking_portal() as portal:
            user = portal.call(connect)
            try:
                yield XmppPeer(prosody, accounts[0], user, portal)
            finally:
                portal.call(user.__aexit__, None, None, None)


def _room_message(session: Any, sender: str, body: str, **extra: str) -> Any:
    msg = session.client.make_message(mto="bot@localhost/r", mbody=body, mtype="groupchat")
    msg["from"] = sender
    for key, value in extra.items():
        msg[key] = value
    return msg


async def test_room_echo_history_and_reflections_are_told_apart() -> None:
    async def deliver(message: Any) -> None:
        raise AssertionError("delivered directly")

    ctx = ChannelContext(
        name="xmpp",
        settings={},
        http=None,  # type: ignore[arg-type]
        deliver=deliver,
        log=logging.getLogger("test"),
        clock=time.monotonic,
    )
    xmpp = XmppChannel(ctx)
    client = _client_class()("bot@localhost", "unused")
    client.register_plugin("xep_0045")
    client.register_plugin("xep_0203")
    session = _Session(client, "bot")
    room = "room@conference.localhost"
    session.rooms[room] = "bot"

    delayed = _room_message(session, f"{room}/alice", "bot: old")
    delayed["delay"]["stamp"] = "2020-01-01T00:00:00Z"
    delayed["delay"]["from"] = room
    xmpp._on_message(session, delayed)
    xmpp._on_message(session, _room_message(session, f"{room}/bot", "my own words"))
    xmpp._on_message(session, _room_message(session, room, "the room's subject"))
    assert session.inbound.empty()

    pending: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    session.pending["m1"] = pending
    xmpp._on_message(session, _room_message(session, f"{room}/bot", "sent", id="m1"))
    assert pending.done() and pending.result() is None
    assert session.inbound.empty()

    xmpp._on_message(session, _room_message(session, f"{room}/alice", "hi Bot", thread="t"))
    message = session.inbound.get_nowait()
    assert message is not None
    assert (message.chat, message.sender_name, message.mentioned) == (room, "alice", True)
    assert message.thread_id == "t"


async def test_stop_while_the_server_hangs_closes_the_connection(make_runtime: Any) -> None:
    async with silent_server() as hung:
        text = f"""
[channels.xmpp]
jid = "bot@localhost"
server = "127.0.0.1"
port = {hung.port}
use_tls = false
allow_plaintext = true
"""
        runtime = make_runtime(text, environ={"XMPP_PASSWORD": BOT_PASSWORD})
        with anyio.fail_after(TIMEOUT):
            async with runtime.serving():
                await hung.accepted.wait()
                assert runtime.channels.runners["xmpp"].state == "starting"
            await hung.closed_by_client.wait()


async def test_a_message_the_core_cannot_take_ends_the_session(
    make_runtime: Any, prosody: Prosody, accounts: tuple[str, str], alice: User
) -> None:
    runtime = make_runtime(config(prosody), environ={"XMPP_PASSWORD": BOT_PASSWORD})
    async with runtime.serving():
        await wait_running(runtime)
        runner = runtime.channels.runners["xmpp"]
        first = adapter(runtime)._session

        async def refuse(message: Any) -> None:
            raise ChannelError("the inbox is full")

        runner.deliver = refuse  # type: ignore[method-assign]
        alice.say(accounts[0], "hello")
        await wait_for(lambda: runner.counters.last_error is not None)
        assert runner.counters.last_error == "the inbox is full"
        assert first is not None and first.ended
        del runner.deliver  # the session comes back and messages flow again
        await wait_running(runtime)
        alice.say(accounts[0], "again")
        answer = await alice.next_from(accounts[0])
    assert answer["body"] == "echo: again"


def test_sasl_payloads_are_hidden_in_the_wire_log() -> None:
    from fangwire_channels.xmpp import _SaslScrubber

    plain = base64.b64encode(b"\0bot\0hunter2").decode()
    record = logging.LogRecord(
        "slixmpp.xmlstream.xmlstream",
        logging.DEBUG,
        __file__,
        1,
        "SEND: %s",
        (f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>",),
        None,
    )
    assert _SaslScrubber().filter(record)
    shown = record.getMessage()
    assert plain not in shown
    assert (
        shown == "SEND: <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>***</auth>"
    )
    other = logging.LogRecord("x", logging.DEBUG, __file__, 1, "SEND: %s", ("<presence/>",), None)
    assert _SaslScrubber().filter(other)
    assert other.getMessage() == "SEND: <presence/>"
