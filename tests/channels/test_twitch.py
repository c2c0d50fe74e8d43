"""The ``twitch`` channel: Twitch's IRC dialect.

InspIRCd does not produce Twitch's message tags (``display-name``, ``user-id``, ``id`` ...) nor
its ``USERSTATE``/``NOTICE msg-id`` answers, so those are tested against :class:`FakeTwitch`,
a line server that speaks the documented format (https://dev.twitch.tv/docs/irc/): it checks
the ``PASS oauth:`` login, acknowledges the two capabilities, answers ``PING`` at once but
``PRIVMSG`` a little later with ``USERSTATE`` (as Twitch's edge and chat backend do), and
refuses channels it is told to with ``NOTICE`` and a ``msg-id``. The plain chat round trip
runs on the real InspIRCd.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import attrs
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from fangwire.channels import ChannelContext, ChannelError, OutboundMessage
from fangwire.runtime import Runtime
from fangwire.secrets.value import Secret
from fangwire.testing.channels import ChannelConformance
from fangwire_channels.ircproto import IrcClient, Message, parse
from fangwire_channels.twitch import TwitchChannel
from tests.channels.servers.inspircd import (  # noqa: F401 - fixtures
    InspIRCd,
    RawIrcClient,
    free_port,
    inspircd_fixture,
    irc_user_fixture,
)

TIMEOUT = 20
TOKEN = "abcdef0123456789tokenvalue"
IrcUser = Callable[[str], Awaitable[RawIrcClient]]


@attrs.define
class FakeTwitch:
    token: str
    refuse: dict[str, str] = attrs.field(factory=dict)  # channel -> msg-id
    port: int = 0
    lines: list[str] = attrs.field(factory=list)
    connections: int = 0
    sent_ids: list[str] = attrs.field(factory=list)
    ids_by_text: dict[str, str] = attrs.field(factory=dict)
    joins: int = 0
    _stream: SocketStream | None = None

    async def push(self, line: str) -> None:
        if self._stream is None:
            raise RuntimeError("nobody is connected")
        await self._stream.send(line.encode() + b"\r\n")

    async def wait_joined(self, count: int = 1) -> None:
        while self.joins < count:
            await anyio.sleep(0.01)

    async def wait_line(self, predicate: Callable[[Message], bool]) -> Message:
        seen = 0
        while True:
            for line in self.lines[seen:]:
                msg = parse(line)
                if predicate(msg):
                    return msg
            seen = len(self.lines)
            await anyio.sleep(0.01)

    async def handle(self, stream: SocketStream) -> None:
        self.connections += 1
        self._stream = stream
        reader = BufferedByteReceiveStream(stream)
        password = nick = ""

        async def send(line: str) -> None:
            await stream.send(line.encode() + b"\r\n")

        async def confirm(msg: Message) -> None:
            channel = msg.param(0)
            # The chat backend answers after the edge's PONG; "slow" texts take longer.
            await anyio.sleep(0.3 if "slow" in msg.param(-1) else 0.05)
            if channel in self.refuse:
                msg_id = self.refuse[channel]
                await send(f"@msg-id={msg_id} :tmi.twitch.tv NOTICE {channel} :Refused.")
                return
            message_id = str(uuid.uuid4())
            self.sent_ids.append(message_id)
            self.ids_by_text[msg.param(-1)] = message_id
            nonce = msg.tags.get("client-nonce", "")
            await send(
                f"@badge-info=;badges=;client-nonce={nonce};color=;display-name=TwBot;"
                f"emote-sets=0;id={message_id};mod=0;subscriber=0;user-type= "
                f":tmi.twitch.tv USERSTATE {channel}"
            )

        async with stream, anyio.create_task_group() as tg:
            while True:
                try:
                    raw = await reader.receive_until(b"\r\n", 16384)
                except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError):
                    tg.cancel_scope.cancel()
                    return
                line = raw.decode()
                self.lines.append(line)
                msg = parse(line)
                if msg.command == "CAP" and msg.param(0) == "REQ":
                    await send(f":tmi.twitch.tv CAP * ACK :{msg.param(-1)}")
                elif msg.command == "PASS":
                    password = msg.param(0)
                elif msg.command == "NICK":
                    nick = msg.param(0)
                    if password != f"oauth:{self.token}":
                        await send(":tmi.twitch.tv NOTICE * :Login authentication failed")
                        tg.cancel_scope.cancel()
                        return
                    for number, text in (("001", "Welcome, GLHF!"), ("376", ">")):
                        await send(f":tmi.twitch.tv {number} {nick} :{text}")
                elif msg.command == "JOIN":
                    channel = msg.param(0)
                    await send(f":{nick}!{nick}@{nick}.tmi.twitch.tv JOIN {channel}")
                    await send(f"@badge-info=;badges=;mod=0 :tmi.twitch.tv USERSTATE {channel}")
                    await send(f"@emote-only=0;room-id=42 :tmi.twitch.tv ROOMSTATE {channel}")
                    self.joins += 1
                elif msg.command == "PING":
                    await send(f":tmi.twitch.tv PONG tmi.twitch.tv :{msg.param(-1)}")
                elif msg.command == "PRIVMSG":
                    tg.start_soon(confirm, msg)


@asynccontextmanager
async def serving_fake(server: FakeTwitch) -> AsyncIterator[FakeTwitch]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        yield server
        tg.cancel_scope.cancel()


def twitch_config(port: int, *channels: str, extra: str = "") -> str:
    listed = ", ".join(f'"{c}"' for c in channels)
    return f"""
