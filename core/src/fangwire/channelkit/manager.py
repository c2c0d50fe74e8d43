"""The channels of one runtime: registered adapter classes and the runners of configured ones.

:class:`ChannelManager` is ``runtime.channels``. It maps a channel name to its adapter class
(everything discovered), keeps one :class:`ChannelRunner` per configured and enabled channel,
and is the only way anything sends through a channel: :meth:`send` cuts the text to the
adapter's limit in its unit, retries refusals the platform marks as temporary (honouring the
delay it asks for, up to a cap) and publishes ``channel.outbound`` on the bus.

Configuration changes (:meth:`configure`, :meth:`remove`, :meth:`reload`) touch only the
channels whose settings changed: a runner is restarted when the digest of its resolved
settings (secrets included) differs.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from fangwire.bus import BusEvent
from fangwire.channelkit import settings as channel_settings
from fangwire.channelkit.chunking import split_message
from fangwire.channelkit.inbox import CHANNEL_MIGRATIONS, Inbox
from fangwire.channelkit.policy import ChannelPolicy
from fangwire.channelkit.retry import Backoff
from fangwire.channelkit.router import route_inbound
from fangwire.channelkit.runner import ChannelRunner
from fangwire.channelkit.state import StoredState
from fangwire.channels import (
    ChannelAdapter,
    ChannelConfigError,
    ChannelContext,
    ChannelError,
    DeliveryReceipt,
    OutboundMessage,
)

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

log = logging.getLogger("fangwire.channels")

#: Bound on one adapter ``send`` call (one chunk).
SEND_TIMEOUT_SECONDS = 30.0
#: Attempts per chunk when the platform refuses with a retryable error.
SEND_ATTEMPTS = 3
#: Longest delay a platform may ask for before a send is given up (reported instead).
MAX_SEND_RETRY_AFTER = 30.0
SEND_BACKOFF = Backoff(base=0.5, factor=2.0, cap=8.0)


class ChannelNotFound(LookupError):
    """No adapter is registered under that name."""


class ChannelNotConfigured(ChannelError):
    """The channel has no section, is disabled, or lacks required settings."""


@attrs.frozen
class ReloadResult:
    started: tuple[str, ...]
    stopped: tuple[str, ...]
    restarted: tuple[str, ...]
    unchanged: tuple[str, ...]
    errors: Mapping[str, str]


class ChannelManager:
    def __init__(self, runtime: Runtime, classes: Mapping[str, type[ChannelAdapter]]) -> None:
        self.runtime = runtime
        self.classes = dict(classes)
        self.runners: dict[str, ChannelRunner] = {}
        #: Why a configured channel is not running (bad settings, missing secrets, ...).
        self.problems: dict[str, str] = {}
        self._lock = anyio.Lock()
        self._rng = random.Random()  # noqa: S311 - jitter, not security
        self.clock = time.monotonic
        if self.classes:
            runtime.security.uses("prompt_injection_scanning", "channel inbound text")

    # -- mapping of registered classes ---------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self.classes

    def __iter__(self) -> Iterator[str]:
        return iter(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def adapter_class(self, name: str) -> type[ChannelAdapter]:
        try:
            return self.classes[name]
        except KeyError:
            raise ChannelNotFound(name) from None

    def section(self, name: str) -> Mapping[str, Any] | None:
        value = self.runtime.config.channels.get(name)
        return value if isinstance(value, Mapping) else None

    async def resolve(self, name: str) -> channel_settings.Resolved:
        return await channel_settings.resolve(
            name,
            self.adapter_class(name),
            self.section(name) or {},
            self.runtime.secrets,
            self.runtime.environ,
            self.runtime.redactor,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def start_all(self) -> list[str]:
        """Start every configured, enabled channel; return the names that started."""
        await self.runtime.store.migrate(CHANNEL_MIGRATIONS)
        result = await self.reload(reread=False)
        return list(result.started)

    async def stop_all(self) -> None:
        async with self._lock:
            runners, self.runners = self.runners, {}
            for runner in runners.values():
                await runner.stop()

    async def reload(self, *, reread: bool = True) -> ReloadResult:
        """Bring the runners in line with the configuration (re-read from disk first)."""
        if reread:
            await anyio.to_thread.run_sync(self.runtime.reload_config)
        started: list[str] = []
        stopped: list[str] = []
        restarted: list[str] = []
        unchanged: list[str] = []
        async with self._lock:
            self.problems = {}
            wanted: dict[str, tuple[channel_settings.Resolved, ChannelPolicy]] = {}
            for name, table in self.runtime.config.channels.items():
                try:
                    plan = await self._plan(name, table)
                except ChannelError as exc:
                    self.problems[name] = exc.reason
                    continue
                if plan is not None:
                    wanted[name] = plan
            for name in list(self.runners):
                if name not in wanted:
                    await self.runners.pop(name).stop()
                    stopped.append(name)
            for name, (resolved, policy) in wanted.items():
                current = self.runners.get(name)
                if current is not None and current.fingerprint == resolved.fingerprint:
                    unchanged.append(name)
                    continue
                if current is not None:
                    await self.runners.pop(name).stop()
                try:
                    await self._start(name, resolved, policy)
                except Exception as exc:
                    self.problems[name] = f"{type(exc).__name__}: {exc}"
                    log.exception("channel %s could not be started", name)
                    continue
                (restarted if current is not None else started).append(name)
        return ReloadResult(
            started=tuple(started),
            stopped=tuple(stopped),
            restarted=tuple(restarted),
            unchanged=tuple(unchanged),
            errors=dict(self.problems),
        )

    async def _plan(
        self, name: str, table: Any
    ) -> tuple[channel_settings.Resolved, ChannelPolicy] | None:
        if name not in self.classes:
            raise ChannelError(f"no channel adapter named {name!r} is installed")
        cls = self.classes[name]
        if not isinstance(table, Mapping):
            raise ChannelConfigError(f"channels.{name}", "expected a table")
        if not cls.is_available():
            raise ChannelError(f"unavailable: install fangwire-channels[{cls.requires_extra}]")
        section = channel_settings.split_section(name, cls, table)
        policy = ChannelPolicy.parse(name, section.policy)
        if not policy.enabled:
            return None
        resolved = await self.resolve(name)
        if resolved.missing:
            raise ChannelNotConfigured(f"missing required settings: {', '.join(resolved.missing)}")
        return resolved, policy

    async def _start(
        self, name: str, resolved: channel_settings.Resolved, policy: ChannelPolicy
    ) -> None:
        runner_box: list[ChannelRunner] = []

        async def deliver(message: Any) -> None:
            await runner_box[0].deliver(message)

        ctx = ChannelContext(
            name=name,
            settings=resolved.values,
            http=self.runtime.http,
            deliver=deliver,
            log=logging.getLogger(f"fangwire.channels.{name}"),
            clock=self.clock,
            policy=policy,
            environ=self.runtime.environ,
            state=StoredState(self.runtime.store, name),
        )
        adapter = self.classes[name](ctx)
        runner = ChannelRunner(
            adapter,
            policy,
            resolved.fingerprint,
            functools.partial(route_inbound, self.runtime),
            Inbox(self.runtime.store),
        )
        runner_box.append(runner)
        self.runners[name] = runner
        await runner.start()

    # -- sending -------------------------------------------------------------------------------

    def running(self, name: str) -> ChannelRunner:
        """The runner of ``name``, or :class:`ChannelNotConfigured`."""
        self.adapter_class(name)
        runner = self.runners.get(name)
        if runner is None:
            reason = self.problems.get(name) or "not configured"
            raise ChannelNotConfigured(f"channel {name!r} is not running: {reason}")
        return runner

    async def send(
        self, name: str, target: str, message: OutboundMessage, *, sender: str = "system"
    ) -> DeliveryReceipt:
        """Send ``message`` through channel ``name``, in as many chunks as its limit needs.

        Raises :class:`ChannelError` with the platform's reason when any chunk is refused;
        chunks already delivered stay delivered (their ids are in the error's message).
        """
        runner = self.running(name)
        adapter = runner.adapter
        limit = adapter.max_message_length
        chunks = (
            [message.text] if not limit else split_message(message.text, limit, adapter.length_unit)
        )
        ids: list[str] = []
        for index, chunk in enumerate(chunks):
            part = attrs.evolve(message, text=chunk)
            try:
                receipt = await self._send_one(adapter, target, part)
            except ChannelError as exc:
                runner.counters.send_failures += 1
                runner.counters.last_error = exc.reason
                if ids:
                    raise ChannelError(
                        f"{exc.reason} (after {index} of {len(chunks)} parts were sent)"
                    ) from exc
                raise
            ids.extend(receipt.message_ids)
            runner.counters.sent += 1
        self.runtime.bus.publish(
            BusEvent(
                kind="channel.outbound",
                payload={
                    "channel": name,
                    "target": target,
                    "text": message.text,
                    "thread_id": message.thread_id,
                    "from": sender,
                    "message_ids": ids,
                },
            )
        )
        return DeliveryReceipt(channel=name, target=target, message_ids=tuple(ids))

    async def _send_one(
        self, adapter: ChannelAdapter, target: str, message: OutboundMessage
    ) -> DeliveryReceipt:
        attempt = 0
        while True:
            try:
                with anyio.fail_after(SEND_TIMEOUT_SECONDS):
                    receipt = await adapter.send(target, message)
            except TimeoutError:
                error = ChannelError(
                    f"no answer within {SEND_TIMEOUT_SECONDS:g} s", retryable=False
                )
            except ChannelError as exc:
                error = exc
            else:
                if not receipt.message_ids:
                    raise ChannelError("the platform returned no message id")
                return receipt
            attempt += 1
            wait = error.retry_after
            if (
                not error.retryable
                or attempt >= SEND_ATTEMPTS
                or (wait is not None and wait > MAX_SEND_RETRY_AFTER)
            ):
                raise error
            await anyio.sleep(
                wait if wait is not None else SEND_BACKOFF.delay(attempt - 1, self._rng)
            )

    async def test(self, name: str, target: str | None) -> DeliveryReceipt:
        runner = self.running(name)
        with anyio.fail_after(SEND_TIMEOUT_SECONDS):
            receipt = await runner.adapter.test(target)
        runner.counters.sent += 1
        return receipt
