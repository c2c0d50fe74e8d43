"""The ``sidecar`` channel: any out-of-process adapter speaking LibreFang's sidecar protocol.

A LibreFang sidecar (e.g. ``python3 -m librefang.sidecar.adapters.ntfy`` from the
``librefang-sdk`` package) is a program that talks to its platform itself and exchanges
newline-delimited JSON frames ``{"method": ..., "params": {...}}`` with the daemon: events on
its stdout, commands on its stdin (protocol version 1).

Configuration: one ``[channels.sidecar]`` section runs one sidecar::

    [channels.sidecar]
    command = "python3"
    args = ["-m", "librefang.sidecar.adapters.ntfy"]
    channel_type = "ntfy"
    env = ["NTFY_TOPIC=alerts", "NTFY_SERVER_URL=https://ntfy.example.org", "NTFY_TOKEN"]
    bot_user_ids = ["LibreFang"]

``env`` entries are ``NAME=value`` (set for the sidecar; kept in config.toml, so not for
secrets) or a bare ``NAME``, passed through from the daemon's environment (for tokens). The
sidecar gets nothing else of the daemon's environment but ``PATH``, ``HOME`` and the locale.

Each receive session is one sidecar process, sandboxed like MCP servers
(:mod:`fangwire.stdio_process`: cleared environment, own process group, no core dumps,
stderr to the log, bounded line size). The session waits for ``ready`` (answering
``ready_ack``), turns ``message`` events into inbound messages, logs ``error``, ``typing`` and
``qr_*`` events, and sends ``heartbeat`` every ``heartbeat_secs``. When the process exits the
session ends and the core starts a new one with back-off. On stop the sidecar gets
``shutdown``, a short grace period, then its process group is killed.

Delivery is **not confirmed**: the protocol's ``send`` command has no answer (no message id,
no error correlated to the command; a sidecar that fails to deliver only logs it on stderr).
``send`` therefore succeeds once the command is written to a ready sidecar, and its receipt
says so (``detail``); it raises when no sidecar is ready to take the command.
"""

from __future__ import annotations

import collections
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

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
from fangwire.stdio_process import (
    StdioConnection,
    StdioError,
    StdioFrameError,
    open_stdio_process,
)