[channels.twitch]
nick = "TwBot"
channels = [{listed}]
server = "127.0.0.1"
port = {port}
use_tls = false
agent = "assistant"
{extra}
"""


def alice_says(text: str, message_id: str, **extra_tags: str) -> str:
    tags = {
        "badge-info": "",
        "badges": "",
        "color": "#0000FF",
        "display-name": "Alice\\sB",
        "emotes": "",
        "first-msg": "0",
        "id": message_id,
        "mod": "0",
        "room-id": "42",
        "tmi-sent-ts": "1700000000000",
        "user-id": "1234",
        "user-type": "",
        **extra_tags,
    }
    joined = ";".join(f"{k}={v}" for k, v in tags.items())
    return f"@{joined} :alice!alice@alice.tmi.twitch.tv PRIVMSG #stream :{text}"


async def wait_status(runtime: Runtime, predicate: Callable[[str], bool]) -> str:
    with anyio.fail_after(TIMEOUT):
        while not predicate(runtime.channels.running("twitch").status):
            await anyio.sleep(0.02)
    return runtime.channels.running("twitch").status


def is_bot_privmsg(m: Message) -> bool:
    return m.command == "PRIVMSG"


def test_discovered_with_twitch_fields(runtime: Runtime) -> None:
    assert runtime.pm.records["twitch"].status == "loaded"
    assert runtime.channels.adapter_class("twitch") is TwitchChannel
    fields = {f.key: f for f in TwitchChannel.config_fields}
    assert fields["oauth_token"].secret and fields["oauth_token"].env == "TWITCH_OAUTH_TOKEN"
    assert fields["server"].default == "irc.chat.twitch.tv" and fields["port"].default == 6697
    assert fields["use_tls"].default is True
    assert TwitchChannel.max_message_length == 500


def test_inbound_keeps_the_reply_parent_of_a_threaded_message() -> None:
    ctx = ChannelContext(
        name="twitch",
        settings={"nick": "twbot", "channels": ["#stream"], "oauth_token": Secret(TOKEN)},
        http=None,  # type: ignore[arg-type]
        deliver=None,  # type: ignore[arg-type]
        log=logging.getLogger("t"),
        clock=lambda: 0.0,
    )
    channel = TwitchChannel(ctx)
    client = IrcClient(channel.client_config(), ctx.log, ctx.clock)
    line = alice_says(
        "@TwBot is this yours?",
        "m-9",
        **{"reply-parent-msg-id": "p-1", "reply-parent-user-login": "carl"},
    )
    inbound = channel.to_inbound(client, parse(line))
    assert inbound is not None
    assert (inbound.sender, inbound.sender_name, inbound.chat) == ("1234", "Alice B", "#stream")
    assert (inbound.message_id, inbound.thread_id) == ("m-9", "m-9")
    assert inbound.mentioned and inbound.text == "is this yours?"
    assert inbound.raw["reply_parent_msg_id"] == "p-1"
    assert inbound.raw["tags"]["reply-parent-user-login"] == "carl"
    assert client.config.password is not None
    assert client.config.password.reveal() == f"oauth:{TOKEN}"


@pytest.mark.anyio
async def test_tags_are_read_and_the_answer_is_threaded(make_runtime) -> None:
    fake = FakeTwitch(TOKEN)
    with anyio.fail_after(TIMEOUT):
        async with serving_fake(fake):
            runtime = make_runtime(
                twitch_config(fake.port, "#Stream"), environ={"TWITCH_OAUTH_TOKEN": TOKEN}
            )
            async with (
                runtime.serving(),
                runtime.bus.subscribe("channel.inbound", "channel.outbound") as sub,
            ):
                await fake.wait_joined()
                await fake.push(alice_says("no mention here", "m-0"))
                await fake.push(alice_says("@TwBot hello bot", "m-1"))
                reply = await fake.wait_line(is_bot_privmsg)
                first = await sub.receive()
                second = await sub.receive()
                outbound = await sub.receive()
    assert fake.lines[:3] == [
        "CAP REQ :twitch.tv/tags twitch.tv/commands",
        f"PASS oauth:{TOKEN}",
        "NICK twbot",
    ]
    assert "JOIN #stream" in fake.lines
    assert reply.tags["reply-parent-msg-id"] == "m-1"
    assert set(reply.tags) == {"reply-parent-msg-id", "client-nonce"}
    assert reply.params == ("#stream", "echo: hello bot")
    assert first.payload["text"] == "no mention here"
    assert second.payload["sender"] == "1234"
    assert second.payload["sender_name"] == "Alice B"
    assert second.payload["thread_id"] == "m-1"
    assert second.payload["is_group"] is True
    assert outbound.payload["message_ids"] == fake.sent_ids  # Twitch's id from USERSTATE


@pytest.mark.anyio
async def test_a_reply_to_the_bot_mentions_it_and_threading_can_be_off(make_runtime) -> None:
    fake = FakeTwitch(TOKEN)
    with anyio.fail_after(TIMEOUT):
        async with serving_fake(fake):
            runtime = make_runtime(
                twitch_config(fake.port, "stream", extra="threading = false"),
                environ={"TWITCH_OAUTH_TOKEN": f"oauth:{TOKEN}"},
            )
            async with runtime.serving():
                await fake.wait_joined()
                await fake.push(
                    alice_says(
                        "thanks a lot",
                        "m-2",
                        **{
                            "reply-parent-msg-id": "bot-9",
                            "reply-parent-user-login": "twbot",
                            "reply-parent-display-name": "TwBot",
                        },
                    )
                )
                reply = await fake.wait_line(is_bot_privmsg)
    assert f"PASS oauth:{TOKEN}" in fake.lines  # the prefix is not doubled
    assert set(reply.tags) == {"client-nonce"}
    assert reply.params == ("#stream", "echo: thanks a lot")


@pytest.mark.anyio
async def test_notice_refusal_raises_and_long_text_is_cut_at_500_characters(make_runtime) -> None:
    fake = FakeTwitch(TOKEN, refuse={"#closed": "msg_channel_suspended", "#busy": "msg_ratelimit"})
    with anyio.fail_after(TIMEOUT):
        async with serving_fake(fake):
            runtime = make_runtime(
                twitch_config(fake.port, "#stream"), environ={"TWITCH_OAUTH_TOKEN": TOKEN}
            )
            async with runtime.serving():
                await fake.wait_joined()
                with pytest.raises(ChannelError, match="msg_channel_suspended") as info:
                    await runtime.channels.send("twitch", "#closed", OutboundMessage(text="hi"))
                with pytest.raises(ChannelError, match="msg_ratelimit") as limited:
                    await runtime.channels.send("twitch", "#busy", OutboundMessage(text="hi"))
                text = "word " * 240 + "line\ntwo"
                receipt = await runtime.channels.send(
                    "twitch", "#stream", OutboundMessage(text=text)
                )
    assert not info.value.retryable
    assert limited.value.retryable  # retried by the core (3 attempts), then reported
    busy = [m for m in map(parse, fake.lines) if m.command == "PRIVMSG" and m.param(0) == "#busy"]
    assert len(busy) == 3
    sent = [m for m in map(parse, fake.lines) if m.command == "PRIVMSG" and m.param(0) == "#stream"]
    assert len(sent) == len(receipt.message_ids) == 3
    assert all(len(m.param(-1)) <= 500 for m in sent)
    assert sent[-1].param(-1).endswith("line two")
    assert list(receipt.message_ids) == fake.sent_ids


@pytest.mark.anyio
async def test_concurrent_sends_get_their_own_confirmations(make_runtime) -> None:
    fake = FakeTwitch(TOKEN)
    with anyio.fail_after(TIMEOUT):
        async with serving_fake(fake):
            runtime = make_runtime(
                twitch_config(fake.port, "#stream"), environ={"TWITCH_OAUTH_TOKEN": TOKEN}
            )
            receipts: dict[str, tuple[str, ...]] = {}

            async def send(text: str) -> None:
                receipt = await runtime.channels.send("twitch", "#stream", OutboundMessage(text))
                receipts[text] = receipt.message_ids

            async with runtime.serving():
                await fake.wait_joined()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(send, "slow one")
                    await fake.wait_line(lambda m: m.command == "PRIVMSG")
                    tg.start_soon(send, "fast two")
    # "fast two" was accepted first, yet each send got the id Twitch gave its own message.
    assert fake.sent_ids == [fake.ids_by_text["fast two"], fake.ids_by_text["slow one"]]
    assert receipts == {t: (fake.ids_by_text[t],) for t in ("slow one", "fast two")}


@pytest.mark.anyio
async def test_a_bad_token_fails_the_login_and_stays_secret(
    make_runtime, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeTwitch(TOKEN)
    wrong = "wrong-token-value-777"
    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(TIMEOUT):
        async with serving_fake(fake):
            runtime = make_runtime(
                twitch_config(fake.port, "#stream"), environ={"TWITCH_OAUTH_TOKEN": wrong}
            )
            async with runtime.serving():
                status = await wait_status(runtime, lambda s: s.startswith("error"))
                channel = runtime.channels.running("twitch").adapter
                shown = repr(channel) + repr(channel.ctx) + str(channel.settings)
    assert "Login authentication failed" in status
    assert wrong not in shown and wrong not in caplog.text


@pytest.mark.anyio
async def test_reconnect_command_starts_a_new_session(make_runtime) -> None:
    fake = FakeTwitch(TOKEN)
    with anyio.fail_after(TIMEOUT):
        async with serving_fake(fake):
            runtime = make_runtime(
                twitch_config(fake.port, "#stream"), environ={"TWITCH_OAUTH_TOKEN": TOKEN}
            )
            async with runtime.serving():
                await fake.wait_joined()
                await fake.push(":tmi.twitch.tv RECONNECT")
                await fake.wait_joined(2)
                assert fake.connections == 2
                await wait_status(runtime, lambda s: s == "running")
                await fake.push(alice_says("@twbot still there?", "m-3"))
                reply = await fake.wait_line(lambda m: m.command == "PRIVMSG")
    assert reply.params == ("#stream", "echo: still there?")


@pytest.mark.anyio
async def test_chat_round_trip_on_a_real_irc_server(
    make_runtime, inspircd: InspIRCd, irc_user: IrcUser
) -> None:
    runtime = make_runtime(
        twitch_config(inspircd.port, "#twroom"), environ={"TWITCH_OAUTH_TOKEN": TOKEN}
    )
    with anyio.fail_after(TIMEOUT):
        viewer = await irc_user("viewer1")
        await viewer.join("#twroom")
        async with runtime.serving():
            await viewer.wait_for(lambda m: m.command == "JOIN" and m.nick == "twbot")
            await viewer.privmsg("#twroom", "@TwBot hi there")
            answer = await viewer.wait_for(lambda m: m.command == "PRIVMSG" and m.nick == "twbot")
            with pytest.raises(ChannelError, match="403"):
                await runtime.channels.send("twitch", "#nobody-here", OutboundMessage(text="x"))
    assert answer.params == ("#twroom", "echo: hi there")


# -- conformance (on the real IRC server: a viewer in the bot's chat room) -------------------


class ChatRoomPeer:
    """A viewer in the room: addresses the bot with ``@nick`` and reads what it writes there."""

    def __init__(self, server: InspIRCd, user: RawIrcClient, number: int) -> None:
        self.user = user
        self.bot_nick = f"twconf{number}"
        self.target = f"#twconf{number}"
        self.refused_target = f"#nobody-there-{number}"
        self.settings = {
            "oauth_token": "conformance-token-9",
            "nick": self.bot_nick,
            "channels": [self.target],
            "server": server.host,
            "port": server.port,
            "use_tls": False,
        }
        self.unreachable_settings = {**self.settings, "port": free_port()}
        self.got: list[str] = []

    async def inbound(self, text: str) -> None:
        await self.user.privmsg(self.target, f"@{self.bot_nick} {text}")

    async def received(self, count: int) -> list[str]:
        while len(self.got) < count:
            msg = await self.user.wait_for(
                lambda m: m.command == "PRIVMSG" and m.nick == self.bot_nick
            )
            self.got.append(msg.param(-1))
        return list(self.got)


class TestTwitchConformance(ChannelConformance):
    adapter = TwitchChannel
    count = 0

    @pytest.fixture
    async def peer(self, inspircd: InspIRCd, irc_user: IrcUser) -> ChatRoomPeer:
        TestTwitchConformance.count += 1
        number = TestTwitchConformance.count
        viewer = await irc_user(f"viewer{number}")
        peer = ChatRoomPeer(inspircd, viewer, number)
        await viewer.join(peer.target)
        return peer
