"""The ``email`` channel: mail in over IMAP, answers out over SMTP submission.

Receiving: one IMAP connection per receive session (implicit TLS by default). New mail is
found with ``UID SEARCH UNSEEN`` above the last UID handled; between checks the session
waits in ``IDLE`` when the server offers it (and ``use_idle`` is on), else it polls every
``poll_interval_secs``. Each message is fetched with ``BODY.PEEK[]`` and, once handed to the
router, flagged ``\\Seen`` on the server, so a restarted daemon neither answers it again nor
misses mail that arrived while it was down; within a process the last UID (per
``UIDVALIDITY``) is remembered as well. Once an answer is accepted by the SMTP server the
original is flagged ``\\Answered``. The bot's own mail and automatic mail (auto-replies,
bounces, lists) are flagged ``\\Seen`` and not answered.

Sending: SMTP submission with ``AUTH``; STARTTLS on any port but 465, implicit TLS on 465
(``smtp_security`` overrides this; ``plain`` is for local test servers only). A recipient
the server refuses raises :class:`ChannelError` carrying the server's reply (4xx retryable,
5xx not).

Threading: an answer to an inbound mail sets ``In-Reply-To`` to its Message-ID,
``References`` to its chain plus that id, and ``Re: <subject>``; ``thread_id`` is the
Message-ID that started the conversation. A subject starting with ``[name]`` asks for the
agent of that name (``InboundMessage.agent``); the tag stays in the answer's subject so the
conversation keeps its agent.

Libraries: ``aioimaplib`` and ``aiosmtplib`` (extra ``email``), both asyncio-native.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import re
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from fangwire.channels import (
    ChannelAdapter,
    ChannelContext,
    ChannelError,
    ConfigField,
    DeliveryReceipt,
    InboundMessage,
    LengthUnit,
    OutboundMessage,
)
from fangwire.hookspecs import hookimpl
from fangwire_channels.mailtext import (
    Mail,
    build_answer,
    message_ids,
    read_mail,
    reply_subject,
    split_agent_tag,
)

if TYPE_CHECKING:
    import aioimaplib

#: Bound on one IMAP command and on the SMTP conversation of one message.
COMMAND_TIMEOUT = 30.0
#: IDLE is re-issued this often (RFC 2177 asks clients to do so within 29 minutes).
IDLE_REFRESH_SECONDS = 25 * 60.0
#: Inbound mails whose threading context is kept for answers.
THREAD_MEMORY = 2048
#: Messages fetched per search round (the rest are picked up by the next round).
FETCH_BATCH = 50

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")


@attrs.frozen
class _Context:
    """What an answer needs from the mail it answers."""

    subject: str
    references: tuple[str, ...]
    uid: int
    uidvalidity: int


class EmailChannel(ChannelAdapter):
    name = "email"
    display_name = "Email"
    description = "Mail in over IMAP (IDLE or polling), answers by SMTP, threaded by Message-ID."
    category = "messaging"
    icon = "EM"
    capabilities = frozenset({"send", "receive", "threads"})
    config_fields = (
        ConfigField("username", required=True, help="IMAP and SMTP login, usually the address"),
        ConfigField(
            "password", required=True, secret=True, env="EMAIL_PASSWORD", help="account password"
        ),
        ConfigField("imap_host", required=True, help="IMAP server host name"),
        ConfigField("smtp_host", required=True, help="SMTP submission server host name"),
        ConfigField("imap_port", type="number", default=993, help="IMAP port (993: TLS)"),
        ConfigField(
            "smtp_port", type="number", default=587, help="SMTP port (587: STARTTLS, 465: TLS)"
        ),
        ConfigField("from_address", help="address answers are sent from (default: username)"),
        ConfigField("folder", default="INBOX", help="IMAP folder watched for new mail"),
        ConfigField(
            "poll_interval_secs",
            type="number",
            default=30,
            help="seconds between checks for new mail when the server has no IDLE",
        ),
        ConfigField(
            "use_idle",
            type="bool",
            default=True,
            advanced=True,
            help="wait for new mail with IMAP IDLE when the server offers it",
        ),
        ConfigField(
            "imap_security",
            type="select",
            options=("tls", "plain"),
            default="tls",
            advanced=True,
            help="tls: implicit TLS; plain: unencrypted (local test servers only)",
        ),
        ConfigField(
            "smtp_security",
            type="select",
            options=("auto", "starttls", "tls", "plain"),
            default="auto",
            advanced=True,
            help="auto: TLS on port 465, STARTTLS otherwise; plain: local test servers only",
        ),
        ConfigField(
            "ca_file",
            advanced=True,
            help="PEM file of certificate authorities to trust instead of the system's",
        ),
    )
    max_message_length = 100_000
    length_unit = LengthUnit.CHARACTERS
    requires_extra = "email"
    default_target_field = "from_address"

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        self._threads: collections.OrderedDict[str, _Context] = collections.OrderedDict()
        self._uidvalidity: int | None = None
        self._last_uid = 0
        self._to_flag_answered: set[tuple[int, int]] = set()
        self._wake = anyio.Event()

    @classmethod
    def is_available(cls) -> bool:
        try:
            import aioimaplib  # noqa: F401
            import aiosmtplib  # noqa: F401
        except ImportError:
            return False
        return True

    # -- settings -----------------------------------------------------------------------------

    @property
    def from_address(self) -> str:
        return str(self.settings.get("from_address") or self.settings["username"])

    def _tls_context(self) -> ssl.SSLContext:
        ca_file = self.settings.get("ca_file")
        try:
            return ssl.create_default_context(cafile=ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ChannelError(f"ca_file {ca_file!r} cannot be loaded: {exc}") from None

    async def start(self) -> None:
        _, address = email.utils.parseaddr(self.from_address)
        if "@" not in address:
            raise ChannelError(
                f"from_address (or username) must be an email address, got {self.from_address!r}"
            )
        self._tls_context()

    async def test(self, target: str | None) -> DeliveryReceipt:
        return await super().test(target or self.from_address)

    # -- receiving ----------------------------------------------------------------------------

    async def receive(self) -> None:
        lost = anyio.Event()
        imap = await self._connect(lost)
        try:
            use_idle = bool(self.settings.get("use_idle", True)) and imap.has_capability("IDLE")
            interval = max(1, int(self.settings.get("poll_interval_secs") or 30))
            while True:
                await self._flag_answered(imap, lost)
                await self._fetch_new(imap, lost)
                if use_idle:
                    await self._idle(imap, lost)
                else:
                    await self._wait(interval, lost)
                if lost.is_set():
                    raise ChannelError("IMAP connection lost", retryable=True)
        finally:
            if self._to_flag_answered and not lost.is_set():
                # answers sent just before a stop still get their \Answered flag
                with anyio.move_on_after(2, shield=True), contextlib.suppress(ChannelError):
                    await self._flag_answered(imap, lost)
            await self._close(imap, lost)

    async def _connect(self, lost: anyio.Event) -> aioimaplib.IMAP4:
        import aioimaplib

        host = str(self.settings["imap_host"])
        port = int(self.settings.get("imap_port") or 993)
        tls = self.settings.get("imap_security", "tls") != "plain"

        def on_lost(exc: Exception | None) -> None:
            lost.set()

        imap = aioimaplib.IMAP4(
            host=host,
            port=port,
            timeout=COMMAND_TIMEOUT,
            conn_lost_cb=on_lost,
            ssl_context=self._tls_context() if tls else None,
        )
        try:
            await imap.wait_hello_from_server()
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            await self._close(imap, lost)
            raise ChannelError(
                f"IMAP server {host}:{port} unreachable: {exc or type(exc).__name__}",
                retryable=True,
            ) from None
        try:
            password = self.settings["password"].reveal()
            response = await imap.login(str(self.settings["username"]), password)
            if response.result != "OK":
                raise ChannelError(f"IMAP login refused: {_last_line(response.lines)}")
            folder = str(self.settings.get("folder") or "INBOX")
            response = await imap.select(folder)
            if response.result != "OK":
                raise ChannelError(f"IMAP folder {folder!r}: {_last_line(response.lines)}")
        except (aioimaplib.AioImapException, TimeoutError, OSError) as exc:
            await self._close(imap, lost)
            raise ChannelError(f"IMAP login failed: {exc}", retryable=True) from None
        except BaseException:
            await self._close(imap, lost)
            raise
        uidvalidity = _uidvalidity(response.lines)
        if uidvalidity != self._uidvalidity:
            # UIDs of another UIDVALIDITY name other messages: start over with \Seen alone.
            self._uidvalidity = uidvalidity
            self._last_uid = 0
            self._to_flag_answered.clear()
        self.ctx.log.info("email: watching %s on %s:%s", folder, host, port)
        return imap

    async def _close(self, imap: aioimaplib.IMAP4, lost: anyio.Event) -> None:
        if not lost.is_set() and imap.get_state() in ("AUTH", "SELECTED"):
            with anyio.move_on_after(2, shield=True), contextlib.suppress(Exception):
                await imap.logout()
        transport = imap.protocol.transport
        if transport is not None and not lost.is_set() and not transport.is_closing():
            # A TLS transport closes gracefully (close_notify) in the background: wait for
            # that, bounded, and cut the socket if it takes longer.
            transport.close()
            with anyio.move_on_after(2, shield=True):
                await lost.wait()
            if not lost.is_set():
                transport.abort()
        for task in list(imap.tasks):
            task.cancel()

    async def _command(
        self, what: str, call: Callable[[], Any], *, lost: anyio.Event
    ) -> aioimaplib.Response:
        """Run one IMAP command and check that it succeeded."""
        response: aioimaplib.Response = await _until_lost(what, call, lost)
        if response.result != "OK":
            raise ChannelError(f"IMAP {what} refused: {_last_line(response.lines)}", retryable=True)
        return response

    async def _fetch_new(self, imap: aioimaplib.IMAP4, lost: anyio.Event) -> None:
        while True:
            response = await self._command(
                "UID SEARCH",
                lambda: imap.uid_search("UNSEEN", "UID", f"{self._last_uid + 1}:*"),
                lost=lost,
            )
            uids = sorted(u for u in _search_uids(response.lines) if u > self._last_uid)
            if not uids:
                return
            for uid in uids[:FETCH_BATCH]:
                await self._handle_uid(imap, uid, lost)
            if len(uids) <= FETCH_BATCH:
                return

    async def _handle_uid(self, imap: aioimaplib.IMAP4, uid: int, lost: anyio.Event) -> None:
        response = await self._command(
            "UID FETCH", lambda: imap.uid("fetch", str(uid), "(UID BODY.PEEK[])"), lost=lost
        )
        raw = _literal(response.lines)
        if raw is not None:
            try:
                mail = read_mail(raw)
            except Exception as exc:
                self.ctx.log.warning("email: message UID %s cannot be parsed: %s", uid, exc)
            else:
                await self._deliver(mail, uid)
        await self._command(
            "UID STORE", lambda: imap.uid("store", str(uid), "+FLAGS.SILENT", r"(\Seen)"), lost=lost
        )
        self._last_uid = max(self._last_uid, uid)

    async def _deliver(self, mail: Mail, uid: int) -> None:
        if mail.from_address == _bare(self.from_address) or not mail.from_address:
            return
        if mail.automatic:
            self.ctx.log.info("email: not answering automatic mail from %s", mail.from_address)
            return
        message_id = mail.message_id or f"<uid-{self._uidvalidity}-{uid}@fangwire.invalid>"
        self._threads[message_id] = _Context(
            subject=mail.subject,
            references=mail.references,
            uid=uid,
            uidvalidity=self._uidvalidity or 0,
        )
        self._threads.move_to_end(message_id)
        while len(self._threads) > THREAD_MEMORY:
            self._threads.popitem(last=False)
        _, clean_subject = split_agent_tag(mail.subject)
        text = f"Subject: {clean_subject}\n\n{mail.text}" if clean_subject else mail.text
        await self.ctx.deliver(
            InboundMessage(
                channel=self.ctx.name,
                sender=mail.from_address,
                sender_name=mail.from_name,
                chat=mail.reply_address,
                text=text.strip(),
                thread_id=mail.thread_root or message_id,
                message_id=message_id,
                agent=mail.agent,
                raw={"uid": uid, "subject": mail.subject, "message_id": message_id},
            )
        )

    async def _flag_answered(self, imap: aioimaplib.IMAP4, lost: anyio.Event) -> None:
        pending = {(v, u) for v, u in self._to_flag_answered if v == self._uidvalidity}
        self._to_flag_answered -= {
            (v, u) for v, u in self._to_flag_answered if v != self._uidvalidity
        }
        if pending:
            uid_set = ",".join(str(u) for _, u in sorted(pending))
            await self._command(
                "UID STORE",
                lambda: imap.uid("store", uid_set, "+FLAGS.SILENT", r"(\Answered \Seen)"),
                lost=lost,
            )
            self._to_flag_answered -= pending

    async def _woken(self, lost: anyio.Event, wait: Callable[[], Any]) -> None:
        """Return when ``wait()`` returns, an answer needs flagging or the connection drops."""
        wake = self._wake
        if self._to_flag_answered:
            return
        async with anyio.create_task_group() as tg:

            async def until(event_wait: Callable[[], Any]) -> None:
                await event_wait()
                tg.cancel_scope.cancel()

            tg.start_soon(until, wait)
            tg.start_soon(until, wake.wait)
            tg.start_soon(until, lost.wait)
        if wake.is_set():
            self._wake = anyio.Event()

    async def _wait(self, interval: int, lost: anyio.Event) -> None:
        await self._woken(lost, lambda: anyio.sleep(interval))

    async def _idle(self, imap: aioimaplib.IMAP4, lost: anyio.Event) -> None:
        idle = await _until_lost(
            "IDLE", lambda: imap.idle_start(timeout=IDLE_REFRESH_SECONDS), lost
        )
        try:
            # Any server push (EXISTS, EXPUNGE, FETCH, a keep-alive) ends the wait: one search
            # is cheaper than telling them apart. The refresh timer pushes a stop marker.
            await self._woken(
                lost, lambda: imap.wait_server_push(timeout=IDLE_REFRESH_SECONDS + 60)
            )
        finally:
            if not lost.is_set() and imap.has_pending_idle():
                imap.idle_done()
            ended = False
            with anyio.move_on_after(COMMAND_TIMEOUT, shield=True):
                with contextlib.suppress(ChannelError):
                    await _until_lost("IDLE", lambda: idle, lost)
                    ended = True
            if not ended:
                # the server never ended IDLE, or the connection is gone: drop it
                idle.cancel()
                transport = imap.protocol.transport
                if transport is not None:
                    transport.abort()
                lost.set()

    # -- sending ------------------------------------------------------------------------------

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        import aiosmtplib

        _, recipient = email.utils.parseaddr(target)
        if "@" not in recipient or any(c in target for c in "\r\n"):
            raise ChannelError(f"not an email address: {target!r}")
        context = self._threads.get(message.reply_to or "")
        if message.reply_to:
            references = context.references if context else message_ids(message.thread_id)
            subject = reply_subject(context.subject if context else "")
        else:
            references = ()
            subject = str(message.metadata.get("subject") or "Message from fangwire")
        domain = _bare(self.from_address).rpartition("@")[2] or None
        outgoing = build_answer(
            sender=self.from_address,
            recipient=target,
            subject=subject,
            text=message.text,
            in_reply_to=message.reply_to,
            references=references,
            message_id=email.utils.make_msgid(domain=domain),
        )
        host = str(self.settings["smtp_host"])
        port = int(self.settings.get("smtp_port") or 587)
        security = str(self.settings.get("smtp_security") or "auto")
        if security == "auto":
            security = "tls" if port == 465 else "starttls"
        smtp = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            use_tls=security == "tls",
            start_tls=security == "starttls",
            tls_context=self._tls_context() if security != "plain" else None,
            timeout=COMMAND_TIMEOUT,
        )
        protocol: Any = None
        try:
            async with smtp:
                protocol = smtp.protocol
                await smtp.login(str(self.settings["username"]), self.settings["password"].reveal())
                refused, reply = await smtp.send_message(outgoing, recipients=[recipient])
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            raise _refusal(f"{first.recipient} refused", first.code, first.message) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise ChannelError(f"SMTP login refused: {exc.code} {exc.message}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _refusal("SMTP server refused the message", exc.code, exc.message) from None
        except (
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPServerDisconnected,
            aiosmtplib.SMTPTimeoutError,
            OSError,
            TimeoutError,
        ) as exc:
            raise ChannelError(
                f"SMTP server {host}:{port} unreachable: {exc or type(exc).__name__}",
                retryable=True,
            ) from None
        except aiosmtplib.SMTPException as exc:
            raise ChannelError(f"SMTP server {host}:{port}: {exc}") from None
        finally:
            await _closed(protocol)
        if refused:
            address, (code, text) = next(iter(refused.items()))
            raise _refusal(f"{address} refused", code, text)
        if context is not None:
            self._to_flag_answered.add((context.uidvalidity, context.uid))
            self._wake.set()
        return DeliveryReceipt(
            channel=self.ctx.name,
            target=target,
            message_ids=(str(outgoing["Message-ID"]),),
            detail=reply,
        )


async def _until_lost(what: str, call: Callable[[], Any], lost: anyio.Event) -> Any:
    """Await ``call()``, but give up with :class:`ChannelError` as soon as the connection is
    lost (aioimaplib itself would wait for its timeout, or forever for IDLE)."""
    import aioimaplib

    outcome: list[Any] = []

    async def run() -> None:
        try:
            outcome.append(await call())
        except (aioimaplib.AioImapException, TimeoutError, OSError) as exc:
            outcome.append(ChannelError(f"IMAP {what} failed: {exc}", retryable=True))
        tg.cancel_scope.cancel()

    async def watch() -> None:
        await lost.wait()
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        tg.start_soon(watch)
    if not outcome:
        raise ChannelError("IMAP connection lost", retryable=True)
    if isinstance(outcome[0], ChannelError):
        raise outcome[0]
    return outcome[0]


async def _closed(protocol: Any) -> None:
    """Wait (briefly) until an SMTP connection has really gone: aiosmtplib closes a TLS
    connection with a close_notify exchange that runs on after ``close()`` returns."""
    with anyio.move_on_after(2):
        # aiosmtplib offers no event for the end of the connection, only this flag
        while protocol is not None and not getattr(protocol, "_connection_lost", True):  # noqa: ASYNC110
            await anyio.sleep(0.01)


def _refusal(what: str, code: int, text: str) -> ChannelError:
    return ChannelError(f"{what}: {code} {text}".strip(), retryable=400 <= code < 500)


def _bare(address: str) -> str:
    return email.utils.parseaddr(address)[1].lower()


def _last_line(lines: list[Any]) -> str:
    for line in reversed(lines):
        if isinstance(line, bytes | bytearray) and line.strip():
            return bytes(line).decode("utf-8", "replace").strip()
    return "no reason given"


def _uidvalidity(lines: list[Any]) -> int | None:
    for line in lines:
        if isinstance(line, bytes | bytearray):
            match = _UIDVALIDITY.search(bytes(line))
            if match:
                return int(match.group(1))
    return None


def _search_uids(lines: list[Any]) -> list[int]:
    uids: list[int] = []
    for line in lines[:-1]:  # the last line is the tagged status
        if isinstance(line, bytes | bytearray):
            words = bytes(line).split()
            if words[:1] == [b"SEARCH"]:
                words = words[1:]
            uids.extend(int(w) for w in words if w.isdigit())
    return uids


def _literal(lines: list[Any]) -> bytes | None:
    """The message bytes in a ``UID FETCH (BODY.PEEK[])`` response (aioimaplib hands the
    literal over as a ``bytearray`` line)."""
    for line in lines:
        if isinstance(line, bytearray):
            return bytes(line)
    return None


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(EmailChannel)