PROTOCOL_VERSION = 1
#: After ``shutdown``, how long the sidecar gets to exit before its group is signalled.
SHUTDOWN_GRACE_SECONDS = 1.5
#: Grace after closing stdin and after SIGTERM (the core bounds the whole stop at 5 s).
KILL_GRACE_SECONDS = 1.0
#: A frame longer than this ends the session (the process is restarted).
MAX_FRAME_BYTES = 4 * 1024 * 1024
#: Chats whose last sender is remembered (to address answers to that user).
REMEMBERED_CHATS = 1024
RECEIPT_DETAIL = "written to the sidecar; the sidecar protocol does not confirm delivery"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SidecarChannel(ChannelAdapter):
    """A LibreFang sidecar process as a channel."""

    name = "sidecar"
    display_name = "LibreFang sidecar"
    description = (
        "Runs an out-of-process channel adapter speaking LibreFang's sidecar protocol "
        "(newline-delimited JSON over stdio), e.g. the adapters of the librefang-sdk package."
    )
    category = "development"
    icon = "SC"
    capabilities = frozenset({"send", "receive", "threads", "groups"})
    #: Sidecars cut to their platform's own limit; answers are pre-cut at 4096 bytes, which
    #: is within 4096 characters or UTF-16 units too (ntfy counts bytes, Telegram UTF-16).
    max_message_length = 4096
    length_unit = LengthUnit.BYTES
    config_fields = (
        ConfigField(
            "command",
            required=True,
            help="Program to run, e.g. python3",
            placeholder="python3",
        ),
        ConfigField(
            "args",
            type="list",
            default=[],
            help="Its arguments, e.g. -m, librefang.sidecar.adapters.ntfy",
        ),
        ConfigField(
            "env",
            type="list",
            default=[],
            help="NAME=value to set, or NAME to pass on from fangwire's environment (secrets)",
        ),
        ConfigField(
            "channel_type",
            default="sidecar",
            help="The platform the sidecar serves (shown in logs), e.g. ntfy",
        ),
        ConfigField(
            "bot_user_ids",
            type="list",
            default=[],
            help="Sender ids of the bot's own messages when the platform echoes them back",
            advanced=True,
        ),
        ConfigField(
            "ready_timeout_secs",
            type="number",
            default=30,
            help="How long the sidecar may take to announce ready",
            advanced=True,
        ),
        ConfigField(
            "heartbeat_secs",
            type="number",
            default=30,
            help="Seconds between heartbeat commands",
            advanced=True,
        ),
    )

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        self._conn: StdioConnection | None = None
        self._ready = False
        self._ready_event = anyio.Event()
        #: True from the moment a receive session begins until it ends.
        self._session_active = False
        self._write_lock = anyio.Lock()
        #: The params of the sidecar's last ``ready`` event (capabilities, protocol_version...).
        self.ready_params: dict[str, Any] = {}
        self.pid: int | None = None
        self._last_user: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()

    # -- settings ------------------------------------------------------------------------------

    @property
    def platform(self) -> str:
        return str(self.settings.get("channel_type") or "sidecar")

    def child_environment(self) -> dict[str, str]:
        return self._environment()[0]

    def _environment(self) -> tuple[dict[str, str], list[str]]:
        """The variables ``env`` declares, with pass-through names read from the daemon's."""
        declared: dict[str, str] = {}
        passed: list[str] = []
        for entry in self.settings.get("env") or []:
            name, has_value, value = entry.partition("=")
            name = name.strip()
            if not _ENV_NAME.fullmatch(name):
                raise ChannelConfigError("env", f"{name!r} is not an environment variable name")
            if has_value:
                declared[name] = value
            elif name in self.ctx.environ:
                declared[name] = self.ctx.environ[name]
                passed.append(self.ctx.environ[name])
            else:
                self.ctx.log.info("sidecar %s: %s is not set; not passed", self.ctx.name, name)
        return declared, passed

    def _positive(self, key: str) -> float:
        value = self.settings.get(key)
        if not isinstance(value, int) or value <= 0:
            raise ChannelConfigError(key, "expected a whole number of seconds > 0")
        return float(value)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if not str(self.settings.get("command") or "").strip():
            raise ChannelConfigError("command", "is required")
        self.child_environment()
        self._positive("ready_timeout_secs")
        self._positive("heartbeat_secs")

    async def receive(self) -> None:
        """Run one sidecar process until it exits; it is stopped when this is cancelled."""
        self._session_active = True
        try:
            await self._run_process()
        finally:
            self._session_active = False
            self._ready = False
            self._ready_event = anyio.Event()

    async def _run_process(self) -> None:
        command = str(self.settings["command"])
        args = [str(a) for a in self.settings.get("args") or []]
        label = f"sidecar {self.ctx.name} ({self.platform})"
        env, passed = self._environment()
        # Values passed through from the daemon's environment are secrets as far as the
        # sidecar's log lines go (the daemon's handlers scrub the secrets it knows).
        hidden = sorted((v for v in passed if len(v) >= 4), key=len, reverse=True)

        def scrub(text: str) -> str:
            for value in hidden:
                text = text.replace(value, "****")
            return text

        try:
            async with open_stdio_process(
                command,
                args,
                env=env,
                parent_environ=self.ctx.environ,
                name=label,
                scrub=scrub,
                logger=self.ctx.log,
                max_line_bytes=MAX_FRAME_BYTES,
                grace_seconds=KILL_GRACE_SECONDS,
            ) as conn:
                self._conn = conn
                self.pid = conn.pid
                try:
                    await self._session(conn)
                finally:
                    self._conn = None
                    self._ready = False
                    with anyio.CancelScope(shield=True):
                        await self._shutdown(conn)
        except OSError as exc:  # the command could not be started
            raise ChannelError(f"could not start {command!r}: {exc.strerror or exc}") from None

    async def _session(self, conn: StdioConnection) -> None:
        ready_timeout = self._positive("ready_timeout_secs")
        with anyio.move_on_after(ready_timeout) as waiting:
            while not self._ready:
                await self._handle(conn, await self._next(conn))
        if waiting.cancelled_caught:
            raise ChannelError(f"the sidecar did not announce ready within {ready_timeout:g} s")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeats, conn)
                while True:
                    await self._handle(conn, await self._next(conn))
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _next(self, conn: StdioConnection) -> dict[str, Any]:
        """The next frame; a line that is not a JSON object is logged and skipped."""
        while True:
            try:
                return await conn.receive()
            except StdioFrameError as exc:
                self.ctx.log.warning("sidecar %s: %s (line skipped)", self.ctx.name, exc)
            except StdioError as exc:
                raise await self._ended(conn, exc) from None

    async def _ended(self, conn: StdioConnection, exc: StdioError) -> ChannelError:
        """Why the session ends, with the exit code when the process has exited."""
        code = conn.process.returncode
        with anyio.move_on_after(0.5):
            code = await conn.process.wait()
        suffix = f" (exit code {code})" if code is not None else ""
        return ChannelError(f"sidecar stopped: {exc}{suffix}")

    async def _heartbeats(self, conn: StdioConnection) -> None:
        interval = self._positive("heartbeat_secs")
        while True:
            await anyio.sleep(interval)
            await self._write(conn, {"method": "heartbeat"})

    async def _write(self, conn: StdioConnection, frame: Mapping[str, Any]) -> None:
        try:
            async with self._write_lock:
                await conn.send(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            raise ChannelError("the sidecar's input is closed", retryable=True) from None

    async def _shutdown(self, conn: StdioConnection) -> None:
        """Ask the sidecar to stop and give it a moment; the caller then kills the group."""
        if conn.process.returncode is not None:
            return
        try:
            await self._write(conn, {"method": "shutdown"})
        except ChannelError:
            return
        with anyio.move_on_after(SHUTDOWN_GRACE_SECONDS):
            await conn.process.wait()

    async def stop(self) -> None:
        # The process belongs to the receive session, which the core cancels before this.
        self._conn = None
        self._ready = False

    # -- events --------------------------------------------------------------------------------

    async def _handle(self, conn: StdioConnection, frame: Mapping[str, Any]) -> None:
        method = frame.get("method")
        params = frame.get("params")
        if not isinstance(params, Mapping):
            params = {}
        log = self.ctx.log
        match method:
            case "ready":
                self.ready_params = dict(params)
                version = params.get("protocol_version")
                if version != PROTOCOL_VERSION:
                    log.warning(
                        "sidecar %s speaks protocol version %r; fangwire speaks %d",
                        self.ctx.name,
                        version,
                        PROTOCOL_VERSION,
                    )
                await self._write(conn, {"method": "ready_ack"})
                if not self._ready:
                    log.info(
                        "sidecar %s ready (capabilities: %s)",
                        self.ctx.name,
                        ", ".join(map(str, params.get("capabilities") or [])) or "none",
                    )
                self._ready = True
                self._ready_event.set()
            case "message":
                message = self._inbound(params)
                if message is not None:
                    await self.ctx.deliver(message)
            case "error":
                log.warning("sidecar %s reports: %s", self.ctx.name, params.get("message"))
            case "typing":
                log.debug("sidecar %s: %s is typing", self.ctx.name, params.get("user_id"))
            case "qr_ready":
                log.info(
                    "sidecar %s: a login QR code is ready (expires %s)",
                    self.ctx.name,
                    params.get("expires_at") or "unknown",
                )
            case "qr_status":
                log.info(
                    "sidecar %s: QR login %s %s",
                    self.ctx.name,
                    params.get("status"),
                    params.get("message") or "",
                )
            case _:
                log.debug("sidecar %s: ignored event %r", self.ctx.name, method)

    def _inbound(self, params: Mapping[str, Any]) -> InboundMessage | None:
        sender = str(params.get("user_id") or "")
        if not sender or sender in (self.settings.get("bot_user_ids") or []):
            return None
        text = _text_of(params)
        if not text:
            self.ctx.log.info("sidecar %s: message without text content ignored", self.ctx.name)
            return None
        metadata = params.get("metadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        chat = params.get("channel_id") or sender
        thread = params.get("thread_id")
        message_id = params.get("message_id")
        sender_name = str(params.get("user_name") or sender)
        self._last_user[str(chat)] = (sender, sender_name)
        self._last_user.move_to_end(str(chat))
        while len(self._last_user) > REMEMBERED_CHATS:
            self._last_user.popitem(last=False)
        return InboundMessage(
            channel=self.ctx.name,
            sender=sender,
            chat=str(chat),
            text=text,
            sender_name=sender_name,
            is_group=bool(params.get("is_group")),
            mentioned=bool(metadata.get("was_mentioned")),
            thread_id=str(thread) if thread else None,
            message_id=str(message_id) if message_id else None,
            raw=dict(params),
        )

    # -- sending -------------------------------------------------------------------------------

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        if self._session_active and not self._ready:
            # A sidecar is starting: give it its ready timeout to announce itself.
            with anyio.move_on_after(self._positive("ready_timeout_secs")):
                await self._ready_event.wait()
        conn = self._conn
        if conn is None or not self._ready:
            raise ChannelError("the sidecar is not running or not ready yet", retryable=True)
        # ``user`` is the person addressed: the last sender in that chat, else the target.
        user_id, user_name = self._last_user.get(target, (target, target))
        params: dict[str, Any] = {
            "channel_id": target,
            "text": message.text,
            "user": {"platform_id": user_id, "display_name": user_name, "librefang_user": None},
        }
        if message.thread_id:
            params["thread_id"] = message.thread_id
        await self._write(conn, {"method": "send", "params": params})
        return DeliveryReceipt(
            channel=self.ctx.name,
            target=target,
            message_ids=(f"sidecar-{uuid.uuid4().hex}",),
            detail=RECEIPT_DETAIL,
        )


def _text_of(params: Mapping[str, Any]) -> str:
    """The message's text: ``content.Text``, a ``/command args`` line, or the legacy ``text``."""
    content = params.get("content")
    if isinstance(content, Mapping):
        if isinstance(content.get("Text"), str):
            return str(content["Text"])
        command = content.get("Command")
        if isinstance(command, Mapping) and isinstance(command.get("name"), str):
            args = [str(a) for a in command.get("args") or []]
            return " ".join([f"/{command['name']}", *args])
    text = params.get("text")
    return text if isinstance(text, str) else ""


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(SidecarChannel)
