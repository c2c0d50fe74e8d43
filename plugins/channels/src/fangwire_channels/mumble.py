"""The ``mumble`` channel: text messages over Mumble's TLS control connection.

One receive session is one control connection: TCP+TLS to the server (port 64738), our
``Version`` and ``Authenticate``, then the server's channel and user lists up to
``ServerSync`` (or a ``Reject``), then a move into the configured ``channel``. A ``Ping``
goes out every 15 s; a connection silent for 45 s is given up. When it ends,
:meth:`MumbleChannel.receive` raises and the core reconnects with back-off.

Inbound: a ``TextMessage`` addressed to the bot's session is a direct message (chat = the
sender's name); one addressed to the bot's channel is a group message (chat =
``channel:<name>``, ``mentioned`` when it names the bot). Mumble text is HTML; it is turned
into plain text on the way in and escaped on the way out.

Outbound targets: a user's name (direct message), ``channel:<name>``, or a bare channel
name. The server never confirms a text message; it refuses with ``PermissionDenied``
(no permission, text too long...), which carries no message id. Sends are therefore made one
at a time and each waits ``refusal_wait`` seconds (default 1) for a refusal; one arriving
later is only logged. Murmur drops text over its flood limit (``messageburst`` /
``messagelimit``, default 5 then 1 per second) *silently*, so sends are paced with the same
token bucket (``message_burst`` / ``message_limit``) to stay under it. Texts are split further
when their HTML form exceeds the length the server announces in ``ServerConfig``.

TLS: the server certificate is verified against the system CAs and the host name by default.
Most Mumble servers use a self-signed certificate: pin it with ``server_cert_sha256`` (the
SHA-256 fingerprint of the certificate), or, on a trusted network only, set
``verify_tls = false``.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import re
import ssl
import uuid
from collections.abc import Callable

import anyio
from anyio.streams.tls import TLSAttribute

from fangwire.channelkit.chunking import measure, split_message
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
from fangwire_channels import mumble_proto as proto
from fangwire_channels.mumble_proto import MessageType as T

#: Bound on connecting, TLS, authentication and the initial state.
CONNECT_TIMEOUT = 20.0
PING_INTERVAL = 15.0
#: A connection that has sent nothing for this long is dead (the server answers pings).
SILENCE_TIMEOUT = 45.0
#: The version we announce: the 1.3 protocol (legacy 32-bit version field).
CLIENT_VERSION = proto.version_number(1, 3, 4)
#: Murmur's default ``textmessagelength``; the server's ``ServerConfig`` may lower it.
DEFAULT_MESSAGE_LENGTH = 5000

_TAG = re.compile(r"<[^>]*>")
_BREAK = re.compile(r"<br\s*/?>|</p>|</div>", re.IGNORECASE)


def html_to_text(message: str) -> str:
    """Mumble's HTML message body as plain text."""
    return html.unescape(_TAG.sub("", _BREAK.sub("\n", message))).strip()


def text_to_html(text: str) -> str:
    return html.escape(text, quote=False).replace("\n", "<br/>")


def fit_parts(text: str, limit: int) -> list[str]:
    """``text`` in pieces whose HTML form fits ``limit`` UTF-16 units (escaping grows it)."""
    parts: list[str] = []
    for piece in split_message(text, limit, LengthUnit.UTF16_UNITS) or [text]:
        size = measure(text_to_html(piece), LengthUnit.UTF16_UNITS)
        if size <= limit or limit < 2:
            parts.append(piece)
        else:
            smaller = max(1, limit * limit // size - 1)
            parts.extend(fit_parts(piece, smaller) if smaller < limit else [piece])
    return parts


def _fingerprint(value: str) -> str:
    return value.replace(":", "").replace(" ", "").lower()


def _mentions(text: str, name: str) -> bool:
    return bool(name) and re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.I) is not None


