"""Fan-out of live, redacted log records to async subscribers (the ``/api/logs/stream`` backend).

A :class:`LogHub` owns a :class:`logging.Handler` (:attr:`LogHub.handler`) to attach to loggers.
Each record it receives is redacted into a :class:`~fangwire.logs.records.LogRecordView`, stamped
with a process-wide sequence number, kept in a bounded backlog ring and, while the hub is running,
offered to every :class:`Subscription` whose filter accepts it.

Threading contract: records may be emitted from any thread. The emitting thread only appends to
bounded in-memory buffers under a short lock and never blocks on consumers; consumers are woken on
the hub's event loop (captured by :meth:`LogHub.start`) directly when the record was emitted on the
loop thread, and through ``loop.call_soon_threadsafe`` otherwise. Subscriptions must be consumed
on that loop. The hub is asyncio-only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Final

import attrs

from fangwire.logs.records import (
    HUB_LOGGER,
    LogRecordView,
    Scrubber,
    build_view,
    format_timestamp,
    level_number,
    next_seq,
)

__all__ = ["LogHub", "Subscription", "TooManySubscribers"]

_DEFAULT_LEVEL: Final = "info"

# Set while this thread is inside LogHub._publish, so a record logged during delivery (by the
# redactor, by asyncio, ...) is ignored instead of re-entering the hub.
_delivering = threading.local()


class TooManySubscribers(RuntimeError):
    """Raised by :meth:`LogHub.subscribe` when ``max_subscribers`` streams are already open."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"too many log stream subscribers (limit {limit})")
        self.limit = limit


@attrs.frozen
class _Filter:
    levelno: int
    needle: str | None  # case-folded, or None for "match everything"

    @classmethod
    def create(cls, level: str, contains: str | None) -> _Filter:
        return cls(level_number(level), contains.casefold() if contains else None)

    def matches(self, view: LogRecordView) -> bool:
        if level_number(view.level) < self.levelno:
            return False
        return self.needle is None or self.needle in view.search_text()


def _is_hub_logger(name: str) -> bool:
    return name == HUB_LOGGER or name.startswith(HUB_LOGGER + ".")


def _gap_record(dropped: int, seq: int) -> LogRecordView:
    noun = "record" if dropped == 1 else "records"
    return LogRecordView(
        seq=seq,
        timestamp=format_timestamp(time.time()),
        level="warning",
        logger=HUB_LOGGER,
        message=f"{dropped} log {noun} dropped: consumer too slow",
        fields={"dropped": dropped},
    )


class Subscription:
    """One live log stream: async iterator of :class:`LogRecordView` and async context manager.

    Create with :meth:`LogHub.subscribe`. Records arrive in ``seq`` order. At most ``queue_size``
    records are buffered; when a record arrives at a full buffer the oldest is dropped, and the
    next item yielded is a synthetic gap record (level ``warning``, logger ``fangwire.logs``,
    ``fields={"dropped": N}``, ``seq`` = that of the last dropped record) followed by the records
    still buffered. Gap records are yielded whatever the filter.

    Iteration ends (``StopAsyncIteration``) once the subscription is closed: by :meth:`aclose`,
    by leaving ``async with``, or by :meth:`LogHub.stop`; records still buffered are discarded.
    Always close a subscription (prefer ``async with``): an abandoned one keeps its slot.

    Records logged by the task that consumes an open subscription are not streamed to any
    subscriber (they still reach the other handlers, e.g. stderr): this is what keeps a consumer
    that logs while handling records from feeding on its own output.
    """

    def __init__(self, hub: LogHub, log_filter: _Filter, queue_size: int) -> None:
        # All mutable state below is guarded by hub._lock, except _event (loop thread only).
        self._hub = hub
        self._filter = log_filter
        self._queue_size = queue_size
        self._buffer: deque[LogRecordView] = deque()
        self._dropped = 0
        self._last_dropped_seq = 0
        self._closed = False
        self._wake_pending = False
        self._consumer: asyncio.Task[object] | None = None
        self._event = asyncio.Event()

    @property
    def pending(self) -> int:
        """Number of records buffered and not yet yielded (never more than ``queue_size``)."""
        with self._hub._lock:
            return len(self._buffer)

    @property
    def closed(self) -> bool:
        """Whether the subscription has ended."""
        with self._hub._lock:
            return self._closed

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> LogRecordView:
        """Wait for and return the next record (or gap record); raise at close."""
        task = asyncio.current_task()
        while True:
            self._event.clear()
            with self._hub._lock:
                if self._closed:
                    self._consumer = None
                    raise StopAsyncIteration
                if task is not None:
                    self._consumer = task
                if self._dropped:
                    gap = _gap_record(self._dropped, self._last_dropped_seq)
                    self._dropped = 0
                    return gap
                if self._buffer:
                    return self._buffer.popleft()
            await self._event.wait()

    async def aclose(self) -> None:
        """Unsubscribe and end iteration (idempotent). Buffered records are discarded."""
        self._hub._unsubscribe(self)
        self._event.set()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- called by LogHub with hub._lock held -------------------------------------------------

    def _push(self, view: LogRecordView) -> None:
        if len(self._buffer) >= self._queue_size:
            self._last_dropped_seq = self._buffer.popleft().seq
            self._dropped += 1
        self._buffer.append(view)

    def _close_locked(self) -> None:
        self._closed = True
        self._buffer.clear()
        self._dropped = 0
        self._consumer = None


