"""The ``irc`` channel: a bot on an IRC network (plain or TLS, PASS or SASL PLAIN).

Inbound: private messages to the bot (a DM; the chat is the sender's nick) and messages in
the joined ``channels`` (a group chat; ``mentioned`` when the text addresses the bot's nick as
``nick:``, ``nick,``, ``@nick`` or as a word; a leading address is removed from the text).
CTCP requests and NOTICEs are ignored, as are the bot's own messages.

Outbound: ``PRIVMSG``. Every line the server relays is ``:nick!user@host PRIVMSG target :text``
plus CRLF, at most 512 bytes, so the text budget depends on the bot's visible hostmask and
the target. The class limit (:attr:`IrcChannel.max_message_length`, 340 bytes) covers a
30-byte nick, an 11-byte user, a 63-byte host and a 50-byte target; ``send`` also computes
the exact budget from the hostmask the server reported (or the announced ``USERLEN`` and
``HOSTLEN``) and splits again when a chunk would not fit, so no line is ever longer. Line
breaks become separate messages. A send is confirmed or refused by the server before it
returns (see :mod:`fangwire_channels.ircproto`).

``password`` is the server password (``PASS``) unless ``sasl_username`` is set, in which case
it is the SASL PLAIN password and the login fails when the server does not offer SASL.
"""

from __future__ import annotations

from collections.abc import Callable

from fangwire.channels import (
    ChannelAdapter,
    ChannelError,
    ConfigField,
    DeliveryReceipt,
    InboundMessage,
    OutboundMessage,
)
from fangwire.hookspecs import hookimpl
from fangwire_channels.ircproto import (
    ClientConfig,
    IrcAdapterBase,
    IrcClient,
    Message,
    mention_strip,
    raw_fields,
    split_text,
)


class IrcChannel(IrcAdapterBase):
    name = "irc"
    display_name = "IRC"
    description = "A bot on an IRC network: channels and private messages, TLS and SASL."
    category = "developer"
    icon = "IR"
    config_fields = (
        ConfigField(
            "server", required=True, help="IRC server host name", placeholder="irc.libera.chat"
        ),
        ConfigField("port", type="number", help="default 6697 with TLS, 6667 without"),
        ConfigField("nick", required=True, help="the bot's nick (a free variant is used if taken)"),
        ConfigField(
            "channels",
            type="list",
            help='channels to join, e.g. #ops ("#chan key" for a keyed one)',
        ),
        ConfigField("use_tls", type="bool", default=False, help="connect with TLS"),
        ConfigField(
            "password",
            secret=True,
            env="IRC_PASSWORD",
            help="server password (PASS), or the SASL password when sasl_username is set",
        ),
        ConfigField("sasl_username", help="log in with SASL PLAIN as this account", advanced=True),
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
    max_message_length = 340

    def client_config(self) -> ClientConfig:
        s = self.settings
        tls = bool(s.get("use_tls"))
        password = s.get("password")
        sasl_username = s.get("sasl_username") or None
        return ClientConfig(
            host=str(s["server"]),
            port=int(s.get("port") or (6697 if tls else 6667)),
            nick=str(s["nick"]),
            channels=tuple(s.get("channels") or ()),
            tls=tls,
            tls_ca_file=s.get("tls_ca_file") or None,
            tls_verify=s.get("tls_verify") is not False,
            password=password,
            sasl_username=sasl_username,
            sasl_password=password if sasl_username else None,
        )

    def to_inbound(self, client: IrcClient, msg: Message) -> InboundMessage | None:
        target, text = msg.param(0), msg.param(-1)
        chantypes = client.isupport.get("CHANTYPES") or "#&"
        is_group = bool(target) and target[0] in chantypes
        mentioned = False
        if is_group:
            mentioned, text = mention_strip(text, client.nick)
        if not text.strip():
            return None
        return InboundMessage(
            channel=self.ctx.name,
            sender=msg.nick,
            sender_name=msg.nick,
            chat=target if is_group else msg.nick,
            text=text,
            is_group=is_group,
            mentioned=mentioned,
            raw=raw_fields(msg),
        )

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        if not target or any(c in target for c in " ,\r\n\0"):
            raise ChannelError(f"not an IRC nick or channel: {target!r}")
        client = self._live_client()
        lines = split_text(message.text, client.text_budget(target))
        if not lines:
            raise ChannelError("the message has no text to send")
        ids = await client.privmsg(target, lines)
        return DeliveryReceipt(channel=self.ctx.name, target=target, message_ids=tuple(ids))


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(IrcChannel)