class _Pacer:
    """A token bucket: ``burst`` messages at once, then ``rate`` per second."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.clock = clock
        self.at = clock()

    async def wait(self) -> None:
        if self.rate <= 0:
            return
        while True:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await anyio.sleep((1 - self.tokens) / self.rate)


class _Session:
    """One control connection and the server state it has told us."""

    def __init__(self, stream: proto.FrameStream, username: str) -> None:
        self.stream = stream
        self.username = username
        self.session_id: int | None = None
        self.users: dict[int, str] = {}
        self.user_channels: dict[int, int] = {}
        self.channels: dict[int, str] = {0: "Root"}
        self.message_length = DEFAULT_MESSAGE_LENGTH
        self.last_heard = 0.0
        self.ended = False
        self.end_reason = "the server closed the connection"
        #: Set while a send waits for a refusal.
        self.refusal: anyio.Event | None = None
        self.refusal_reason = ""
        self.moved = anyio.Event()

    @property
    def channel_id(self) -> int:
        if self.session_id is None:
            return 0
        return self.user_channels.get(self.session_id, 0)

    def channel_named(self, name: str) -> int | None:
        for cid, cname in self.channels.items():
            if cname == name:
                return cid
        for cid, cname in self.channels.items():
            if cname.casefold() == name.casefold():
                return cid
        return None

    def user_named(self, name: str) -> int | None:
        for sid, uname in self.users.items():
            if uname == name and sid != self.session_id:
                return sid
        return None


class MumbleChannel(ChannelAdapter):
    """A Mumble user that reads and writes text messages."""

    name = "mumble"
    display_name = "Mumble"
    description = "Text chat on a Mumble server, over its TLS control connection."
    category = "notifications"
    icon = "MU"
    capabilities = frozenset({"send", "receive", "groups"})
    config_fields = (
        ConfigField(
            "host", required=True, help="server host name", placeholder="mumble.example.org"
        ),
        ConfigField("username", required=True, help="the bot's user name on the server"),
        ConfigField(
            "password",
            secret=True,
            env="MUMBLE_PASSWORD",
            help="server password (or the registered user's password)",
        ),
        ConfigField("port", type="number", default=64738, help="server port"),
        ConfigField("channel", help="channel to join by name (default: the root channel)"),
        ConfigField(
            "verify_tls",
            type="bool",
            default=True,
            help="verify the server certificate against the system CAs",
        ),
        ConfigField(
            "server_cert_sha256",
            advanced=True,
            help="SHA-256 fingerprint of the server's (self-signed) certificate to trust",
        ),
        ConfigField(
            "refusal_wait",
            type="number",
            default=1,
            advanced=True,
            help="seconds a message waits for the server to refuse it before counting as sent",
        ),
        ConfigField(
            "message_limit",
            type="number",
            default=1,
            advanced=True,
            help="text messages per second after the burst (the server's messagelimit)",
        ),
        ConfigField(
            "message_burst",
            type="number",
            default=5,
            advanced=True,
            help="text messages sent at once before pacing (the server's messageburst)",
        ),
    )
    max_message_length = DEFAULT_MESSAGE_LENGTH
    length_unit = LengthUnit.UTF16_UNITS
    default_target_field = "channel"

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        self._session: _Session | None = None
        self._send_lock = anyio.Lock()
        self._pacer = _Pacer(
            float(ctx.settings.get("message_limit") or 0),
            int(ctx.settings.get("message_burst") or 1),
            ctx.clock,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._session is None:
            self._session = await self._connect()

    async def receive(self) -> None:
        session = self._session
        if session is None or session.ended:
            session = self._session = await self._connect()
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pinger, session)
            try:
                await self._read(session)
            except Exception as exc:  # the core could not take a message: end the session
                failure = exc
            tg.cancel_scope.cancel()
        await self._discard(session)
        if failure is not None:
            raise failure
        raise ChannelError(f"connection lost: {session.end_reason}", retryable=True)

    async def _read(self, session: _Session) -> None:
        """Handle frames until the connection ends (never raises for a dropped connection)."""
        try:
            while not session.ended:
                with anyio.move_on_after(SILENCE_TIMEOUT) as silence:
                    kind, message = await session.stream.receive()
                if silence.cancelled_caught:
                    session.end_reason = f"nothing heard for {SILENCE_TIMEOUT:.0f} s"
                    return
                await self._dispatch(session, kind, message)
        except (
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        ) as exc:
            if not session.ended:
                session.end_reason = f"connection closed ({type(exc).__name__})"
        except (OSError, ssl.SSLError, proto.ProtocolError) as exc:
            session.end_reason = str(exc) or type(exc).__name__

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await self._discard(session)

    async def _discard(self, session: _Session) -> None:
        session.ended = True
        if session.refusal is not None:
            session.refusal_reason = "the connection was lost"
            session.refusal.set()
        with contextlib.suppress(Exception), anyio.move_on_after(2):
            await session.stream.aclose()
        if self._session is session:
            self._session = None

    async def _pinger(self, session: _Session) -> None:
        try:
            while True:
                await anyio.sleep(PING_INTERVAL)
                timestamp = int(self.ctx.clock() * 1000)
                await session.stream.send(T.PING, [(proto.Ping.TIMESTAMP, timestamp)])
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            # The reader notices too (the stream is gone); record why.
            session.end_reason = f"ping failed: {exc or type(exc).__name__}"
            with contextlib.suppress(Exception):
                await session.stream.aclose()

    # -- connecting -----------------------------------------------------------------------------

    def _tls_context(self) -> tuple[ssl.SSLContext, str | None]:
        pin = _fingerprint(str(self.settings.get("server_cert_sha256") or ""))
        if pin and not re.fullmatch(r"[0-9a-f]{64}", pin):
            raise ChannelConfigError("server_cert_sha256", "expected 64 hex digits")
        if pin or not self.settings.get("verify_tls", True):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context()
        return context, pin or None

    async def _connect(self) -> _Session:
        settings = self.settings
        host = str(settings.get("host") or "")
        port = int(settings.get("port") or 64738)
        username = str(settings.get("username") or "")
        if not host:
            raise ChannelConfigError("host", "required")
        if not username:
            raise ChannelConfigError("username", "required")
        context, pin = self._tls_context()
        try:
            with anyio.fail_after(CONNECT_TIMEOUT):
                stream = await anyio.connect_tcp(
                    host,
                    port,
                    ssl_context=context,
                    tls_hostname=host,
                    tls_standard_compatible=False,
                )
        except TimeoutError:
            raise ChannelError(f"no connection to {host}:{port}", retryable=True) from None
        except (OSError, ssl.SSLError) as exc:
            raise ChannelError(
                f"could not connect to {host}:{port}: {exc}", retryable=True
            ) from None
        if pin is not None:
            der = stream.extra(TLSAttribute.peer_certificate_binary)  # noqa: S610 - anyio, not Django
            if der is None or hashlib.sha256(der).hexdigest() != pin:
                await stream.aclose()
                raise ChannelError("the server's certificate does not match server_cert_sha256")
        session = _Session(proto.FrameStream(stream), username)
        try:
            with anyio.fail_after(CONNECT_TIMEOUT):
                await self._handshake(session)
        except TimeoutError:
            await self._discard(session)
            raise ChannelError("the server did not finish the login", retryable=True) from None
        except ChannelError:
            await self._discard(session)
            raise
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._discard(session)
            raise
        except (
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.BrokenResourceError,
            OSError,
            proto.ProtocolError,
        ) as exc:
            await self._discard(session)
            reason = str(exc) or type(exc).__name__
            raise ChannelError(
                f"connection closed during login: {reason}", retryable=True
            ) from None
        self.ctx.log.info("mumble: connected to %s:%s as %s", host, port, username)
        return session

    async def _handshake(self, session: _Session) -> None:
        stream = session.stream
        await stream.send(
            T.VERSION,
            [
                (proto.Version.VERSION, CLIENT_VERSION),
                (proto.Version.RELEASE, "fangwire"),
                (proto.Version.OS, "fangwire"),
                (proto.Version.OS_VERSION, "1"),
            ],
        )
        login: list[tuple[int, proto.Value]] = [
            (proto.Authenticate.USERNAME, session.username),
            (proto.Authenticate.OPUS, True),
        ]
        password = self.settings.get("password")
        if password is not None:
            login.append((proto.Authenticate.PASSWORD, password.reveal()))
        await stream.send(T.AUTHENTICATE, login)
        while session.session_id is None:
            kind, message = await stream.receive()
            if kind == T.REJECT:
                kind_name = proto.REJECT_TYPES.get(message.integer(proto.Reject.TYPE) or 0, "?")
                reason = message.text(proto.Reject.REASON) or kind_name
                raise ChannelError(f"the server refused the login: {reason}")
            await self._dispatch(session, kind, message)
        wanted = str(self.settings.get("channel") or "")
        if not wanted:
            return
        target = session.channel_named(wanted)
        if target is None:
            raise ChannelError(f"no channel named {wanted!r} on the server")
        if session.channel_id == target:
            return
        await stream.send(
            T.USER_STATE,
            [(proto.UserState.SESSION, session.session_id), (proto.UserState.CHANNEL_ID, target)],
        )
        while session.channel_id != target:
            kind, message = await stream.receive()
            if kind == T.PERMISSION_DENIED:
                reason = self._denial(message)
                raise ChannelError(f"could not enter channel {wanted!r}: {reason}")
            await self._dispatch(session, kind, message)

    # -- inbound --------------------------------------------------------------------------------

    @staticmethod
    def _denial(message: proto.Message) -> str:
        kind = proto.DENY_TYPES.get(message.integer(proto.PermissionDenied.TYPE) or 0, "denied")
        reason = message.text(proto.PermissionDenied.REASON)
        return f"{kind}: {reason}" if reason else kind

    async def _dispatch(self, session: _Session, kind: int, message: proto.Message) -> None:
        session.last_heard = self.ctx.clock()
        if kind == T.SERVER_SYNC:
            session.session_id = message.integer(proto.ServerSync.SESSION)
        elif kind == T.CHANNEL_STATE:
            cid = message.integer(proto.ChannelState.CHANNEL_ID)
            if cid is not None and proto.ChannelState.NAME in message:
                session.channels[cid] = message.text(proto.ChannelState.NAME)
        elif kind == T.CHANNEL_REMOVE:
            session.channels.pop(message.integer(proto.ChannelRemove.CHANNEL_ID) or -1, None)
        elif kind == T.USER_STATE:
            sid = message.integer(proto.UserState.SESSION)
            if sid is None:
                return
            if proto.UserState.NAME in message:
                session.users[sid] = message.text(proto.UserState.NAME)
            channel = message.integer(proto.UserState.CHANNEL_ID)
            if channel is not None:
                session.user_channels[sid] = channel
            elif sid not in session.user_channels:
                session.user_channels[sid] = 0
        elif kind == T.USER_REMOVE:
            sid = message.integer(proto.UserRemove.SESSION)
            session.users.pop(sid or -1, None)
            session.user_channels.pop(sid or -1, None)
        elif kind == T.SERVER_CONFIG:
            length = message.integer(proto.ServerConfig.MESSAGE_LENGTH)
            if length:
                session.message_length = length
        elif kind == T.PERMISSION_DENIED:
            reason = self._denial(message)
            if session.refusal is not None and not session.refusal.is_set():
                session.refusal_reason = reason
                session.refusal.set()
            else:
                self.ctx.log.info("mumble: the server refused something: %s", reason)
        elif kind == T.TEXT_MESSAGE:
            await self._on_text(session, message)

    async def _on_text(self, session: _Session, message: proto.Message) -> None:
        actor = message.integer(proto.TextMessage.ACTOR)
        if actor is None or actor == session.session_id:
            return
        text = html_to_text(message.text(proto.TextMessage.MESSAGE))
        if not text:
            return
        sender = session.users.get(actor, f"session:{actor}")
        if session.session_id in message.integers(proto.TextMessage.SESSION):
            chat, is_group = sender, False
        elif session.channel_id in message.integers(proto.TextMessage.CHANNEL_ID):
            chat, is_group = f"channel:{session.channels.get(session.channel_id, '')}", True
        else:
            return
        await self.ctx.deliver(
            InboundMessage(
                channel=self.ctx.name,
                sender=sender,
                sender_name=sender,
                chat=chat,
                text=text,
                is_group=is_group,
                mentioned=is_group and _mentions(text, session.username),
                message_id=uuid.uuid4().hex,
                raw={"actor": actor, "html": message.text(proto.TextMessage.MESSAGE)},
            )
        )

    # -- outbound -------------------------------------------------------------------------------

    def _resolve(self, session: _Session, target: str) -> tuple[int, int]:
        """(field, id): the TextMessage field and the session or channel id to send to."""
        if target.startswith("channel:"):
            name = target.removeprefix("channel:")
            cid = session.channel_named(name) if name else session.channel_id
            if cid is None:
                raise ChannelError(f"no channel named {name!r} on the server")
            return proto.TextMessage.CHANNEL_ID, cid
        sid = session.user_named(target)
        if sid is not None:
            return proto.TextMessage.SESSION, sid
        cid = session.channel_named(target)
        if cid is not None:
            return proto.TextMessage.CHANNEL_ID, cid
        raise ChannelError(f"no user or channel named {target!r} is on the server")

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        session = self._session
        if session is None or session.ended or session.session_id is None:
            raise ChannelError("not connected to the Mumble server", retryable=True)
        field, ident = self._resolve(session, target)
        limit = min(session.message_length, DEFAULT_MESSAGE_LENGTH)
        configured = self.settings.get("refusal_wait")
        wait = float(1 if configured is None else configured)
        ids: list[str] = []
        async with self._send_lock:
            for part in fit_parts(message.text, limit):
                await self._pacer.wait()
                refusal = session.refusal = anyio.Event()
                session.refusal_reason = ""
                try:
                    await session.stream.send(
                        T.TEXT_MESSAGE,
                        [(field, [ident]), (proto.TextMessage.MESSAGE, text_to_html(part))],
                    )
                    with anyio.move_on_after(wait):
                        await refusal.wait()
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                    raise ChannelError(
                        f"connection lost while sending: {exc}", retryable=True
                    ) from None
                finally:
                    session.refusal = None
                if refusal.is_set() and session.ended:
                    raise ChannelError("connection lost while sending", retryable=True)
                if refusal.is_set():
                    done = f" (after {len(ids)} parts)" if ids else ""
                    raise ChannelError(
                        f"the server refused the message: {session.refusal_reason}{done}"
                    )
                ids.append(uuid.uuid4().hex)
        return DeliveryReceipt(channel=self.ctx.name, target=target, message_ids=tuple(ids))


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(MumbleChannel)
