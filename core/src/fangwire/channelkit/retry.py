"""Retry, back-off and reconnect helpers shared by channel adapters.

Everything here is pure: the clock, the sleep function and the random source are injected, so
tests never wait and two adapters never share state.

- `parse_retry_after` reads an RFC 9110 ``Retry-After`` header value.
- `Backoff` computes capped exponential delays with jitter (AWS "full jitter" by default).
- `send_with_retries` re-issues an outbound HTTP call on 429, selected 5xx and transport errors.
- `ReconnectLoop` keeps a receive loop (long-poll, WebSocket gateway) alive forever.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import anyio
import attrs
import httpx

__all__ = [
    "DEFAULT_MAX_DELAY",
    "DEFAULT_RETRY_STATUSES",
    "MAX_RETRY_AFTER",
    "Backoff",
    "ReconnectLoop",
    "parse_retry_after",
    "send_with_retries",
]

log = logging.getLogger("fangwire.channelkit.retry")

MAX_RETRY_AFTER = 3600.0
"""Upper bound (seconds) for a parsed ``Retry-After``: larger values are clamped to this.

A server asking for more than an hour is either broken or has effectively banned us; clamping
keeps the arithmetic finite and the value still exceeds any sane ``max_delay``, so callers give
up and report it rather than sleeping for days.
"""

DEFAULT_MAX_DELAY = 300.0
"""Longest ``Retry-After`` (seconds) `send_with_retries` waits out before giving up."""

DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({429, 502, 503, 504})
"""Statuses retried by default. 500 is opt-in (pass ``retry_statuses``): it often means the
request itself is bad, and retrying a non-idempotent call that half-succeeded can duplicate it."""

_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_MAX_ERROR_LENGTH = 500


def _utcnow() -> datetime:
    return datetime.now(UTC)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Return the delay in seconds a ``Retry-After`` header value asks for, or None.

    Accepts delay-seconds (``"120"``; a fractional ``"1.5"`` is tolerated) and HTTP-dates in
    IMF-fixdate form as well as the obsolete RFC 850 and asctime forms. A date without a zone
    (asctime) is taken as UTC, as is a naive ``now``. A date in the past means "retry now" (0.0).
    Missing, empty, negative or unparseable values give None. Results are clamped to
    `MAX_RETRY_AFTER`.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELAY_SECONDS.fullmatch(text):
        # float() of a huge digit string is inf rather than an error; the clamp handles it.
        return min(float(text), MAX_RETRY_AFTER)
    if text[0] in "+-":
        return None  # a signed (negative) number, never a date
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _non_negative_finite(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _factor_ok(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 1):
        raise ValueError(f"{attribute.name} must be a finite number >= 1, got {value!r}")


@attrs.frozen
class Backoff:
    """Capped exponential back-off with jitter.

    The ceiling for attempt ``n`` (0-based) is ``min(cap, base * factor**n)``. With
    ``jitter="full"`` the delay is uniform in ``[0, ceiling]`` (AWS "full jitter"), with
    ``"equal"`` it is uniform in ``[ceiling/2, ceiling]``, with ``"none"`` it is the ceiling.
    """

    base: float = attrs.field(default=0.5, validator=_non_negative_finite)
    factor: float = attrs.field(default=2.0, validator=_factor_ok)
    cap: float = attrs.field(default=60.0, validator=_non_negative_finite)
    jitter: Literal["full", "equal", "none"] = attrs.field(
        default="full", validator=attrs.validators.in_(("full", "equal", "none"))
    )

    def ceiling(self, attempt: int) -> float:
        """Return the un-jittered delay for the 0-based `attempt`."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        if self.base == 0:
            return 0.0
        try:
            raw = self.base * self.factor**attempt
        except OverflowError:
            return self.cap
        return min(self.cap, raw)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Return the jittered delay (seconds) before retry number `attempt` (0-based)."""
        ceiling = self.ceiling(attempt)
        match self.jitter:
            case "full":
                value = rng.uniform(0.0, ceiling)
            case "equal":
                value = ceiling / 2 + rng.uniform(0.0, ceiling / 2)
            case "none":
                value = ceiling
        return min(max(value, 0.0), ceiling)


async def _discard(response: httpx.Response) -> None:
    """Release a response we are about to retry past (matters for streamed responses)."""
    if not response.is_closed and isinstance(response.stream, httpx.AsyncByteStream):
        await response.aclose()


async def send_with_retries(
    call: Callable[[], Awaitable[httpx.Response]],
    *,
    max_attempts: int = 4,
    backoff: Backoff,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    rng: random.Random,
    now: Callable[[], datetime] = _utcnow,
    retry_statuses: Collection[int] = DEFAULT_RETRY_STATUSES,
    max_delay: float = DEFAULT_MAX_DELAY,
) -> httpx.Response:
    """Await `call` up to `max_attempts` times, retrying transient failures.

    A response whose status is in `retry_statuses` (default 429, 502, 503, 504) is retried after
    its ``Retry-After`` delay when it has one, else after ``backoff.delay(attempt)``. If
    ``Retry-After`` exceeds `max_delay` the response is returned at once so the caller can report
    "rate limited for N s". Any other status (every other 4xx included) is returned immediately.
    `httpx.TransportError` (connect/read timeouts, resets, ...) is retried with back-off; when
    attempts run out the last one is raised. The final response is returned whatever its
    status: mapping non-2xx to a typed error is the caller's job. Other exceptions propagate.

    `call` must build a fresh request each time; only pass calls that are safe to repeat.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    if not max_delay >= 0:
        raise ValueError(f"max_delay must be >= 0, got {max_delay}")
    attempt = 0
    while True:
        last = attempt + 1 >= max_attempts
        try:
            response = await call()
        except httpx.TransportError as exc:
            if last:
                raise
            delay = backoff.delay(attempt, rng)
            log.debug("transport error %s, retrying in %.2fs", type(exc).__name__, delay)
        else:
            if response.status_code not in retry_statuses or last:
                return response
            retry_after = parse_retry_after(response.headers.get("Retry-After"), now=now())
            if retry_after is not None and retry_after > max_delay:
                return response
            delay = backoff.delay(attempt, rng) if retry_after is None else retry_after
            log.debug("HTTP %d, retrying in %.2fs", response.status_code, delay)
            await _discard(response)
        await sleep(delay)
        attempt += 1


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= _MAX_ERROR_LENGTH else text[: _MAX_ERROR_LENGTH - 3] + "..."


