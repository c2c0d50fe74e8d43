"""One running channel: its adapter instance, its receive loop and its counters.

A :class:`ChannelRunner` owns a host task (created on the event loop, so it outlives the request
that started it) holding a task group with the supervised session and the inbound handlers.
The session starts the adapter and then runs :meth:`ChannelAdapter.receive` under a
:class:`~fangwire.channelkit.retry.ReconnectLoop`: a failed start or a dropped connection is
retried with capped, jittered back-off and never spins. There is exactly one session per
runner, and the manager keeps exactly one runner per channel, so one credential never has two
receive loops. :meth:`stop` cancels the host and waits a bounded time, then lets the adapter
close its sockets, also bounded.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import attrs
from anyio.abc import TaskGroup

from fangwire.channelkit.inbox import Inbox
from fangwire.channelkit.policy import UserRateLimit
from fangwire.channelkit.retry import Backoff, ReconnectLoop
from fangwire.channels import ChannelAdapter, ChannelError, InboundMessage
from fangwire.timeutil import rfc3339

if TYPE_CHECKING:
    from fangwire.channelkit.policy import ChannelPolicy

log = logging.getLogger("fangwire.channels")

#: Bound on each of: cancelling the receive loop, and the adapter's own ``stop``.
STOP_TIMEOUT_SECONDS = 5.0
#: Bound on one ``adapter.start()`` call.
START_TIMEOUT_SECONDS = 30.0
#: Inbound messages handled at the same time per channel; more wait their turn.
MAX_CONCURRENT_INBOUND = 16
#: Back-off between receive sessions: 1 s, 2 s, 4 s ... capped at 60 s, full jitter.
RECONNECT_BACKOFF = Backoff(base=1.0, factor=2.0, cap=60.0, jitter="equal")


@attrs.define
class Counters:
    received: int = 0
    ignored: int = 0
    sent: int = 0
    send_failures: int = 0
    agent_failures: int = 0
    last_error: str | None = None
    last_message_at: str | None = None

    def to_json(self) -> dict[str, object]:
        return attrs.asdict(self)


Handler = Callable[["ChannelRunner", InboundMessage], Awaitable[None]]


class ChannelRunner:
    def __init__(
        self,
        adapter: ChannelAdapter,
        policy: ChannelPolicy,
        fingerprint: str,
        handler: Handler,
        inbox: Inbox,
        *,
        backoff: Backoff = RECONNECT_BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        self.adapter = adapter
        self.policy = policy
        self.fingerprint = fingerprint
        self.counters = Counters()
        self.rate_limit = UserRateLimit(policy.rate_limit_per_user, adapter.ctx.clock)
        self.loop = ReconnectLoop()
        self.state = "stopped"
        self.started = False
        self._handler = handler
        self._inbox = inbox
        self._backoff = backoff
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._host: asyncio.Task[None] | None = None
        self._tg: TaskGroup | None = None
        self._inbound = anyio.Semaphore(MAX_CONCURRENT_INBOUND)
        self._ready = anyio.Event()

    @property
    def name(self) -> str:
        return self.adapter.ctx.name

    @property
    def status(self) -> str:
        if self.state == "error":
            return f"error: {self.counters.last_error}"
        return self.state

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the host task; return once it can accept inbound messages."""
        if self._host is not None:
            return
        self.state = "starting"
        self._host = asyncio.get_running_loop().create_task(
            self._main(), name=f"channel:{self.name}"
        )
        with anyio.fail_after(STOP_TIMEOUT_SECONDS):
            await self._ready.wait()

    async def _main(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._ready.set()
                await self.loop.run(
                    self._session, backoff=self._backoff, rng=self._rng, min_delay=1.0
                )
        finally:
            self._tg = None
            self._ready.set()

    async def _session(self) -> None:
        try:
            if not self.started:
                with anyio.fail_after(START_TIMEOUT_SECONDS):
                    await self.adapter.start()
                self.started = True
                await self._replay_pending()
            self.state = "running"
            if "receive" in self.adapter.capabilities:
                await self.adapter.receive()
                # A receive session that returns means the connection ended.
                self.state = "reconnecting"
            else:
                await anyio.sleep_forever()
        except Exception as exc:
            self.state = "error"
            reason = exc.reason if isinstance(exc, ChannelError) else f"{type(exc).__name__}: {exc}"
            self.counters.last_error = reason
            log.warning("channel %s: %s", self.name, reason)
            raise

    async def _replay_pending(self) -> None:
        """Handle what an earlier run accepted but did not finish, once the adapter can send."""
        tg = self._tg
        if tg is None:
            return
        for row_id, message in await self._inbox.pending(self.name):
            tg.start_soon(self._handle, message, row_id)

    async def stop(self) -> None:
        """Cancel the receive loop and inbound handlers, then stop the adapter (both bounded)."""
        host, self._host = self._host, None
        if host is not None:
            host.cancel()
            with anyio.move_on_after(STOP_TIMEOUT_SECONDS):
                await asyncio.wait({host})
            if not host.done():
                log.warning("channel %s did not stop within %ss", self.name, STOP_TIMEOUT_SECONDS)
        with anyio.move_on_after(STOP_TIMEOUT_SECONDS) as scope:
            try:
                await self.adapter.stop()
            except Exception:
                log.exception("channel %s failed to stop cleanly", self.name)
        if scope.cancelled_caught:
            log.warning("channel %s: adapter stop timed out", self.name)
        self.started = False
        self.state = "stopped"

    # -- inbound ------------------------------------------------------------------------------

    async def deliver(self, message: InboundMessage) -> None:
        """Accept an inbound message: durable when this returns, then handled in the
        background (bounded concurrency)."""
        tg = self._tg
        if tg is None:
            raise ChannelError(f"channel {self.name!r} is not running", retryable=True)
        row_id = await self._inbox.accept(message)
        self.counters.received += 1
        self.counters.last_message_at = rfc3339()
        tg.start_soon(self._handle, message, row_id)

    async def _handle(self, message: InboundMessage, row_id: int) -> None:
        async with self._inbound:
            try:
                await self._handler(self, message)
            except Exception:
                log.exception("channel %s: inbound message could not be handled", self.name)
            # Not reached when cancelled (shutdown): the message stays for the next start.
            await self._inbox.done(row_id)
