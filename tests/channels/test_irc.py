"""The ``irc`` channel against a real InspIRCd on 127.0.0.1, plus a small SASL server.

InspIRCd's SASL support needs an IRC services package linked to it, which these tests do not
run, so SASL PLAIN is tested against :class:`SaslServer` below: a line server implementing
just the documented ``CAP REQ :sasl`` / ``AUTHENTICATE`` exchange.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import attrs
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from fangwire.channelkit.chunking import measure
from fangwire.channels import ChannelError, LengthUnit, OutboundMessage
from fangwire.runtime import Runtime
from fangwire.testing.channels import ChannelConformance
from fangwire_channels.irc import IrcChannel
from fangwire_channels.ircproto import (
    ClientConfig,
    IrcClient,
    Message,
    Pacer,
    ProtocolError,
    mention_strip,
    parse,
    serialize,
    split_text,
)
from tests.channels.servers.inspircd import (  # noqa: F401 - fixture
    InspIRCd,
    RawIrcClient,
    free_port,
    inspircd_fixture,
    irc_user_fixture,
)

IrcUser = Callable[[str], Awaitable[RawIrcClient]]

TIMEOUT = 20


def irc_config(server: InspIRCd, nick: str, *channels: str, extra: str = "") -> str:
    listed = ", ".join(f'"{c}"' for c in channels)
    return f"""
