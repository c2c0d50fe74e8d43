"""The ``xmpp`` channel: 1:1 chats and multi-user chat rooms (XEP-0045), through slixmpp.

One receive session is one XMPP stream: connect (STARTTLS required unless the operator allows
plaintext), authenticate, bind, send presence, join the configured ``rooms`` with the bot's
nick (asking for no history), then deliver messages until the stream ends. slixmpp's own
reconnect logic is never used: when the stream drops, :meth:`XmppChannel.receive` raises and
the core reconnects with back-off (a new client object each time).

Inbound: ``chat``/``normal`` messages with a body become DMs; ``groupchat`` messages become
room messages (``mentioned`` when the body names the bot's nick). The room's reflection of the
bot's own messages, delayed history replays and subject changes are not delivered.

Outbound, by target: a room in ``rooms`` (or any bare JID on a MUC service, found by service
discovery; the room is joined first) gets a ``groupchat`` message, anything else a ``chat``
message; ``<thread>`` carries the thread id both ways.

Refusals. XMPP has no positive acknowledgement for a ``chat`` message: a refusal arrives as a
message error stanza bounced with the same id (``service-unavailable`` for an unknown user,
``item-not-found``, ``remote-server-not-found``...). :meth:`XmppChannel.send` therefore waits
``refusal_wait`` seconds (default 1) for such a bounce and raises :class:`ChannelError` if one
comes. The trade-off: every chat message costs that wait, and a bounce that arrives later (a
slow remote server) is only logged. A ``groupchat`` message has a positive answer: the room
reflects it back to the sender, so the send waits for the reflection or an error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from fangwire.channels import (
    ChannelAdapter,
    ChannelConfigError,
    ChannelContext,
    ChannelError,
    ConfigField,
    DeliveryReceipt,
    InboundMessage,
    LengthUnit,
    OutboundMessage,
)
from fangwire.hookspecs import hookimpl

if TYPE_CHECKING:
    import slixmpp

#: Bound on connecting, authenticating and binding a session.
CONNECT_TIMEOUT = 20.0
#: Bound on joining one room.
JOIN_TIMEOUT = 10.0
#: How long a groupchat send waits for the room's reflection.
REFLECTION_TIMEOUT = 10.0
#: Seconds between pings to the server while the session is idle, and the bound on the answer.
KEEPALIVE_INTERVAL = 60.0
KEEPALIVE_TIMEOUT = 20.0
#: Stanza error types after which the same message may succeed later.
RETRYABLE_ERROR_TYPES = frozenset({"wait"})
#: MUC status code of the self-presence when the join created the room.
ROOM_CREATED = 201

_SASL_PAYLOAD = re.compile(r"(<(auth|response|challenge|success)\b[^>]*>)[^<]*(</\2>)")


class _SaslScrubber(logging.Filter):
    """Hide SASL payloads (the base64 of PLAIN carries the password) in slixmpp's wire log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.msg, str) and record.msg.startswith(("SEND", "RECV")):
            text = record.getMessage()
            if "urn:ietf:params:xml:ns:xmpp-sasl" in text:
                record.msg = _SASL_PAYLOAD.sub(r"\1***\3", text)
                record.args = None
        return True


_scrubber = _SaslScrubber()


def _install_scrubber() -> None:
    wire = logging.getLogger("slixmpp.xmlstream.xmlstream")
    if _scrubber not in wire.filters:
        wire.addFilter(_scrubber)


@functools.cache
def _client_class() -> type[slixmpp.ClientXMPP]:
    import slixmpp

    class Client(slixmpp.ClientXMPP):
        """slixmpp's client, minus its own reconnecting."""

        def reconnect(self, wait: float = 2.0, reason: str = "Reconnecting") -> None:
            # slixmpp reconnects on a ping timeout or a see-other-host redirect; fangwire's
            # core does that instead (with back-off), so end this session.
            self.disconnect(wait, reason)

    return Client