class _HubHandler(logging.Handler):
    """The :class:`logging.Handler` face of a :class:`LogHub`."""

    def __init__(self, hub: LogHub) -> None:
        super().__init__()
        self._hub = hub

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._hub._publish(record)
        except Exception:
            self.handleError(record)


class LogHub:
    """Collects redacted log records and fans them out to at most ``max_subscribers`` streams.

    ``queue_size`` bounds each subscription's buffer, ``backlog`` the ring of recent records kept
    for :meth:`recent` and :meth:`since` (records are kept there even while the hub is stopped).
    Attach :attr:`handler` to the loggers to stream (see ``configure_logging``), ``await start()``
    on the event loop that will consume the streams, and ``await stop()`` at shutdown; ``async
    with hub:`` does both. A stopped hub may be started again.

    Records from the ``fangwire.logs`` logger, records logged while the hub is delivering, and
    records logged by a task consuming an open subscription are ignored entirely (not streamed,
    not kept in the backlog).
    """

    def __init__(
        self,
        redactor: Scrubber,
        *,
        max_subscribers: int = 8,
        queue_size: int = 1000,
        backlog: int = 200,
    ) -> None:
        if max_subscribers < 1:
            raise ValueError(f"max_subscribers must be at least 1, got {max_subscribers!r}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size!r}")
        if backlog < 0:
            raise ValueError(f"backlog must not be negative, got {backlog!r}")
        self._redactor = redactor
        self._max_subscribers = max_subscribers
        self._queue_size = queue_size
        self._lock = threading.Lock()
        self._ring: deque[LogRecordView] = deque(maxlen=backlog)
        self._subs: list[Subscription] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._handler = _HubHandler(self)

    @property
    def handler(self) -> logging.Handler:
        """The handler feeding this hub; attach it to loggers (its level is ``NOTSET``)."""
        return self._handler

    @property
    def subscriber_count(self) -> int:
        """Number of open subscriptions."""
        with self._lock:
            return len(self._subs)

    @property
    def running(self) -> bool:
        """Whether records are currently delivered to subscribers (between start and stop)."""
        with self._lock:
            return self._loop is not None

    async def start(self) -> None:
        """Start delivering to subscribers on the running event loop (idempotent on that loop).

        Raises :class:`RuntimeError` if the hub is already running on a different loop.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not None and self._loop is not loop:
                raise RuntimeError("LogHub is already running on another event loop")
            self._loop = loop
            self._loop_thread = threading.get_ident()
            for sub in self._subs:
                sub._wake_pending = False

    async def stop(self) -> None:
        """Stop delivering and end every open subscription (idempotent).

        Their iterators finish; records logged from now on only go to the backlog.
        """
        with self._lock:
            loop = self._loop
            self._loop = None
            self._loop_thread = None
            subs, self._subs = self._subs, []
            for sub in subs:
                sub._close_locked()
        current = asyncio.get_running_loop()
        for sub in subs:
            if loop is None or loop is current:
                sub._event.set()
            else:  # pragma: no cover - stop() awaited on a foreign loop
                self._call_threadsafe(loop, sub._event.set)

    async def __aenter__(self) -> LogHub:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def subscribe(
        self,
        level: str = _DEFAULT_LEVEL,
        contains: str | None = None,
        *,
        since: int | None = None,
        recent: int = 0,
    ) -> Subscription:
        """Open a live stream of records at ``level`` or above whose text contains ``contains``.

        ``contains`` is matched case-insensitively against message, logger name and the JSON of
        the fields. To start with context, either ``since=seq`` pre-queues the backlog records
        with a greater ``seq`` (``Last-Event-ID`` resume) or ``recent=n`` the last ``n`` matching
        backlog records; this happens atomically with subscribing, so nothing is duplicated or
        missed between replay and live records. Raises :class:`ValueError` for an unknown level
        or when both ``since`` and ``recent`` are given, and :class:`TooManySubscribers` when
        ``max_subscribers`` subscriptions are open. Records are only delivered while the hub runs.
        """
        log_filter = _Filter.create(level, contains)
        if since is not None and recent:
            raise ValueError("give either since or recent, not both")
        with self._lock:
            if len(self._subs) >= self._max_subscribers:
                raise TooManySubscribers(self._max_subscribers)
            sub = Subscription(self, log_filter, self._queue_size)
            if since is not None:
                replay = [v for v in self._ring if v.seq > since and log_filter.matches(v)]
            else:
                replay = self._select(log_filter, recent)
            for view in replay:
                sub._push(view)
            self._subs.append(sub)
        return sub

    def recent(
        self, limit: int, level: str = _DEFAULT_LEVEL, contains: str | None = None
    ) -> list[LogRecordView]:
        """Return up to ``limit`` of the newest backlog records passing the filter, oldest first."""
        log_filter = _Filter.create(level, contains)
        with self._lock:
            return self._select(log_filter, limit)

    def since(
        self, seq: int, level: str = _DEFAULT_LEVEL, contains: str | None = None
    ) -> list[LogRecordView]:
        """Return backlog records newer than ``seq`` that pass the filter, oldest first.

        Records that already left the ring are not returned; compare the first ``seq`` with
        ``seq + 1`` (or look at :meth:`recent`) to detect such a gap.
        """
        log_filter = _Filter.create(level, contains)
        with self._lock:
            return [v for v in self._ring if v.seq > seq and log_filter.matches(v)]

    # --- internals ----------------------------------------------------------------------------

    def _select(self, log_filter: _Filter, limit: int) -> list[LogRecordView]:
        """Newest ``limit`` matching ring records, oldest first. Caller holds the lock."""
        if limit <= 0:
            return []
        picked: list[LogRecordView] = []
        for view in reversed(self._ring):
            if log_filter.matches(view):
                picked.append(view)
                if len(picked) >= limit:
                    break
        picked.reverse()
        return picked

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
            sub._close_locked()

    def _consumer_is_logging(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the current task consumes an open subscription. Caller holds the lock."""
        task = asyncio.current_task(loop)
        return task is not None and any(sub._consumer is task for sub in self._subs)

    def _publish(self, record: logging.LogRecord) -> None:
        if _is_hub_logger(record.name) or getattr(_delivering, "active", False):
            return
        _delivering.active = True
        try:
            with self._lock:
                loop = self._loop
                if (
                    loop is not None
                    and threading.get_ident() == self._loop_thread
                    and self._consumer_is_logging(loop)
                ):
                    return
            proto = build_view(record, self._redactor)  # redaction runs outside the lock
            wake_now: list[Subscription] = []
            wake_later: list[Subscription] = []
            with self._lock:
                view = LogRecordView(
                    seq=next_seq(),
                    timestamp=proto.timestamp,
                    level=proto.level,
                    logger=proto.logger,
                    message=proto.message,
                    fields=proto.fields,
                )
                self._ring.append(view)
                loop = self._loop
                if loop is None or loop.is_closed():
                    return
                on_loop = threading.get_ident() == self._loop_thread
                levelno = level_number(view.level)
                text: str | None = None
                for sub in self._subs:
                    wanted = sub._filter
                    if levelno < wanted.levelno:
                        continue
                    if wanted.needle is not None:
                        if text is None:
                            text = view.search_text()
                        if wanted.needle not in text:
                            continue
                    sub._push(view)
                    if on_loop:
                        wake_now.append(sub)
                    elif not sub._wake_pending:
                        sub._wake_pending = True
                        wake_later.append(sub)
            for sub in wake_now:
                sub._event.set()
            if wake_later and not self._call_threadsafe(loop, self._wake, wake_later):
                with self._lock:
                    for sub in wake_later:
                        sub._wake_pending = False
        finally:
            _delivering.active = False

    def _wake(self, subs: list[Subscription]) -> None:
        """Runs on the hub loop: wake consumers woken from another thread."""
        with self._lock:
            for sub in subs:
                sub._wake_pending = False
        for sub in subs:
            sub._event.set()

    @staticmethod
    def _call_threadsafe(
        loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object
    ) -> bool:
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is left to wake
            return False
        return True