[channels.irc]
server = "{server.host}"
port = {server.port}
nick = "{nick}"
channels = [{listed}]
agent = "assistant"
{extra}
"""


def adapter(runtime: Runtime) -> IrcChannel:
    channel = runtime.channels.running("irc").adapter
    assert isinstance(channel, IrcChannel)
    return channel


async def wait_state(runtime: Runtime, name: str, predicate: Callable[[str], bool]) -> str:
    with anyio.fail_after(TIMEOUT):
        while not predicate(runtime.channels.running(name).status):
            await anyio.sleep(0.02)
    return runtime.channels.running(name).status


async def wait_running(runtime: Runtime, name: str = "irc") -> None:
    await wait_state(runtime, name, lambda s: s == "running")


def is_privmsg(sender: str, target: str) -> Callable[[Message], bool]:
    return lambda m: (
        m.command == "PRIVMSG" and m.nick.lower() == sender.lower() and m.param(0) == target
    )


# -- protocol units --------------------------------------------------------------------------


def test_parse_tags_source_and_trailing() -> None:
    msg = parse(r"@id=a\:b;display-name=Al\sB;flag :al!u@h PRIVMSG #c :hello :world")
    assert msg.tags == {"id": "a;b", "display-name": "Al B", "flag": ""}
    assert (msg.source, msg.nick, msg.command) == ("al!u@h", "al", "PRIVMSG")
    assert msg.params == ("#c", "hello :world")
    assert parse("PING :x y").params == ("x y",)
    assert parse(":srv 001 me :Welcome").param(-1) == "Welcome"


def test_serialize_refuses_line_breaks_and_escapes_tags() -> None:
    line = serialize("PRIVMSG", "#c", "hi there", tags={"reply-parent-msg-id": "a b;c"})
    assert line == r"@reply-parent-msg-id=a\sb\:c PRIVMSG #c :hi there"
    assert parse(line).tags["reply-parent-msg-id"] == "a b;c"
    with pytest.raises(ProtocolError):
        serialize("PRIVMSG", "#c", "hi\r\nQUIT :owned")
    with pytest.raises(ProtocolError):
        serialize("PRIVMSG", "#c d", "x")


def test_mentions() -> None:
    assert mention_strip("bot: hello", "bot") == (True, "hello")
    assert mention_strip("@Bot hello", "bot") == (True, "hello")
    assert mention_strip("hello bot!", "bot") == (True, "hello bot!")
    assert mention_strip("robotics", "bot") == (False, "robotics")
    assert mention_strip("Bot[1], hi", "bot{1}") == (True, "hi")  # RFC 1459 case mapping
    assert mention_strip("bot:no space", "bot") == (True, "no space")
    assert mention_strip("botany: plants", "bot") == (False, "botany: plants")
    assert mention_strip("bot", "bot") == (True, "")


def test_text_is_split_to_the_byte_budget_never_beyond() -> None:
    text = "line one\n\n" + "é" * 300 + " " + "word " * 100
    lines = split_text(text, 120)
    assert lines[0] == "line one"
    assert all(len(line.encode()) <= 120 for line in lines)
    assert "".join(lines[1:]).replace(" ", "") == ("é" * 300 + "word" * 100)
    with pytest.raises(ChannelError):
        split_text("x", 0)


def test_text_budget_assumes_the_longest_hostmask_until_the_server_shows_ours() -> None:
    config = ClientConfig(host="h", port=1, nick="n" * 30)
    client = IrcClient(config, logging.getLogger("t"), lambda: 0.0)
    # ":" nick "!" ~user(11) "@" host(63) " " + "PRIVMSG #x :" + CRLF
    assert client.text_budget("#x") == 512 - 2 - (1 + 30 + 1 + 11 + 1 + 63 + 1) - 12
    assert client.text_budget("#" + "c" * 49) >= IrcChannel.max_message_length
    client.user_host = "n@127.0.0.1"
    assert client.text_budget("#x") == 512 - 2 - (1 + 30 + 1 + 11 + 1) - 12


@pytest.mark.anyio
async def test_pacer_allows_a_burst_then_spaces_lines() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(3, 2.0, lambda: now[0], max_wait=5.0, sleep=sleep)
    for _ in range(3):
        await pacer.wait()
    assert slept == []
    await pacer.wait()
    assert slept == [2.0]
    pacer = Pacer(1, 10.0, lambda: now[0], max_wait=5.0, sleep=sleep)
    await pacer.wait()
    with pytest.raises(ChannelError) as info:
        await pacer.wait()
    assert info.value.retryable and info.value.retry_after == 10.0


# -- against InspIRCd ------------------------------------------------------------------------


def test_discovered_through_its_entry_point(runtime: Runtime) -> None:
    record = runtime.pm.records["irc"]
    assert record.group == "fangwire.channels"
    assert record.status == "loaded"
    assert runtime.channels.adapter_class("irc") is IrcChannel
    keys = [f.key for f in IrcChannel.config_fields]
    assert keys[:5] == ["server", "port", "nick", "channels", "use_tls"]


@pytest.mark.anyio
async def test_channel_message_that_addresses_the_bot_is_answered(
    make_runtime, inspircd: InspIRCd, irc_user: IrcUser
) -> None:
    runtime = make_runtime(irc_config(inspircd, "fangbot", "#room1"))
    with anyio.fail_after(TIMEOUT):
        alice = await irc_user("alice1")
        await alice.join("#room1")
        async with runtime.serving():
            await alice.wait_for(lambda m: m.command == "JOIN" and m.nick == "fangbot")
            await alice.privmsg("#room1", "just chatting")
            await alice.privmsg("#room1", "fangbot: hello there")
            answer = await alice.wait_for(is_privmsg("fangbot", "#room1"))
            assert answer.param(-1) == "echo: hello there"
            counters = runtime.channels.running("irc").counters
            while counters.sent < 1:  # the reply is counted once the server confirmed it
                await anyio.sleep(0.02)
            assert counters.received == 2 and counters.ignored == 1 and counters.sent == 1
        await alice.aclose()


@pytest.mark.anyio
async def test_direct_message_is_answered_privately(
    make_runtime, inspircd: InspIRCd, irc_user: IrcUser
) -> None:
    runtime = make_runtime(irc_config(inspircd, "dmbot"))
    with anyio.fail_after(TIMEOUT):
        async with runtime.serving():
            await wait_running(runtime)
            bob = await irc_user("bob1")
            async with runtime.bus.subscribe("channel.inbound") as sub:
                await bob.privmsg("dmbot", "what is up")
                answer = await bob.wait_for(is_privmsg("dmbot", "bob1"))
                inbound = await sub.receive()
            await bob.aclose()
    assert answer.param(-1) == "echo: what is up"
    assert inbound.payload["sender"] == "bob1"
    assert inbound.payload["chat"] == "bob1"
    assert inbound.payload["is_group"] is False


@pytest.mark.anyio
async def test_refusals_by_the_server_raise(
    make_runtime, inspircd: InspIRCd, irc_user: IrcUser
) -> None:
    runtime = make_runtime(irc_config(inspircd, "refbot"))
    with anyio.fail_after(TIMEOUT):
        carol = await irc_user("carol1")
        await carol.join("#closed")  # new channels are +n: no messages from outside
        async with runtime.serving():
            await wait_running(runtime)
            with pytest.raises(ChannelError, match="401"):
                await runtime.channels.send("irc", "nobody-here", OutboundMessage(text="hi"))
            with pytest.raises(ChannelError, match="403"):
                await runtime.channels.send("irc", "#nowhere", OutboundMessage(text="hi"))
            with pytest.raises(ChannelError, match="404"):
                await runtime.channels.send("irc", "#closed", OutboundMessage(text="hi"))
            receipt = await runtime.channels.send("irc", "carol1", OutboundMessage(text="ok?"))
            got = await carol.wait_for(is_privmsg("refbot", "carol1"))
            counters = runtime.channels.running("irc").counters
        await carol.aclose()
    assert got.param(-1) == "ok?"
    assert len(receipt.message_ids) == 1
    assert counters.send_failures == 3 and counters.sent == 1


@pytest.mark.anyio
async def test_taken_nick_falls_back_to_a_free_one(
    make_runtime, inspircd: InspIRCd, irc_user: IrcUser
) -> None:
    runtime = make_runtime(irc_config(inspircd, "dupbot"))
    with anyio.fail_after(TIMEOUT):
        holder = await irc_user("dupbot")
        async with runtime.serving():
            await wait_running(runtime)
            client = adapter(runtime).client
            assert client is not None and client.nick == "dupbot_"
            await holder.privmsg("dupbot_", "dupbot_: are you there")
            answer = await holder.wait_for(is_privmsg("dupbot_", "dupbot"))
        await holder.aclose()
    assert answer.param(-1) == "echo: dupbot_: are you there"


@pytest.mark.anyio
async def test_no_relayed_line_exceeds_512_bytes(
    make_runtime, inspircd: InspIRCd, irc_user: IrcUser
) -> None:
    nick = "b" * 30
    channel = "#" + "long-channel-name-" * 3
    runtime = make_runtime(irc_config(inspircd, nick, channel))
    text = "Ünïcödé wörds ✓ " * 120 + "\n" + "x" * 900 + "\nlast line"
    with anyio.fail_after(TIMEOUT):
        dave = await irc_user("dave1")
        await dave.join(channel)
        async with runtime.serving():
            await dave.wait_for(lambda m: m.command == "JOIN" and m.nick == nick)
            before = len(dave.lines)
            receipt = await runtime.channels.send("irc", channel, OutboundMessage(text=text))
            got: list[str] = []
            while len(got) < len(receipt.message_ids):
                got.append((await dave.wait_for(is_privmsg(nick, channel))).param(-1))
        relayed = [line for line in dave.lines[before:] if b" PRIVMSG " in line]
        await dave.aclose()
    assert all(len(line) + 2 <= 512 for line in relayed)
    assert max(len(line) + 2 for line in relayed) > 400  # the budget is used, not wasted
    assert "".join(got).replace(" ", "") == text.replace(" ", "").replace("\n", "")
    assert all(measure(t, LengthUnit.BYTES) <= 512 for t in got)


@pytest.mark.anyio
async def test_tls_with_a_trusted_ca_file(
    make_runtime, inspircd: InspIRCd, irc_user: IrcUser
) -> None:
    extra = f'use_tls = true\ntls_ca_file = "{inspircd.ca_file}"'
    config = irc_config(inspircd, "tlsbot", extra=extra).replace(
        f"port = {inspircd.port}", f"port = {inspircd.tls_port}"
    )
    runtime = make_runtime(config.replace('server = "127.0.0.1"', 'server = "localhost"'))
    with anyio.fail_after(TIMEOUT):
        async with runtime.serving():
            await wait_running(runtime)
            erin = await irc_user("erin1")
            await erin.privmsg("tlsbot", "secure hello")
            answer = await erin.wait_for(is_privmsg("tlsbot", "erin1"))
            await erin.aclose()
    assert answer.param(-1) == "echo: secure hello"


@pytest.mark.anyio
async def test_tls_refuses_an_untrusted_certificate_unless_told_not_to_verify(
    make_runtime, inspircd: InspIRCd, irc_user: IrcUser
) -> None:
    base = irc_config(inspircd, "tlsbot2", extra="use_tls = true").replace(
        f"port = {inspircd.port}", f"port = {inspircd.tls_port}"
    )
    runtime = make_runtime(base)
    with anyio.fail_after(TIMEOUT):
        async with runtime.serving():
            status = await wait_state(runtime, "irc", lambda s: s.startswith("error"))
    assert "certificate" in status.lower()
    runtime = make_runtime(base + "tls_verify = false\n")
    with anyio.fail_after(TIMEOUT):
        async with runtime.serving():
            await wait_running(runtime)
            receipt = await runtime.channels.send("irc", "tlsbot2", OutboundMessage(text="me"))
    assert receipt.message_ids


@pytest.mark.anyio
async def test_reconnects_after_the_server_drops_the_connection(
    make_runtime, inspircd: InspIRCd, irc_user: IrcUser
) -> None:
    runtime = make_runtime(irc_config(inspircd, "killbot", "#room2"))
    with anyio.fail_after(TIMEOUT + 10):
        frank = await irc_user("frank1")
        await frank.join("#room2")
        async with runtime.serving():
            await frank.wait_for(lambda m: m.command == "JOIN" and m.nick == "killbot")
            await frank.oper_kill("killbot")
            await frank.wait_for(lambda m: m.command == "QUIT" and m.nick == "killbot")
            await frank.wait_for(lambda m: m.command == "JOIN" and m.nick == "killbot")
            await wait_running(runtime)
            await frank.privmsg("#room2", "killbot, back?")
            answer = await frank.wait_for(is_privmsg("killbot", "#room2"))
        await frank.aclose()
    assert answer.param(-1) == "echo: back?"


@pytest.mark.anyio
async def test_stops_cleanly_and_quits(make_runtime, inspircd: InspIRCd, irc_user: IrcUser) -> None:
    runtime = make_runtime(irc_config(inspircd, "stopbot", "#room3"))
    with anyio.fail_after(TIMEOUT):
        gina = await irc_user("gina1")
        await gina.join("#room3")
        async with runtime.serving():
            await gina.wait_for(lambda m: m.command == "JOIN" and m.nick == "stopbot")
            with anyio.fail_after(8):
                await runtime.channels.stop_all()
        quit_msg = await gina.wait_for(lambda m: m.command == "QUIT" and m.nick == "stopbot")
        await gina.aclose()
    assert "fangwire stopping" in quit_msg.param(-1)


@pytest.mark.anyio
async def test_password_stays_out_of_repr_and_logs(
    make_runtime, inspircd: InspIRCd, caplog: pytest.LogCaptureFixture
) -> None:
    password = "s3cret-irc-pass-42"
    runtime = make_runtime(irc_config(inspircd, "passbot"), environ={"IRC_PASSWORD": password})
    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(TIMEOUT):
        async with runtime.serving():
            await wait_running(runtime)
            channel = adapter(runtime)
            assert channel.settings["password"].reveal() == password
            shown = [repr(channel), repr(channel.ctx), repr(channel.client), str(channel.settings)]
            assert channel.client is not None
            shown.append(repr(channel.client.config))
            with pytest.raises(ChannelError):
                await runtime.channels.send("irc", "nobody-2", OutboundMessage(text="x"))
    assert all(password not in text for text in shown)
    assert password not in caplog.text


# -- SASL (fake server implementing the documented exchange) ----------------------------------


@attrs.define
class SaslServer:
    """Speaks CAP REQ :sasl / AUTHENTICATE PLAIN, pings, then confirms PRIVMSGs with PONG."""

    account: str
    password: str
    port: int = 0
    lines: list[str] = attrs.field(factory=list)
    pongs: list[str] = attrs.field(factory=list)

    async def handle(self, stream: SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        nick = "*"

        async def send(line: str) -> None:
            await stream.send(line.encode() + b"\r\n")

        async with stream:
            while True:
                try:
                    raw = await reader.receive_until(b"\r\n", 4096)
                except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                msg = parse(raw.decode())
                self.lines.append(msg.command if msg.command == "AUTHENTICATE" else raw.decode())
                if msg.command == "NICK":
                    nick = msg.param(0)
                elif msg.command == "CAP" and msg.param(0) == "REQ":
                    await send(f":sasl.test CAP {nick} ACK :{msg.param(-1)}")
                elif msg.command == "AUTHENTICATE" and msg.param(0) == "PLAIN":
                    await send("AUTHENTICATE +")
                elif msg.command == "AUTHENTICATE":
                    expected = f"{self.account}\0{self.account}\0{self.password}".encode()
                    if base64.b64decode(msg.param(0)) == expected:
                        await send(f":sasl.test 900 {nick} {nick}!u@h {self.account} :Logged in")
                        await send(f":sasl.test 903 {nick} :SASL authentication successful")
                    else:
                        await send(f":sasl.test 904 {nick} :SASL authentication failed")
                elif msg.command == "CAP" and msg.param(0) == "END":
                    await send(f":sasl.test 001 {nick} :Welcome {nick}!u@h")
                    await send("PING :are-you-alive")
                elif msg.command == "PONG":
                    self.pongs.append(msg.param(-1))
                elif msg.command == "PRIVMSG" and msg.param(0) == "#busy":
                    await send(f":sasl.test 263 {nick} PRIVMSG :Server load is too heavy")
                elif msg.command == "PING":
                    await send(f":sasl.test PONG sasl.test :{msg.param(-1)}")


@asynccontextmanager
async def serving_sasl(server: SaslServer) -> AsyncIterator[SaslServer]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        yield server
        tg.cancel_scope.cancel()


def sasl_config(port: int) -> str:
    return f"""
