"""The loop guard: refuse ping-pong between the same two parties.

A send is identified by ``(from, to, sha256(content))``. When the same send has already gone
through :attr:`LoopGuard.max_repeats` times within :attr:`LoopGuard.window_seconds`, the next
one is refused (:class:`LoopDetected`, HTTP 409 ``loop_detected``) and a ``loop_detected`` bus
event is published. Refused sends are not counted, so the pair may talk again once the window
has moved past the earlier sends.
"""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from fangwire.bus import Bus, BusEvent
from fangwire.http.errors import ApiError

#: Distinct (from, to, content) keys remembered at most; the least recently used go first.
MAX_KEYS = 10_000


class LoopDetected(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(409, message, code="loop_detected")


class LoopGuard:
    def __init__(
        self,
        bus: Bus,
        *,
        max_repeats: int = 3,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.max_repeats = max_repeats
        self.window_seconds = window_seconds
        self.clock = clock
        self.checked = 0
        self.blocked = 0
        self._seen: collections.OrderedDict[tuple[str, str, str], collections.deque[float]] = (
            collections.OrderedDict()
        )

    def check(self, sender: str, target: str, content: str) -> None:
        """Record one send, or raise :class:`LoopDetected` if it repeats too often."""
        self.checked += 1
        digest = hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()
        key = (sender, target, digest)
        now = self.clock()
        times = self._seen.pop(key, None) or collections.deque()
        while times and now - times[0] > self.window_seconds:
            times.popleft()
        self._seen[key] = times
        while len(self._seen) > MAX_KEYS:
            self._seen.popitem(last=False)
        if len(times) >= self.max_repeats:
            self.blocked += 1
            self.bus.publish(
                BusEvent(
                    kind="loop_detected",
                    payload={
                        "from": sender,
                        "to": target,
                        "content_sha256": digest,
                        "repeats": len(times) + 1,
                        "window_seconds": self.window_seconds,
                    },
                )
            )
            raise LoopDetected(
                f"the same message from {sender!r} to {target!r} was sent {len(times)} times"
                f" in {self.window_seconds:g} s; refusing to continue the loop"
            )
        times.append(now)

    def probe(self) -> tuple[str, Mapping[str, Any]]:
        """The ``loop_guard`` security state."""
        details = {
            "blocked": self.blocked,
            "checked": self.checked,
            "max_repeats": self.max_repeats,
            "window_seconds": self.window_seconds,
        }
        # Registered while the comms service runs, and every send passes through the guard.
        return "active", details
