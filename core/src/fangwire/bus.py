"""The in-process comms bus: every message between channels, agents, peers and the API.

Publishing never blocks: each subscriber has a bounded buffer and a slow subscriber loses its
oldest events (it is told how many) rather than holding up the publisher.
"""

from __future__ import annotations

import collections
import itertools
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs

from fangwire.timeutil import rfc3339


@attrs.frozen
class BusEvent:
    """One event on the bus. ``kind`` is a dotted name such as ``channel.outbound``."""

    kind: str
    payload: Mapping[str, Any]
    id: str = attrs.field(factory=lambda: uuid.uuid4().hex)
    timestamp: str = attrs.field(factory=lambda: rfc3339(timespec="milliseconds"))


@attrs.define
class _Subscriber:
    kinds: frozenset[str] | None
    buffer: collections.deque[BusEvent]
    wakeup: anyio.Event = attrs.field(factory=anyio.Event)
    dropped: int = 0


class Subscription:
    """Events delivered to one subscriber, in publish order."""

    def __init__(self, state: _Subscriber) -> None:
        self._state = state

    @property
    def dropped(self) -> int:
        """How many events were discarded because this subscriber fell behind."""
        return self._state.dropped

    async def receive(self) -> BusEvent:
        """Wait for the next event."""
        while not self._state.buffer:
            await self._state.wakeup.wait()
            self._state.wakeup = anyio.Event()
        return self._state.buffer.popleft()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> BusEvent:
        return await self.receive()


class Bus:
    """Fan-out of :class:`BusEvent` to in-process subscribers (event-loop thread only)."""

    def __init__(self, *, buffer_size: int = 1000) -> None:
        self._buffer_size = buffer_size
        self._subscribers: dict[int, _Subscriber] = {}
        self._ids = itertools.count()

    def publish(self, event: BusEvent) -> None:
        for sub in self._subscribers.values():
            if sub.kinds is not None and event.kind not in sub.kinds:
                continue
            if len(sub.buffer) == sub.buffer.maxlen:
                sub.dropped += 1
            sub.buffer.append(event)
            sub.wakeup.set()

    @asynccontextmanager
    async def subscribe(self, *kinds: str) -> AsyncIterator[Subscription]:
        """Receive events of the given kinds (all kinds when none are named) while inside."""
        key = next(self._ids)
        state = _Subscriber(
            kinds=frozenset(kinds) or None,
            buffer=collections.deque(maxlen=self._buffer_size),
        )
        self._subscribers[key] = state
        try:
            yield Subscription(state)
        finally:
            del self._subscribers[key]

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