[channels.irc]
server = "127.0.0.1"
port = {port}
nick = "saslbot"
sasl_username = "botaccount"
"""


@pytest.mark.anyio
async def test_sasl_plain_login_and_ping_answered(make_runtime) -> None:
    server = SaslServer("botaccount", "sasl-pw-1")
    with anyio.fail_after(TIMEOUT):
        async with serving_sasl(server):
            runtime = make_runtime(sasl_config(server.port), environ={"IRC_PASSWORD": "sasl-pw-1"})
            async with runtime.serving():
                await wait_running(runtime)
                receipt = await runtime.channels.send("irc", "#x", OutboundMessage(text="hi"))
                with pytest.raises(ChannelError, match="263") as busy:
                    await runtime.channels.send("irc", "#busy", OutboundMessage(text="hi"))
                while "are-you-alive" not in server.pongs:
                    await anyio.sleep(0.02)
    assert receipt.message_ids
    assert server.lines[0] == "CAP REQ :sasl"
    assert "PRIVMSG #x :hi" in server.lines
    assert busy.value.retryable  # "try again" is retried by the core, then reported
    assert server.lines.count("PRIVMSG #busy :hi") == 3
    assert not any(line.startswith("PASS") for line in server.lines)


@pytest.mark.anyio
async def test_sasl_failure_fails_the_login(make_runtime) -> None:
    server = SaslServer("botaccount", "right-pw")
    with anyio.fail_after(TIMEOUT):
        async with serving_sasl(server):
            runtime = make_runtime(sasl_config(server.port), environ={"IRC_PASSWORD": "wrong-pw"})
            async with runtime.serving():
                status = await wait_state(runtime, "irc", lambda s: s.startswith("error"))
    assert "SASL authentication failed" in status


@pytest.mark.anyio
async def test_a_silent_server_ends_the_session_after_a_keepalive_ping() -> None:
    seen: list[str] = []

    async def handle(stream: SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            while True:
                try:
                    raw = await reader.receive_until(b"\r\n", 4096)
                except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                seen.append(raw.decode())
                if raw.startswith(b"USER"):
                    await stream.send(b":silent.test 001 quietbot :Welcome\r\n")

    async def ignore(client: IrcClient, msg: Message) -> None:
        raise AssertionError("no message expected")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
    config = ClientConfig(host="127.0.0.1", port=port, nick="quietbot", idle_timeout=0.2)
    client = IrcClient(config, logging.getLogger("t"), anyio.current_time)
    with anyio.fail_after(TIMEOUT):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            await client.connect()
            with pytest.raises(ChannelError, match="no answer from the server") as info:
                await client.run(ignore)
            await client.close()
            tg.cancel_scope.cancel()
    assert info.value.retryable
    assert any(line.startswith("PING keepalive-") for line in seen)
    assert not client.connected


# -- conformance ----------------------------------------------------------------------------


class IrcPeer:
    """A user on the InspIRCd: writes the bot privately and collects what the bot writes it."""

    def __init__(self, server: InspIRCd, user: RawIrcClient, bot_nick: str) -> None:
        self.user = user
        self.bot_nick = bot_nick
        self.target = user.nick
        self.refused_target = "nobody-by-that-nick"
        self.settings = {
            "server": server.host,
            "port": server.port,
            "nick": bot_nick,
            "channels": [],
            "use_tls": False,
            "password": "conformance-pass-7",  # sent as PASS; this server has none and ignores it
        }
        self.unreachable_settings = {**self.settings, "port": free_port()}
        self.got: list[str] = []

    async def inbound(self, text: str) -> None:
        await self.user.privmsg(self.bot_nick, text)

    async def received(self, count: int) -> list[str]:
        while len(self.got) < count:
            msg = await self.user.wait_for(
                lambda m: m.command == "PRIVMSG" and m.param(0) == self.target
            )
            self.got.append(msg.param(-1))
        return list(self.got)


class TestIrcConformance(ChannelConformance):
    adapter = IrcChannel
    count = 0

    @pytest.fixture
    async def peer(self, inspircd: InspIRCd, irc_user: IrcUser) -> IrcPeer:
        TestIrcConformance.count += 1
        number = TestIrcConformance.count
        return IrcPeer(inspircd, await irc_user(f"confuser{number}"), f"confbot{number}")
