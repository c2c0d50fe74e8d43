"""Copying committed audit entries to the configured sinks.

Entries are queued after they are committed and delivered by one background task, so a slow or
failing sink never delays or breaks the chain. A failed delivery is retried with backoff; an
entry that still fails is counted and reported (``status()``), never silently lost from the
count. When the queue is full the newest entries are not queued and are counted as dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fangwire.audit import AuditEntry, AuditSink

log = logging.getLogger("fangwire.audit.sinks")

DEFAULT_BACKOFF: tuple[float, ...] = (0.2, 1.0, 5.0)


@attrs.define
class SinkStatus:
    delivered: int = 0
    failed: int = 0
    retries: int = 0
    last_error: str | None = None


class SinkDispatcher:
    """Delivers entries to every enabled sink of ``sinks()`` (looked up per entry)."""

    def __init__(
        self,
        sinks: Callable[[], Mapping[str, AuditSink]],
        *,
        config: Callable[[], object] = lambda: None,
        queue_size: int = 10_000,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
    ) -> None:
        self._sinks = sinks
        self._backoff = tuple(backoff)
        self._queue_size = queue_size
        self._config = config
        self._enabled: tuple[object, bool] | None = None
        self._send: MemoryObjectSendStream[AuditEntry] | None = None
        self._receive: MemoryObjectReceiveStream[AuditEntry] | None = None
        self._status: dict[str, SinkStatus] = {}
        self.dropped = 0
        #: Set once :meth:`run` has delivered everything queued before :meth:`close`.
        self.drained = anyio.Event()

    def open(self) -> None:
        """Create the queue; :meth:`run` then delivers from it until :meth:`close`."""
        self._send, self._receive = anyio.create_memory_object_stream[AuditEntry](self._queue_size)
        self.drained = anyio.Event()

    def submit(self, entry: AuditEntry) -> None:
        """Queue ``entry`` for delivery (never blocks)."""
        if self._send is None or not self._any_enabled():
            return
        try:
            self._send.send_nowait(entry)
        except anyio.WouldBlock:
            self.dropped += 1
            log.error("audit sink queue is full; entry %d not copied to sinks", entry.id)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.dropped += 1

    def _any_enabled(self) -> bool:
        """Whether any sink is on; worked out again only when the configuration changes."""
        config = self._config()
        cached = self._enabled
        if cached is None or cached[0] is not config or config is None:
            cached = (config, any(s.is_enabled() for s in self._sinks().values()))
            self._enabled = cached
        return cached[1]

    async def run(self) -> None:
        """Deliver queued entries until :meth:`close`; then deliver what is left."""
        receive = self._receive
        if receive is None:
            raise RuntimeError("open() the dispatcher before run()")
        try:
            async with receive:
                async for entry in receive:
                    for sink_id, sink in list(self._sinks().items()):
                        if sink.is_enabled():
                            await self._deliver(sink_id, sink, entry)
        finally:
            self.drained.set()

    def close(self) -> None:
        if self._send is not None:
            self._send.close()

    async def _deliver(self, sink_id: str, sink: AuditSink, entry: AuditEntry) -> None:
        status = self._status.setdefault(sink_id, SinkStatus())
        for attempt in range(len(self._backoff) + 1):
            try:
                await sink.emit(entry)
            except Exception as exc:
                status.last_error = f"{type(exc).__name__}: {exc}"
                if attempt < len(self._backoff):
                    status.retries += 1
                    await anyio.sleep(self._backoff[attempt])
                    continue
                status.failed += 1
                log.error("audit sink %s failed for entry %d: %s", sink_id, entry.id, exc)
                return
            status.delivered += 1
            return

    def status(self) -> dict[str, dict[str, Any]]:
        out = {sink_id: attrs.asdict(s) for sink_id, s in self._status.items()}
        for sink_id, sink in self._sinks().items():
            out.setdefault(sink_id, attrs.asdict(SinkStatus()))["enabled"] = sink.is_enabled()
        return out
