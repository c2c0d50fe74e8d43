"""A small IRC client on ``anyio.connect_tcp``, shared by the ``irc`` and ``twitch`` channels.

What it does (RFC 1459/2812 plus the IRCv3 pieces both channels need):

- parses and writes lines, with IRCv3 message tags (escaped per the message-tags spec);
- registers (``PASS``, ``NICK``, ``USER``), falls back to another nick when the server says
  it is taken (433/432/436/437), negotiates capabilities with ``CAP REQ`` and authenticates
  with SASL PLAIN (``AUTHENTICATE``) when asked to;
- answers ``PING`` with ``PONG`` and sends its own ``PING`` when the server is silent, so a
  dead connection ends the session instead of hanging;
- joins the configured channels and hands every ``PRIVMSG`` to a callback;
- sends ``PRIVMSG`` with outbound pacing (at most ``pace_lines`` PRIVMSG lines in any
  ``pace_window`` seconds; our PING/PONG lines are not paced) and **confirmation**: after the
  message it sends ``PING <token>``. A server handles one client's commands in order, so a
  refusal of the message (401 ERR_NOSUCHNICK, 403, 404 ERR_CANNOTSENDTOCHAN, ... — any
  4xx/5xx numeric naming the target) arrives before the ``PONG`` answering that token. The
  send waits for whichever comes first, at most :attr:`ClientConfig.confirm_timeout` (10 s;
  no answer by then is reported as an error, not as a success). The cost is one round trip
  per send and one extra line the server counts against its flood limits; the gain is that a
  refusal is never reported as a success and a success is not guessed from a fixed delay (a
  fixed wait would be either slow on every send or too short on a lagging server). What it
  cannot see: refusals a server sends later or not at all (a ``+m`` channel on servers that
  drop silently, services that reject afterwards). A server that answers commands out of
  order (a network that forwards ``PRIVMSG`` to another process but answers ``PING`` at the
  edge) defeats the barrier; Twitch is such a network, which is why a Twitch connection that
  acknowledged ``twitch.tv/commands`` waits for Twitch's own answer instead: ``USERSTATE`` for
  the channel (accepted; matched by the ``client-nonce`` tag we sent) or ``NOTICE`` with a
  ``msg_*`` id (refused).
- never writes a line longer than 512 bytes including CRLF (tags excluded, per IRCv3) when
  :attr:`ClientConfig.max_line_bytes` is set; :meth:`IrcClient.text_budget` computes how much
  ``PRIVMSG`` text fits once the server puts ``:nick!user@host `` in front of it.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import logging
import secrets as _secrets
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import attrs
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream

from fangwire.channelkit.chunking import measure, split_message
from fangwire.channels import (
    ChannelAdapter,
    ChannelContext,
    ChannelError,
    InboundMessage,
    LengthUnit,
)
from fangwire.secrets.value import Secret

#: RFC 1459 line limit, CRLF included, message tags excluded.
MAX_LINE_BYTES = 512
#: Longest line read (IRCv3 allows 8191 bytes of tags before the 512-byte message).
MAX_READ_BYTES = 8191 + MAX_LINE_BYTES
#: What the server puts in front of a relayed message when it announces nothing else:
#: RFC 2812 hostnames are at most 63 bytes, usernames 10 (plus ``~`` when ident fails).
DEFAULT_HOSTLEN = 63
DEFAULT_USERLEN = 10
NICK_IN_USE = frozenset({"432", "433", "436", "437"})
SASL_FAILED = frozenset({"902", "904", "905", "906", "908"})
#: Numerics that say "try again later" rather than "no".
RETRYABLE_NUMERICS = frozenset({"263", "439"})  # RPL_TRYAGAIN, ERR_TARGETTOOFAST
#: Twitch NOTICE ids that mean "not now" rather than "never".
TWITCH_RETRYABLE = frozenset({"msg_ratelimit", "msg_slowmode"})
#: Refusals of a PRIVMSG that name no target: ERR_NORECIPIENT, ERR_NOTEXTTOSEND.
TARGETLESS_REFUSALS = frozenset({"411", "412"})
JOIN_FAILURES = frozenset({"403", "405", "471", "473", "474", "475", "477", "489"})

_TAG_UNESCAPE = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_TAG_ESCAPE = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})
_RFC1459_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~", "abcdefghijklmnopqrstuvwxyz{}|^")


#: What a write or read on a dropped connection raises.
_CONNECTION_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


class ProtocolError(ValueError):
    """A line that is not valid IRC (or that may not be sent)."""


def irc_lower(text: str) -> str:
    """Case-fold a nick or channel name the RFC 1459 way (``[]\\~`` are upper case of ``{}|^``)."""
    return text.translate(_RFC1459_LOWER)


def unescape_tag(value: str) -> str:
    """Decode an IRCv3 tag value (``\\:`` → ``;``, ``\\s`` → space ...; a lone ``\\`` drops)."""
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append(_TAG_UNESCAPE.get(nxt, nxt))
        else:
            out.append(char)
    return "".join(out)


def escape_tag(value: str) -> str:
    return value.translate(_TAG_ESCAPE)


@attrs.frozen
class Message:
    """One IRC line: optional tags and source, a command and its parameters."""

    command: str
    params: tuple[str, ...] = ()
    source: str | None = None
    tags: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def nick(self) -> str:
        """The nick part of the source (``nick!user@host``), or the server name."""
        return (self.source or "").split("!", 1)[0]

    def param(self, index: int) -> str:
        return self.params[index] if -len(self.params) <= index < len(self.params) else ""


def parse(line: str) -> Message:
    """Parse one line (without CRLF). Raise :class:`ProtocolError` if it has no command."""
    rest = line
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        raw_tags, _, rest = rest[1:].partition(" ")
        for item in raw_tags.split(";"):
            if item:
                key, _, value = item.partition("=")
                tags[key] = unescape_tag(value)
        rest = rest.lstrip(" ")
    source = None
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    trailing = None
    if " :" in rest:
        rest, _, trailing = rest.partition(" :")
    elif rest.startswith(":"):
        rest, trailing = "", rest[1:]
    words = rest.split()
    if not words:
        raise ProtocolError(f"no command in {line[:80]!r}")
    params = words[1:]
    if trailing is not None:
        params.append(trailing)
    return Message(command=words[0].upper(), params=tuple(params), source=source, tags=tags)


def serialize(
    command: str, *params: str, tags: Mapping[str, str] | None = None, trailing: bool = False
) -> str:
    """Build a line (without CRLF). Only the last parameter may hold spaces or start with ``:``.

    ``trailing`` writes the last parameter with ``:`` even when it needs none (the usual form
    for message text and capability lists).
    Raise :class:`ProtocolError` for CR, LF or NUL anywhere: they would end the line early
    and let text smuggle in a second command.
    """
    parts: list[str] = []
    if tags:
        parts.append("@" + ";".join(f"{k}={escape_tag(v)}" if v else k for k, v in tags.items()))
    parts.append(command)
    for index, param in enumerate(params):
        if any(c in param for c in "\r\n\0"):
            raise ProtocolError("a parameter holds CR, LF or NUL")
        last = index == len(params) - 1
        if not last and (not param or " " in param or param.startswith(":")):
            raise ProtocolError(f"middle parameter {param!r} is empty, has a space or a ':'")
        needs_colon = not param or " " in param or param[0] == ":"
        parts.append(":" + param if last and (needs_colon or trailing) else param)
    return " ".join(parts)


def message_bytes(line: str) -> int:
    """Bytes of ``line`` that count against the 512-byte limit (tags excluded), CRLF included."""
    if line.startswith("@"):
        line = line.partition(" ")[2]
    return len(line.encode("utf-8")) + 2


class Pacer:
    """At most ``lines`` outbound lines in any ``window`` seconds (a sliding window).

    :meth:`wait` sleeps until the next line may go. If that would take longer than
    ``max_wait``, it raises a retryable :class:`ChannelError` with ``retry_after`` instead, so
    a caller with a deadline can come back later rather than time out mid-wait.
    """

    def __init__(
        self,
        lines: int,
        window: float,
        clock: Callable[[], float],
        *,
        max_wait: float = 20.0,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.lines = lines
        self.window = window
        self.max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self._sent: collections.deque[float] = collections.deque()

    def delay(self) -> float:
        now = self._clock()
        while self._sent and now - self._sent[0] >= self.window:
            self._sent.popleft()
        if len(self._sent) < self.lines:
            return 0.0
        return self._sent[0] + self.window - now

    async def wait(self) -> None:
        delay = self.delay()
        if delay > self.max_wait:
            raise ChannelError(
                f"outbound pacing: next line allowed in {delay:.1f} s",
                retryable=True,
                retry_after=delay,
            )
        while delay > 0:
            await self._sleep(delay)
            delay = self.delay()
        self._sent.append(self._clock())


@attrs.frozen
class ClientConfig:
    """How to reach and log in to one IRC server. Secrets stay wrapped until written."""

    host: str
    port: int
    nick: str
    channels: tuple[str, ...] = ()
    tls: bool = False
    tls_ca_file: str | None = None
    tls_verify: bool = True
    username: str = ""
    realname: str = "fangwire"
    password: Secret | None = attrs.field(default=None, repr=False)
    sasl_username: str | None = None
    sasl_password: Secret | None = attrs.field(default=None, repr=False)
    caps: tuple[str, ...] = ()
    #: Enforce the 512-byte line limit (Twitch lines are not bound by it).
    max_line_bytes: int | None = MAX_LINE_BYTES
    #: Outbound pacing: ``pace_lines`` PRIVMSGs in any ``pace_window`` seconds.
    pace_lines: int = 5
    pace_window: float = 4.0
    connect_timeout: float = 15.0
    register_timeout: float = 25.0
    confirm_timeout: float = 10.0
    #: Seconds of silence before we PING; the same again without an answer ends the session.
    idle_timeout: float = 120.0
    #: Wait for Twitch's USERSTATE/NOTICE instead of the PONG when twitch.tv/commands is on.
    twitch: bool = False


OnMessage = Callable[["IrcClient", Message], Awaitable[None]]


@attrs.define(eq=False)
class _Pending:
    """A sent PRIVMSG waiting for the server's verdict."""

    target: str  # case-folded
    token: str
    wait_userstate: bool
    done: anyio.Event = attrs.field(factory=anyio.Event)
    ponged: bool = False
    error: ChannelError | None = None
    message_id: str | None = None

    def finish(self, error: ChannelError | None = None) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


