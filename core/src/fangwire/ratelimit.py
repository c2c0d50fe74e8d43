"""GCRA rate limiting (ITU-T I.371, virtual-scheduling form).

A limit of ``rate`` cost units per ``period`` seconds with a burst of ``burst`` units has an
emission interval ``T = period / rate``. The only state per key is the theoretical arrival time
``TAT``. A request of cost ``n`` at time ``now`` is allowed when
``max(TAT, now) + n*T - now <= burst*T``, and then moves ``TAT`` forward by ``n*T``. No more
than ``burst`` units ever pass back to back, and there is no window-edge double burst.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import attrs


@attrs.frozen
class Decision:
    """The outcome of one check, with what the HTTP rate-limit headers need."""

    allowed: bool
    limit: int
    remaining: int
    #: Seconds until the limiter is back to a full burst.
    reset_after: float
    #: Seconds to wait before this request could pass (0 when allowed).
    retry_after: float
    period: float

    def headers(self, policy: str = "default") -> dict[str, str]:
        """``RateLimit-Policy``/``RateLimit`` (draft-ietf-httpapi-ratelimit-headers) and, when
        denied, ``Retry-After`` in whole seconds, rounded up."""
        out = {
            "RateLimit-Policy": f'"{policy}";q={self.limit};w={math.ceil(self.period)}',
            "RateLimit": f'"{policy}";r={self.remaining};t={math.ceil(self.reset_after)}',
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return out


class GcraLimiter:
    """Per-key GCRA limiter held in memory.

    Thread-safe. Memory is bounded by ``max_keys``: keys whose state has fully decayed are
    forgotten first, then the least recently used.
    """

    def __init__(
        self,
        *,
        rate: int,
        period: float,
        burst: int | None = None,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or period <= 0:
            raise ValueError("rate and period must be positive")
        self.rate = rate
        self.period = period
        self.burst = burst if burst is not None else rate
        if self.burst <= 0:
            raise ValueError("burst must be positive")
        self.interval = period / rate
        self._tolerance = self.burst * self.interval
        self._max_keys = max_keys
        self._clock = clock
        self._tat: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, key: str, cost: int = 1, *, spend: bool = True) -> Decision:
        """Spend ``cost`` units for ``key`` if allowed; never spends on a denial.

        With ``spend=False`` only report whether ``cost`` units would pass now.
        """
        if cost < 0:
            raise ValueError("cost must not be negative")
        with self._lock:
            now = self._clock()
            tat = max(self._tat.get(key, now), now)
            new_tat = tat + cost * self.interval
            allowed = new_tat - now <= self._tolerance + 1e-9
            if allowed and spend:
                self._tat[key] = new_tat
                self._tat.move_to_end(key)
                self._evict(now)
                level = (new_tat if spend else tat) - now
                retry_after = 0.0
            else:
                level = tat - now
                retry_after = new_tat - self._tolerance - now
            remaining = max(0, math.floor((self._tolerance - level) / self.interval + 1e-9))
            return Decision(
                allowed=allowed,
                limit=self.burst,
                remaining=remaining,
                reset_after=level,
                retry_after=retry_after,
                period=self.period,
            )

    def reset(self, key: str) -> None:
        with self._lock:
            self._tat.pop(key, None)

    def __len__(self) -> int:
        return len(self._tat)

    def _evict(self, now: float) -> None:
        if len(self._tat) <= self._max_keys:
            return
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]
        while len(self._tat) > self._max_keys:
            self._tat.popitem(last=False)