class ReconnectLoop:
    """Keeps a receive loop connected, backing off between sessions.

    Counters (read them for status reports):

    - ``attempts``: sessions started in total.
    - ``consecutive_failures``: sessions in a row that ended before being healthy (a session
      that stayed up `healthy_after` seconds resets the streak; its own ending counts as 1).
    - ``last_error``: ``"Type: message"`` of the exception that ended the latest session, or
      None if it returned normally (or none ended yet). Messages may carry URLs: redact before
      showing them to anyone but the operator.
    """

    def __init__(self) -> None:
        self.attempts = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None

    async def run(
        self,
        connect_and_serve: Callable[[], Awaitable[None]],
        *,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random,
        healthy_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        min_delay: float = 1.0,
    ) -> None:
        """Call `connect_and_serve` forever; only cancellation (or a BaseException) stops it.

        After each session, whether it raised an `Exception` or returned, wait
        ``max(min_delay, backoff.delay(consecutive_failures - 1))`` before reconnecting, so even
        a function that returns instantly never spins. Cancellation propagates immediately,
        without a further sleep.
        """
        if not (math.isfinite(min_delay) and min_delay > 0):
            raise ValueError(f"min_delay must be a finite number > 0, got {min_delay!r}")
        if healthy_after < 0:
            raise ValueError(f"healthy_after must be >= 0, got {healthy_after!r}")
        while True:
            self.attempts += 1
            started = clock()
            error: str | None = None
            try:
                await connect_and_serve()
            except Exception as exc:
                error = _describe(exc)
            if clock() - started >= healthy_after:
                self.consecutive_failures = 0
            self.consecutive_failures += 1
            self.last_error = error
            delay = max(min_delay, backoff.delay(self.consecutive_failures - 1, rng))
            log.info(
                "receive loop ended (%s); reconnecting in %.2fs",
                error or "returned",
                delay,
            )
            await sleep(delay)
