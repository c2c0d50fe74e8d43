"""The ``twitch`` channel: Twitch chat over its IRC interface (``irc.chat.twitch.tv:6697``).

The same client as ``irc`` (:mod:`fangwire_channels.ircproto`) in Twitch's dialect: it logs in
with ``PASS oauth:<token>`` and ``NICK``, asks for ``twitch.tv/tags`` and
``twitch.tv/commands``, and reads the IRCv3 tags of each ``PRIVMSG``: ``user-id`` is the
sender, ``display-name`` its name, ``id`` the message id. Every chat message is a group
message; it mentions the bot when it names ``@nick`` (or the nick as a word) or replies to
one of the bot's messages (``reply-parent-user-login``).

Replies are threaded: an inbound message's ``id`` is its ``thread_id``, and a send with a
``thread_id`` goes out as ``@reply-parent-msg-id=<id> PRIVMSG #channel :text``. Messages are
at most 500 characters; line breaks become spaces (Twitch chat has none).

A send carries a ``client-nonce`` tag. It is accepted when Twitch answers ``USERSTATE`` for
the channel, which echoes the nonce (its ``id`` tag, when present, becomes the receipt's id;
without a nonce the oldest send to that channel is taken, skipping the USERSTATE that follows
a JOIN), and refused when Twitch answers ``NOTICE`` with a ``msg_*`` id (``msg_ratelimit`` and
``msg_slowmode`` are retryable), within 10 s. A server that did not acknowledge
``twitch.tv/commands`` (an ordinary IRC server) confirms with the PONG after the message, as
on plain IRC; its 512-byte line limit then applies (the text is split further when a line
would be longer) and no tags are sent. Outbound pacing keeps to Twitch's limit for ordinary
accounts: 20 messages in any 30 seconds.

Whispers are not supported: Twitch no longer delivers them over IRC.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fangwire.channels import (
    ChannelAdapter,
    ChannelError,
    ConfigField,
    DeliveryReceipt,
    InboundMessage,
    LengthUnit,
    OutboundMessage,
)
from fangwire.hookspecs import hookimpl
from fangwire.secrets.value import Secret
from fangwire_channels.ircproto import (
    ClientConfig,
    IrcAdapterBase,
    IrcClient,
    Message,
    irc_lower,
    mention_strip,
    raw_fields,
    split_text,
)

TWITCH_HOST = "irc.chat.twitch.tv"
TWITCH_CAPS = ("twitch.tv/tags", "twitch.tv/commands")
MAX_CHARACTERS = 500
_NEWLINES = re.compile(r"\s*[\r\n]+\s*")


def channel_name(value: str) -> str:
    """``#name`` in lower case, as Twitch spells channels."""
    name = value.strip().lower()
    return name if name.startswith("#") else f"#{name}"


class TwitchChannel(IrcAdapterBase):
    name = "twitch"
    display_name = "Twitch"
    description = "A bot in Twitch chat rooms, over Twitch's IRC interface, with threaded replies."
    category = "developer"
    icon = "TW"
    capabilities = frozenset({"send", "receive", "groups", "threads"})
    config_fields = (
        ConfigField(
            "oauth_token",
            required=True,
            secret=True,
            env="TWITCH_OAUTH_TOKEN",
            help="the bot account's chat token (with or without the oauth: prefix)",
        ),
        ConfigField("nick", required=True, help="the bot account's login name"),
        ConfigField(
            "channels", type="list", required=True, help="channels to join, e.g. #mystream"
        ),
        ConfigField("server", default=TWITCH_HOST, help="chat server host", advanced=True),
        ConfigField("port", type="number", default=6697, help="chat server port", advanced=True),
        ConfigField("use_tls", type="bool", default=True, help="connect with TLS", advanced=True),
        ConfigField(
            "tls_ca_file",
            help="PEM file of CA certificates to trust instead of the system ones",
            advanced=True,
        ),
        ConfigField(
            "tls_verify",
            type="bool",
            default=True,
            help="verify the server's TLS certificate (turn off only for tests)",
            advanced=True,
        ),
    )
    max_message_length = MAX_CHARACTERS
    length_unit = LengthUnit.CHARACTERS

    def client_config(self) -> ClientConfig:
        s = self.settings
        token = s.get("oauth_token")
        if not isinstance(token, Secret) or not token:
            raise ChannelError("oauth_token is not set")
        raw = token.reveal().strip()
        password = Secret(raw if raw.startswith("oauth:") else f"oauth:{raw}")
        return ClientConfig(
            host=str(s.get("server") or TWITCH_HOST),
            port=int(s.get("port") or 6697),
            nick=str(s["nick"]).lower(),
            channels=tuple(channel_name(c) for c in s.get("channels") or ()),
            tls=s.get("use_tls") is not False,
            tls_ca_file=s.get("tls_ca_file") or None,
            tls_verify=s.get("tls_verify") is not False,
            password=password,
            caps=TWITCH_CAPS,
            max_line_bytes=None,
            pace_lines=20,
            pace_window=30.0,
            twitch=True,
        )

    def to_inbound(self, client: IrcClient, msg: Message) -> InboundMessage | None:
        tags = msg.tags
        mentioned, text = mention_strip(msg.param(-1), client.nick)
        if irc_lower(tags.get("reply-parent-user-login", "")) == irc_lower(client.nick):
            mentioned = True
        if not text.strip():
            return None
        message_id = tags.get("id") or None
        raw = raw_fields(msg)
        raw["reply_parent_msg_id"] = tags.get("reply-parent-msg-id") or None
        return InboundMessage(
            channel=self.ctx.name,
            sender=tags.get("user-id") or msg.nick,
            sender_name=tags.get("display-name") or msg.nick,
            chat=msg.param(0),
            text=text,
            is_group=True,
            mentioned=mentioned,
            thread_id=message_id,
            message_id=message_id,
            raw=raw,
        )

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        if not target.strip() or any(c in target for c in " ,\r\n\0"):
            raise ChannelError(f"not a Twitch channel: {target!r}")
        channel = channel_name(target)
        text = _NEWLINES.sub(" ", message.text).strip()
        if not text:
            raise ChannelError("the message has no text to send")
        if len(text) > MAX_CHARACTERS:
            raise ChannelError(f"message is {len(text)} characters; Twitch allows {MAX_CHARACTERS}")
        client = self._live_client()
        tags = None
        if message.thread_id and "twitch.tv/tags" in client.caps:
            tags = {"reply-parent-msg-id": message.thread_id}
        lines = [text]
        if "twitch.tv/commands" not in client.caps:
            # Not Twitch (an ordinary IRC server, as in tests): its 512-byte lines apply.
            lines = split_text(text, client.text_budget(channel))
        ids = await client.privmsg(channel, lines, tags=tags)
        return DeliveryReceipt(channel=self.ctx.name, target=channel, message_ids=tuple(ids))


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(TwitchChannel)