def ssl_context(config: ClientConfig) -> ssl.SSLContext:
    """Verify against the system CAs, or ``tls_ca_file``; ``tls_verify=False`` checks nothing."""
    context = ssl.create_default_context(cafile=config.tls_ca_file or None)
    if not config.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class IrcClient:
    """One connection to an IRC server: :meth:`connect`, then :meth:`run` until it ends."""

    def __init__(
        self,
        config: ClientConfig,
        log: logging.Logger,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.log = log
        self.nick = config.nick
        self.user_host: str | None = None  # "user@host" as the server shows us to others
        self.isupport: dict[str, str] = {}
        self.caps: set[str] = set()
        self.joined: set[str] = set()
        self.connected = False
        self._stream: ByteStream | None = None
        self._reader: BufferedByteReceiveStream | None = None
        self._write_lock = anyio.Lock()
        self._send_lock = anyio.Lock()
        self._pending: list[_Pending] = []
        #: Tokens of our PINGs not yet answered, oldest first (keep-alive and confirmations).
        self._pings: collections.deque[str] = collections.deque(maxlen=256)
        #: Twitch channels joined whose join-time USERSTATE has not arrived yet.
        self._join_state_due: set[str] = set()
        self._pacer = Pacer(config.pace_lines, config.pace_window, clock)
        self._nick_attempt = 0

    # -- wire ----------------------------------------------------------------------------------

    async def _write(self, line: str) -> None:
        if self._stream is None:
            raise ChannelError("not connected to the IRC server", retryable=True)
        limit = self.config.max_line_bytes
        if limit is not None and message_bytes(line) > limit:
            raise ProtocolError(f"line of {message_bytes(line)} bytes exceeds {limit}")
        await self._stream.send(line.encode("utf-8") + b"\r\n")

    async def _ping(self, token: str) -> None:
        async with self._write_lock:
            self._pings.append(token)
            await self._write(serialize("PING", token))

    async def send_line(self, command: str, *params: str, trailing: bool = False) -> None:
        async with self._write_lock:
            await self._write(serialize(command, *params, trailing=trailing))

    async def _read(self) -> Message | None:
        """The next parsable line, or None at end of stream."""
        reader = self._reader
        if reader is None:
            return None
        while True:
            try:
                raw = await reader.receive_until(b"\n", MAX_READ_BYTES)
            except (
                anyio.IncompleteRead,
                anyio.EndOfStream,
                anyio.ClosedResourceError,
                anyio.BrokenResourceError,
                OSError,
            ):
                return None
            except anyio.DelimiterNotFound as exc:
                raise ChannelError("the server sent an over-long line", retryable=True) from exc
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line.strip():
                continue
            try:
                return parse(line)
            except ProtocolError:
                self.log.debug("ignored a malformed line from the server")

    # -- connect and register ------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection and register; return after 001 with JOINs sent.

        Raise :class:`ChannelError`: retryable for network trouble, not retryable for a refused
        login (bad password, SASL failure, no free nick).
        """
        config = self.config
        try:
            with anyio.fail_after(config.connect_timeout):
                if config.tls:
                    self._stream = await anyio.connect_tcp(
                        config.host,
                        config.port,
                        tls=True,
                        ssl_context=ssl_context(config),
                        tls_hostname=config.host,
                        tls_standard_compatible=False,
                    )
                else:
                    self._stream = await anyio.connect_tcp(config.host, config.port)
        except TimeoutError as exc:
            raise ChannelError(
                f"could not connect to {config.host}:{config.port} within "
                f"{config.connect_timeout:.0f} s",
                retryable=True,
            ) from exc
        except ssl.SSLError as exc:
            raise ChannelError(f"TLS handshake with {config.host} failed: {exc}") from exc
        except OSError as exc:
            raise ChannelError(
                f"could not connect to {config.host}:{config.port}: {exc.strerror or exc}",
                retryable=True,
            ) from exc
        self._reader = BufferedByteReceiveStream(self._stream)
        try:
            with anyio.fail_after(config.register_timeout):
                await self._register()
        except TimeoutError as exc:
            await self.close()
            raise ChannelError(
                f"registration with {config.host} took longer than {config.register_timeout:.0f} s",
                retryable=True,
            ) from exc
        except _CONNECTION_ERRORS as exc:
            await self.close()
            raise ChannelError("the connection failed during login", retryable=True) from exc
        except BaseException:
            await self.close()
            raise
        self.connected = True
        try:
            for entry in config.channels:
                channel, _, key = entry.strip().partition(" ")
                if config.twitch and "twitch.tv/commands" in self.caps:
                    self._join_state_due.add(irc_lower(channel))
                await self.send_line("JOIN", *([channel, key] if key else [channel]))
        except _CONNECTION_ERRORS as exc:
            await self.close()
            raise ChannelError("the connection failed while joining", retryable=True) from exc

    def _wanted_caps(self) -> list[str]:
        caps = list(self.config.caps)
        if self.config.sasl_username:
            caps.append("sasl")
        return caps

    async def _register(self) -> None:
        config = self.config
        caps = self._wanted_caps()
        if caps:
            await self.send_line("CAP", "REQ", " ".join(caps), trailing=True)
        if config.password is not None and not config.sasl_username:
            await self.send_line("PASS", config.password.reveal())
        await self.send_line("NICK", self.nick)
        # Twitch ignores USER; ordinary servers need it, and a test server stands in for Twitch.
        await self.send_line(
            "USER", config.username or config.nick, "0", "*", config.realname, trailing=True
        )
        cap_open = bool(caps)
        while True:
            msg = await self._read()
            if msg is None:
                raise ChannelError("the server closed the connection during login", retryable=True)
            command = msg.command
            if command == "PING":
                await self.send_line("PONG", *msg.params[-1:])
            elif command == "CAP" and msg.param(1) in ("ACK", "NAK"):
                listed = msg.param(-1).split()
                if msg.param(1) == "ACK":
                    self.caps.update(c.lstrip("-=~") for c in listed)
                if config.sasl_username and "sasl" in listed:
                    if msg.param(1) == "NAK":
                        raise ChannelError("the server does not offer SASL")
                    await self.send_line("AUTHENTICATE", "PLAIN")
                elif cap_open:
                    cap_open = False
                    await self.send_line("CAP", "END")
            elif command == "AUTHENTICATE" and msg.param(0) == "+":
                await self._send_sasl_plain()
            elif command == "903":
                cap_open = False
                await self.send_line("CAP", "END")
            elif command in SASL_FAILED:
                raise ChannelError(f"SASL authentication failed: {msg.param(-1)}")
            elif command == "421" and msg.param(1) == "CAP":
                if config.sasl_username:
                    raise ChannelError("the server does not support capabilities, so no SASL")
                cap_open = False
            elif command in NICK_IN_USE:
                await self._next_nick(msg)
            elif command == "001":
                self._welcome(msg)
                return
            elif command in ("464", "465", "ERROR"):
                raise ChannelError(f"login refused: {msg.param(-1) or command}")
            elif command == "NOTICE" and config.twitch and _is_login_failure(msg.param(-1)):
                raise ChannelError(f"login refused: {msg.param(-1)}")

    async def _send_sasl_plain(self) -> None:
        username = self.config.sasl_username or ""
        password = self.config.sasl_password.reveal() if self.config.sasl_password else ""
        payload = base64.b64encode(f"{username}\0{username}\0{password}".encode()).decode()
        # Sent in 400-byte pieces; a payload that is an exact multiple ends with "+".
        for start in range(0, len(payload), 400):
            await self.send_line("AUTHENTICATE", payload[start : start + 400])
        if len(payload) % 400 == 0:
            await self.send_line("AUTHENTICATE", "+")

    async def _next_nick(self, msg: Message) -> None:
        self._nick_attempt += 1
        if self._nick_attempt > 5:
            raise ChannelError(f"no usable nick: the server said {msg.param(-1)!r}")
        base = self.config.nick
        if self._nick_attempt <= 2:
            self.nick = base + "_" * self._nick_attempt
        else:
            self.nick = base[:6] + str(100 + _secrets.randbelow(900))
        self.log.info("nick taken or refused; trying %s", self.nick)
        await self.send_line("NICK", self.nick)

    def _welcome(self, msg: Message) -> None:
        self.nick = msg.param(0) or self.nick
        last = msg.param(-1).split()[-1] if msg.param(-1).split() else ""
        if "!" in last and "@" in last:
            self.user_host = last.split("!", 1)[1]

    # -- sizes ---------------------------------------------------------------------------------

    def prefix_bytes(self) -> int:
        """Bytes of ``:nick!user@host `` the server puts before a message we send."""
        if self.user_host is not None:
            user_host = len(self.user_host.encode())
        else:
            user = _int(self.isupport.get("USERLEN"), DEFAULT_USERLEN) + 1
            user_host = user + 1 + _int(self.isupport.get("HOSTLEN"), DEFAULT_HOSTLEN)
        return 1 + len(self.nick.encode()) + 1 + user_host + 1

    def text_budget(self, target: str) -> int:
        """Bytes of text that fit in one relayed ``PRIVMSG target :text`` line."""
        limit = self.config.max_line_bytes or MAX_LINE_BYTES
        command = len(f"PRIVMSG {target} :".encode())
        return limit - 2 - self.prefix_bytes() - command

    # -- session -------------------------------------------------------------------------------

    async def run(self, on_message: OnMessage) -> None:
        """Read until the connection ends; hand each PRIVMSG to ``on_message``.

        Returns when the server closes the connection or asks us to reconnect; raises
        :class:`ChannelError` (retryable) when it goes silent or sends ERROR.
        """
        idle = self.config.idle_timeout
        pinged = False
        try:
            while True:
                with anyio.move_on_after(idle) as scope:
                    msg = await self._read()
                if scope.cancelled_caught:
                    if pinged:
                        raise ChannelError(
                            f"no answer from the server for {2 * idle:.0f} s", retryable=True
                        )
                    pinged = True
                    await self._ping(f"keepalive-{_secrets.token_hex(4)}")
                    continue
                pinged = False
                if msg is None:
                    self.log.info("the server closed the connection")
                    return
                if msg.command == "ERROR":
                    raise ChannelError(
                        f"the server closed the link: {msg.param(-1)}", retryable=True
                    )
                if msg.command == "RECONNECT":
                    self.log.info("the server asked us to reconnect")
                    return
                await self._dispatch(msg, on_message)
        except _CONNECTION_ERRORS as exc:
            raise ChannelError("the connection to the server failed", retryable=True) from exc
        finally:
            self.connected = False
            self._fail_pending(
                ChannelError("the connection closed before the server confirmed the message")
            )

    async def _dispatch(self, msg: Message, on_message: OnMessage) -> None:
        command = msg.command
        if command == "PING":
            await self.send_line("PONG", *msg.params[-1:])
        elif command == "PONG":
            self._on_pong(msg.param(-1))
        elif command == "PRIVMSG":
            if irc_lower(msg.nick) != irc_lower(self.nick):
                await on_message(self, msg)
        elif command == "005":
            for token in msg.params[1:-1]:
                key, _, value = token.partition("=")
                self.isupport[key.upper()] = value
        elif command == "NICK" and irc_lower(msg.nick) == irc_lower(self.nick):
            self.nick = msg.param(0)
        elif command == "JOIN" and irc_lower(msg.nick) == irc_lower(self.nick):
            self.joined.add(irc_lower(msg.param(0)))
            if msg.source and "!" in msg.source:
                self.user_host = msg.source.split("!", 1)[1]
        elif command in ("PART", "KICK") and self._is_me_leaving(msg):
            self.joined.discard(irc_lower(msg.param(0)))
            self.log.warning("left %s (%s)", msg.param(0), command)
        elif command == "CHGHOST" and irc_lower(msg.nick) == irc_lower(self.nick):
            self.user_host = f"{msg.param(0)}@{msg.param(1)}"
        elif command == "396" and len(msg.params) >= 2:  # RPL_HOSTHIDDEN / RPL_VISIBLEHOST
            host = msg.param(1)
            user = (self.user_host or "").split("@", 1)[0] if self.user_host else None
            self.user_host = f"{user}@{host}" if user else None
        elif command == "USERSTATE":
            self._on_userstate(msg)
        elif command == "NOTICE" and msg.tags.get("msg-id", "").startswith("msg_"):
            self._on_twitch_refusal(msg)
        elif command.isdigit() and (command[0] in "45" or command in RETRYABLE_NUMERICS):
            self._on_error_numeric(msg)

    def _is_me_leaving(self, msg: Message) -> bool:
        if msg.command == "KICK":
            return irc_lower(msg.param(1)) == irc_lower(self.nick)
        return irc_lower(msg.nick) == irc_lower(self.nick)

    # -- confirmation of sends -----------------------------------------------------------------

    def _oldest_unconfirmed(self, target: str) -> _Pending | None:
        key = irc_lower(target)
        for pending in self._pending:
            if pending.target == key and not pending.done.is_set() and not pending.ponged:
                return pending
        return None

    def _on_pong(self, token: str) -> None:
        if token in self._pings:
            self._pings.remove(token)
        elif self._pings:  # a server that does not echo the token answers in order
            token = self._pings.popleft()
        else:
            return
        match = next((p for p in self._pending if p.token == token), None)
        if match is None:
            return
        match.ponged = True
        if not match.wait_userstate:
            match.finish()

    def _on_userstate(self, msg: Message) -> None:
        """Twitch accepted a PRIVMSG (or reports our state after a JOIN).

        The ``client-nonce`` we sent comes back and picks the send exactly; without it the
        oldest send to that channel is taken, except for the first USERSTATE after a JOIN.
        """
        key = irc_lower(msg.param(0))
        nonce = msg.tags.get("client-nonce")
        waiting = [p for p in self._pending if p.wait_userstate and not p.done.is_set()]
        match = next((p for p in waiting if nonce and p.token == nonce), None)
        if match is None:
            if key in self._join_state_due:
                self._join_state_due.discard(key)
                return
            match = next((p for p in waiting if p.target == key), None)
        if match is not None:
            match.message_id = msg.tags.get("id") or None
            match.finish()

    def _on_twitch_refusal(self, msg: Message) -> None:
        msg_id = msg.tags["msg-id"]
        key = irc_lower(msg.param(0))
        for pending in self._pending:
            if pending.target == key and not pending.done.is_set():
                pending.finish(
                    ChannelError(
                        f"Twitch refused the message ({msg_id}): {msg.param(-1)}",
                        retryable=msg_id in TWITCH_RETRYABLE,
                    )
                )
                return
        self.log.warning("Twitch notice for %s: %s", msg.param(0), msg_id)

    def _on_error_numeric(self, msg: Message) -> None:
        if msg.command in JOIN_FAILURES and irc_lower(msg.param(1)) not in {
            p.target for p in self._pending
        }:
            self.log.warning("server refused %s: %s %s", msg.param(1), msg.command, msg.param(-1))
            return
        if msg.command in TARGETLESS_REFUSALS or msg.param(1).upper() == "PRIVMSG":
            # No target named (411/412, or "263 nick PRIVMSG :try again"): PRIVMSG is the
            # only command we send that can draw it, so it is the oldest unconfirmed send's.
            pending = next((p for p in self._pending if not p.done.is_set() and not p.ponged), None)
        else:
            pending = self._oldest_unconfirmed(msg.param(1)) if len(msg.params) >= 2 else None
        if pending is None:
            self.log.debug("server error %s %s", msg.command, msg.param(-1))
            return
        pending.finish(
            ChannelError(
                f"the server refused the message to {pending.target}: "
                f"{msg.command} {msg.param(-1)}".rstrip(),
                retryable=msg.command in RETRYABLE_NUMERICS,
            )
        )

    def _fail_pending(self, error: ChannelError) -> None:
        for pending in self._pending:
            pending.finish(error)

    async def privmsg(
        self, target: str, lines: Sequence[str], *, tags: Mapping[str, str] | None = None
    ) -> list[str]:
        """Send ``lines`` to ``target`` as one PRIVMSG each; return their ids once confirmed.

        Raise :class:`ChannelError` when the server refuses them, does not answer in time, or
        the connection is down (retryable only when nothing was written).
        """
        if not self.connected or self._stream is None:
            raise ChannelError("not connected to the IRC server", retryable=True)
        if not lines:
            raise ChannelError("nothing to send")
        wait_userstate = self.config.twitch and "twitch.tv/commands" in self.caps
        pending = _Pending(irc_lower(target), _secrets.token_hex(8), wait_userstate)
        if wait_userstate:  # Twitch echoes it on the USERSTATE that accepts the message
            tags = {**(tags or {}), "client-nonce": pending.token}
        try:
            outgoing = [
                serialize("PRIVMSG", target, text, tags=tags, trailing=True) for text in lines
            ]
        except ProtocolError as exc:
            raise ChannelError(f"cannot send to {target!r}: {exc}") from exc
        limit = self.config.max_line_bytes
        if limit is not None and any(message_bytes(line) > limit for line in outgoing):
            raise ChannelError(f"a line to {target!r} would exceed {limit} bytes")
        # One message at a time, so its lines and its PING stay together and in order; the
        # write lock is taken per line, so PONGs to the server are never held up by pacing.
        async with self._send_lock:
            self._pending.append(pending)
            try:
                await self._write_paced(outgoing)
                try:
                    async with self._write_lock:
                        self._pings.append(pending.token)
                        await self._write(serialize("PING", pending.token))
                except _CONNECTION_ERRORS as exc:
                    if pending.token in self._pings:
                        self._pings.remove(pending.token)
                    raise ChannelError("the connection failed while sending") from exc
            except BaseException:
                self._discard(pending)
                raise
        try:
            with anyio.fail_after(self.config.confirm_timeout):
                await pending.done.wait()
        except TimeoutError as exc:
            raise ChannelError(
                f"the server did not confirm the message within {self.config.confirm_timeout:.0f} s"
            ) from exc
        finally:
            self._discard(pending)
        if pending.error is not None:
            raise pending.error
        ids = [uuid.uuid4().hex for _ in lines]
        if pending.message_id:
            ids[-1] = pending.message_id
        return ids

    async def _write_paced(self, lines: Sequence[str]) -> None:
        for index, line in enumerate(lines):
            try:
                await self._pacer.wait()
            except ChannelError:
                if index == 0:
                    raise
                raise ChannelError("outbound pacing stopped a multi-line message") from None
            try:
                async with self._write_lock:
                    await self._write(line)
            except _CONNECTION_ERRORS as exc:
                raise ChannelError(
                    "the connection failed while sending", retryable=index == 0
                ) from exc

    def _discard(self, pending: _Pending) -> None:
        if pending in self._pending:
            self._pending.remove(pending)

    async def close(self, reason: str = "") -> None:
        """Say QUIT (briefly) and close the socket; safe to call more than once."""
        self.connected = False
        stream, self._stream = self._stream, None
        self._fail_pending(ChannelError("the connection was closed"))
        if stream is None:
            return
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(1.0):
                with contextlib.suppress(Exception):  # best effort on the way out
                    await stream.send(f"QUIT :{reason or 'bye'}\r\n".encode())
            with anyio.move_on_after(1.0):
                await stream.aclose()


def _is_login_failure(text: str) -> bool:
    lowered = text.lower()
    return any(
        phrase in lowered
        for phrase in ("authentication failed", "improperly formatted auth", "login unsuccessful")
    )


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


def split_text(text: str, budget: int, unit: LengthUnit = LengthUnit.BYTES) -> list[str]:
    """Cut ``text`` into IRC lines of at most ``budget`` units (one per text line).

    Line breaks become separate messages (IRC has none); empty lines are dropped; a piece that
    is still too long is split again, on words where possible and as a last resort between
    code points, so no line ever exceeds the budget.
    """
    if budget <= 0:
        raise ChannelError("the target name leaves no room for text in a 512-byte line")
    out: list[str] = []
    for line in text.replace("\0", "").splitlines():
        if not line.strip():
            continue
        for piece in split_message(line, budget, unit):
            out.extend(_hard_cut(piece, budget, unit))
    return out


def _hard_cut(piece: str, budget: int, unit: LengthUnit) -> Iterable[str]:
    if measure(piece, unit) <= budget:
        yield piece
        return
    current = ""
    for char in piece:
        if measure(current + char, unit) > budget:
            if current:
                yield current
            current = char
        else:
            current += char
    if current:
        yield current


def mention_strip(text: str, nick: str) -> tuple[bool, str]:
    """Whether ``text`` addresses ``nick``, and the text without a leading address.

    Addressed means ``nick:`` / ``nick,`` / ``@nick`` at the start (case-insensitive, RFC 1459
    mapping), or the nick (optionally with ``@``) as a word anywhere. Only a leading address
    is removed.
    """
    folded_nick = irc_lower(nick)
    stripped = text.lstrip()
    at = stripped.startswith("@")
    head = stripped[1:] if at else stripped
    if folded_nick and irc_lower(head[: len(nick)]) == folded_nick:
        rest = head[len(nick) :]
        if rest[:1] in (":", ","):
            return True, rest[1:].strip()
        if not rest or (at and rest[:1].isspace()):
            return True, rest.strip()
    words = {irc_lower(w.strip(".,:;!?()[]<>\"'").lstrip("@")) for w in text.split()}
    return folded_nick in words, text


def raw_fields(msg: Message) -> dict[str, Any]:
    """What an inbound message keeps of its line: source, parameters and tags."""
    return {"source": msg.source, "params": list(msg.params), "tags": dict(msg.tags)}


class IrcAdapterBase(ChannelAdapter):
    """What the ``irc`` and ``twitch`` channels share: one :class:`IrcClient` per session.

    ``start`` connects and registers (so a bad password fails the start); ``receive`` runs
    that connection until it ends, and opens a fresh one on the next session; ``send`` uses
    whichever connection is up and is retryable while none is.
    """

    capabilities = frozenset({"send", "receive", "groups"})
    length_unit = LengthUnit.BYTES
    default_target_field = "channels"

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        self._client: IrcClient | None = None

    def client_config(self) -> ClientConfig:
        raise NotImplementedError

    def to_inbound(self, client: IrcClient, msg: Message) -> InboundMessage | None:
        raise NotImplementedError

    @property
    def client(self) -> IrcClient | None:
        """The current connection (None between sessions)."""
        return self._client

    async def _connect(self) -> IrcClient:
        client = IrcClient(self.client_config(), self.ctx.log, self.ctx.clock)
        await client.connect()
        self._client = client
        self.ctx.log.info("connected to %s as %s", client.config.host, client.nick)
        return client

    async def start(self) -> None:
        await self._connect()

    async def receive(self) -> None:
        client = self._client
        if client is None or not client.connected:
            client = await self._connect()
        try:
            await client.run(self._on_message)
        except anyio.get_cancelled_exc_class():
            await client.close("fangwire stopping")
            raise
        finally:
            await client.close("reconnecting")
            if self._client is client:
                self._client = None

    async def _on_message(self, client: IrcClient, msg: Message) -> None:
        text = msg.param(-1)
        if len(msg.params) < 2 or text.startswith("\x01"):  # CTCP (VERSION, ACTION ...)
            return
        inbound = self.to_inbound(client, msg)
        if inbound is not None:
            await self.ctx.deliver(inbound)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close("fangwire stopping")

    def _live_client(self) -> IrcClient:
        client = self._client
        if client is None or not client.connected:
            raise ChannelError("not connected to the IRC server", retryable=True)
        return client