class _Session:
    """One connected XMPP stream and what the adapter tracks about it."""

    def __init__(self, client: slixmpp.ClientXMPP, nick: str) -> None:
        self.client = client
        self.nick = nick
        #: Room bare JID → our nick in it.
        self.rooms: dict[str, str] = {}
        self.inbound: asyncio.Queue[InboundMessage | None] = asyncio.Queue()
        #: Message id → future resolved by the room's reflection (None) or a bounce (the error).
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.ended = False
        self.end_reason = "the stream ended"
        #: Domains known to be (True) or not to be (False) MUC services.
        self.muc_domains: dict[str, bool] = {}


def _mentions(body: str, nick: str) -> bool:
    return (
        bool(nick)
        and re.search(rf"(?<!\w){re.escape(nick)}(?!\w)", body, re.IGNORECASE) is not None
    )


def _error_reason(stanza: Any) -> tuple[str, bool]:
    error = stanza["error"]
    condition = error["condition"] or "undefined-condition"
    text = error["text"]
    reason = f"{condition}: {text}" if text else condition
    return reason, error["type"] in RETRYABLE_ERROR_TYPES


class XmppChannel(ChannelAdapter):
    """XMPP client account: DMs and MUC rooms."""

    name = "xmpp"
    display_name = "XMPP"
    description = "Jabber/XMPP: direct chats and multi-user chat rooms (XEP-0045)."
    category = "developer"
    icon = "XM"
    capabilities = frozenset({"send", "receive", "threads", "groups"})
    config_fields = (
        ConfigField("jid", required=True, help="the bot's account", placeholder="bot@example.org"),
        ConfigField(
            "password", required=True, secret=True, env="XMPP_PASSWORD", help="account password"
        ),
        ConfigField("server", help="host to connect to (default: the JID's domain, via DNS SRV)"),
        ConfigField("port", type="number", default=5222, help="client port of the server"),
        ConfigField(
            "rooms",
            type="list",
            default=[],
            help="MUC rooms to join",
            placeholder="room@conference.example.org",
        ),
        ConfigField("nick", help="nickname in rooms (default: the JID's local part)"),
        ConfigField(
            "use_tls",
            type="bool",
            default=True,
            help="require TLS (STARTTLS); false needs allow_plaintext = true",
        ),
        ConfigField(
            "ca_file",
            advanced=True,
            help="CA certificate (PEM) to trust for the server, e.g. a private CA's",
        ),
        ConfigField(
            "allow_plaintext",
            type="bool",
            default=False,
            advanced=True,
            help="allow an unencrypted connection and plain password login (test servers only)",
        ),
        ConfigField(
            "refusal_wait",
            type="number",
            default=1,
            advanced=True,
            help="seconds a chat message waits for the server to bounce it before counting as sent",
        ),
    )
    # Servers bound stanzas (prosody: 256 KiB by default); keep answers well inside that.
    max_message_length = 10000
    length_unit = LengthUnit.CHARACTERS
    requires_extra = "xmpp"
    default_target_field = "rooms"

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        self._session: _Session | None = None

    @classmethod
    def is_available(cls) -> bool:
        try:
            import slixmpp  # noqa: F401
        except ImportError:
            return False
        return True

    # -- settings -------------------------------------------------------------------------------

    def _jid(self) -> str:
        from slixmpp.jid import JID, InvalidJID

        raw = str(self.settings.get("jid") or "")
        try:
            jid = JID(raw)
        except InvalidJID as exc:
            raise ChannelConfigError("jid", f"not a valid JID: {exc}") from None
        if not jid.user or not jid.domain:
            raise ChannelConfigError("jid", "expected user@domain")
        return str(jid)

    def _check_settings(self) -> None:
        self._jid()
        ca_file = str(self.settings.get("ca_file") or "")
        if ca_file and not Path(ca_file).is_file():
            raise ChannelConfigError("ca_file", f"no such file: {ca_file}")
        if not self.settings.get("use_tls", True) and not self.settings.get("allow_plaintext"):
            raise ChannelConfigError(
                "use_tls", "an unencrypted connection needs allow_plaintext = true"
            )

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._check_settings()
        if self._session is None:
            self._session = await self._connect()

    async def receive(self) -> None:
        session = self._session
        if session is None or session.ended:
            session = self._session = await self._connect()
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keepalive, session)
            try:
                while (message := await session.inbound.get()) is not None:
                    await self.ctx.deliver(message)
            except Exception as exc:  # the core could not take a message: end the session
                failure = exc
            tg.cancel_scope.cancel()
        self._discard(session)
        if failure is not None:
            raise failure
        raise ChannelError(f"connection lost: {session.end_reason}", retryable=True)

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is None or session.ended:
            return
        client = session.client
        client.cancel_connection_attempt()
        try:
            with anyio.move_on_after(3):
                await client.disconnect(wait=2.0, reason="fangwire stopping")
        finally:
            client.abort()
            session.ended = True

    def _discard(self, session: _Session) -> None:
        session.client.cancel_connection_attempt()
        session.client.abort()
        for future in session.pending.values():
            if not future.done():
                future.set_result(ChannelError("the connection was lost", retryable=True))
        if self._session is session:
            self._session = None

    async def _connect(self) -> _Session:
        """Open one stream, log in and join the rooms; raise :class:`ChannelError` if refused."""
        self._check_settings()
        _install_scrubber()
        settings = self.settings
        jid = self._jid()
        secret = settings["password"]
        client = _client_class()(jid, secret.reveal())
        use_tls = bool(settings.get("use_tls", True))
        client.enable_starttls = use_tls
        client.enable_direct_tls = False
        client.enable_plaintext = not use_tls
        if settings.get("ca_file"):
            client.ca_certs = Path(str(settings["ca_file"]))
        if not use_tls:
            mechanisms = client.plugin["feature_mechanisms"]
            mechanisms.unencrypted_plain = True
            mechanisms.unencrypted_scram = True
        client.register_plugin("xep_0030")  # service discovery
        client.register_plugin("xep_0045")  # multi-user chat
        client.register_plugin("xep_0199", {"keepalive": False})  # ping, driven by us
        client.register_plugin("xep_0203")  # delayed delivery (history markers)
        nick = str(settings.get("nick") or "") or client.boundjid.user
        session = _Session(client, nick)
        outcome: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

        def settle(result: str | None) -> None:
            if not outcome.done():
                outcome.set_result(result)

        def on_disconnected(reason: Any) -> None:
            session.ended = True
            if reason:
                session.end_reason = str(reason)
            settle(f"disconnected before the session started ({session.end_reason})")
            session.inbound.put_nowait(None)

        def on_failed_auth(_: Any = None) -> None:
            if use_tls and not isinstance(client.socket, ssl.SSLObject | ssl.SSLSocket):
                settle("the server offered no TLS (set use_tls = false only for test servers)")
            else:
                settle("authentication failed")

        def on_invalid_certificate(error: Any) -> None:
            settle(f"the server's TLS certificate is not trusted: {error}")
            client.abort()

        def on_connection_failed(error: Any) -> None:
            client.cancel_connection_attempt()
            settle(f"could not connect: {error}")

        client.add_event_handler("session_start", lambda _: settle(None))
        client.add_event_handler("failed_all_auth", on_failed_auth)
        client.add_event_handler("ssl_invalid_chain", on_invalid_certificate)
        client.add_event_handler("connection_failed", on_connection_failed)
        client.add_event_handler("disconnected", on_disconnected)
        client.add_event_handler("stream_error", lambda e: setattr(session, "end_reason", str(e)))
        client.add_event_handler("message", lambda m: self._on_message(session, m))
        client.add_event_handler("message_error", lambda m: self._on_error(session, m))
        server = str(settings.get("server") or "")
        port = int(settings.get("port") or 5222)
        client.connect(server or None, port if server else None)
        try:
            try:
                with anyio.fail_after(CONNECT_TIMEOUT):
                    failure = await outcome
            except TimeoutError:
                failure = f"no session within {CONNECT_TIMEOUT:.0f} s"
            if failure is not None:
                raise ChannelError(failure, retryable=True)
            client.send_presence()
            for room in settings.get("rooms") or ():
                try:
                    await self._join(session, room)
                except ChannelError as exc:
                    self.ctx.log.warning("xmpp: could not join %s: %s", room, exc.reason)
        except BaseException:  # refused, timed out or cancelled (stop): leave nothing open
            client.cancel_connection_attempt()
            client.abort()
            session.ended = True
            raise
        self.ctx.log.info("xmpp: connected as %s", client.boundjid.full)
        return session

    async def _join(self, session: _Session, room: str) -> str:
        """Join ``room`` (a bare JID) with our nick, asking for no history; return the room."""
        from slixmpp.exceptions import PresenceError
        from slixmpp.jid import JID, InvalidJID

        try:
            bare = JID(room).bare
        except InvalidJID:
            raise ChannelError(f"not a room JID: {room!r}") from None
        if bare in session.rooms:
            return bare
        client = session.client
        muc = client.plugin["xep_0045"]
        refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_presence_error(presence: Any) -> None:
            # slixmpp's join only notices some refusals; catch the bounce of our join presence.
            if presence["from"].bare == bare and not refused.done():
                refused.set_result(presence)

        client.add_event_handler("presence_error", on_presence_error)
        join = asyncio.ensure_future(
            muc.join_muc_wait(JID(bare), session.nick, maxstanzas=0, timeout=JOIN_TIMEOUT)
        )
        try:
            with anyio.fail_after(JOIN_TIMEOUT):
                await asyncio.wait({join, refused}, return_when=asyncio.FIRST_COMPLETED)
            if refused.done():
                reason, retryable = _error_reason(refused.result())
                raise ChannelError(f"joining {bare}: {reason}", retryable=retryable)
            presence = join.result()[0]
        except PresenceError as exc:
            reason, retryable = _error_reason(exc.presence)
            raise ChannelError(f"joining {bare}: {reason}", retryable=retryable) from None
        except TimeoutError:
            raise ChannelError(f"joining {bare}: no answer", retryable=True) from None
        finally:
            client.del_event_handler("presence_error", on_presence_error)
            join.cancel()
        if ROOM_CREATED in presence["muc"]["status_codes"]:
            # We created the room: accept the default configuration so others can enter
            # (servers keep a new room locked until its owner does, XEP-0045 §10.1.2).
            from slixmpp.exceptions import IqError, IqTimeout
            from slixmpp.plugins.xep_0004 import Form

            try:
                await muc.set_room_config(JID(bare), Form(), timeout=JOIN_TIMEOUT)  # type: ignore[no-untyped-call]
            except (IqError, IqTimeout) as exc:
                self.ctx.log.warning("xmpp: could not unlock new room %s: %s", bare, exc)
        session.rooms[bare] = session.nick
        return bare

    async def _keepalive(self, session: _Session) -> None:
        """Ping the server while idle; a missing answer ends the session (and so receive)."""
        from slixmpp.exceptions import IqError, IqTimeout

        ping = session.client.plugin["xep_0199"]
        while not session.ended:
            await anyio.sleep(KEEPALIVE_INTERVAL)
            try:
                await ping.ping(timeout=KEEPALIVE_TIMEOUT)
            except IqError:
                pass  # an error answer still proves the stream is alive
            except IqTimeout:
                session.end_reason = f"no answer to a ping within {KEEPALIVE_TIMEOUT:.0f} s"
                session.client.abort()
                return
            except Exception as exc:  # the stream went away under the ping
                session.end_reason = f"ping failed: {type(exc).__name__}: {exc}"
                session.client.abort()
                return

    # -- inbound --------------------------------------------------------------------------------

    def _on_message(self, session: _Session, msg: Any) -> None:
        kind = msg["type"]
        if kind == "error":
            return  # handled by _on_error
        body = str(msg["body"] or "")
        sender = msg["from"]
        message_id = msg["id"] or None
        if kind == "groupchat":
            room = sender.bare
            pending = session.pending.get(message_id) if message_id else None
            if pending is not None and sender.resource == session.rooms.get(room):
                if not pending.done():
                    pending.set_result(None)
                return
            if sender.resource == session.rooms.get(room) or not sender.resource:
                return  # our own echo, or the room itself speaking
            if msg.get_plugin("delay", check=True) is not None:
                return  # history replay
            if not body:
                return
            nick = sender.resource
            real = session.client.plugin["xep_0045"].get_jid_property(room, nick, "jid")
            session.inbound.put_nowait(
                InboundMessage(
                    channel=self.ctx.name,
                    sender=str(real.bare) if real else str(sender),
                    sender_name=nick,
                    chat=room,
                    text=body,
                    is_group=True,
                    mentioned=_mentions(body, session.rooms.get(room, session.nick)),
                    thread_id=str(msg["thread"]) or None,
                    message_id=message_id,
                    raw={"type": kind, "from": str(sender), "to": str(msg["to"])},
                )
            )
            return
        if kind not in ("chat", "normal", "") or not body:
            return
        if sender.bare == session.client.boundjid.bare:
            return
        if msg.get_plugin("delay", check=True) is not None and kind != "chat":
            return
        # A private message from a room occupant answers to room/nick; anyone else to the bare JID.
        chat = str(sender) if sender.bare in session.rooms else sender.bare
        session.inbound.put_nowait(
            InboundMessage(
                channel=self.ctx.name,
                sender=chat,
                sender_name=sender.resource if sender.bare in session.rooms else sender.user,
                chat=chat,
                text=body,
                is_group=False,
                thread_id=str(msg["thread"]) or None,
                message_id=message_id,
                raw={"type": kind or "normal", "from": str(sender), "to": str(msg["to"])},
            )
        )

    def _on_error(self, session: _Session, msg: Any) -> None:
        reason, retryable = _error_reason(msg)
        future = session.pending.get(msg["id"]) if msg["id"] else None
        if future is None:
            self.ctx.log.info("xmpp: %s bounced a message: %s", msg["from"], reason)
            return
        if not future.done():
            future.set_result(ChannelError(f"{msg['from']} refused: {reason}", retryable=retryable))

    # -- outbound -------------------------------------------------------------------------------

    async def _is_room(self, session: _Session, bare: str, domain: str) -> bool:
        if bare in session.rooms or bare in (self.settings.get("rooms") or ()):
            return True
        known = session.muc_domains.get(domain)
        if known is None:
            from slixmpp.exceptions import IqError, IqTimeout
            from slixmpp.jid import JID

            disco = session.client.plugin["xep_0030"]
            try:
                info = await disco.get_info(jid=JID(domain), timeout=5)
                identities = info["disco_info"]["identities"]
                known = any(category == "conference" for category, *_ in identities)
            except (IqError, IqTimeout):
                known = False
            session.muc_domains[domain] = known
        return known

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        from slixmpp.jid import JID, InvalidJID

        session = self._session
        if session is None or session.ended:
            raise ChannelError("not connected to the XMPP server", retryable=True)
        try:
            to = JID(target.removeprefix("xmpp:"))
        except InvalidJID as exc:
            raise ChannelError(f"not a JID: {target!r} ({exc})") from None
        if not to.domain:
            raise ChannelError(f"not a JID: {target!r}")
        groupchat = not to.resource and await self._is_room(session, to.bare, to.domain)
        if groupchat:
            await self._join(session, to.bare)
        message_id = uuid.uuid4().hex
        stanza = session.client.make_message(
            mto=to.bare if groupchat else to,
            mbody=message.text,
            mtype="groupchat" if groupchat else "chat",
        )
        stanza["id"] = message_id
        if message.thread_id:
            stanza["thread"] = message.thread_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        session.pending[message_id] = future
        try:
            stanza.send()
            wait = REFLECTION_TIMEOUT if groupchat else float(self._refusal_wait())
            with anyio.move_on_after(wait):
                outcome = await future
                if isinstance(outcome, ChannelError):
                    raise outcome
                return self._receipt(target, message_id)
        finally:
            session.pending.pop(message_id, None)
        if groupchat:
            raise ChannelError(f"{to.bare} did not confirm the message within {wait:.0f} s")
        return self._receipt(target, message_id)

    def _refusal_wait(self) -> float:
        value = self.settings.get("refusal_wait")
        return float(1 if value is None else value)

    def _receipt(self, target: str, message_id: str) -> DeliveryReceipt:
        return DeliveryReceipt(channel=self.ctx.name, target=target, message_ids=(message_id,))


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(XmppChannel)
