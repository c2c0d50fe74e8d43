"""Tests for fangwire.channelkit.retry: no real waiting, fake sleep/clock/rng throughout."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fangwire.channelkit.retry import (
    MAX_RETRY_AFTER,
    Backoff,
    ReconnectLoop,
    parse_retry_after,
    send_with_retries,
)

NOW = datetime(1994, 11, 6, 8, 49, 0, tzinfo=UTC)
REQUEST = httpx.Request("POST", "https://chat.example/api/send")


class FakeTime:
    """A fake clock whose sleep records the delay, advances the clock and yields."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return NOW + timedelta(seconds=self.now)

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        self.now += delay
        await anyio.lowlevel.checkpoint()


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=REQUEST)


class Script:
    """A `call` that plays back responses/exceptions in order and counts calls."""

    def __init__(self, *outcomes: httpx.Response | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> httpx.Response:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


# --- parse_retry_after ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2.0),
        ("  120 ", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 37.0),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:49:37 GMT", 37.0),  # obsolete RFC 850
        ("Sun Nov  6 08:49:37 1994", 37.0),  # obsolete asctime (no zone: UTC)
        ("Sun, 06 Nov 1994 08:48:00 GMT", 0.0),  # in the past: retry now
        ("Sun, 06 Nov 1994 10:49:00 GMT", MAX_RETRY_AFTER),  # two hours: clamped
        ("99999", MAX_RETRY_AFTER),
        ("9" * 5000, MAX_RETRY_AFTER),
    ],
)
def test_parse_retry_after_valid(value: str, expected: float) -> None:
    assert parse_retry_after(value, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "-1",
        "-0.5",
        "+5",
        "soon",
        "12abc",
        "1.5.5",
        "Sun, 99 Foo 1994 08:49:37 GMT",
    ],
)
def test_parse_retry_after_rejects(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_naive_now_is_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now=naive) == pytest.approx(37.0)


# --- Backoff --------------------------------------------------------------------------------


@given(
    base=st.floats(0, 10),
    factor=st.floats(1, 10),
    cap=st.floats(0, 1000),
    jitter=st.sampled_from(["full", "equal", "none"]),
    attempt=st.integers(0, 5000),
    seed=st.integers(0, 2**32),
)
def test_backoff_delay_within_bounds(
    base: float, factor: float, cap: float, jitter: str, attempt: int, seed: int
) -> None:
    backoff = Backoff(base=base, factor=factor, cap=cap, jitter=jitter)  # type: ignore[arg-type]
    delay = backoff.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= cap
    assert delay <= backoff.ceiling(attempt)


def test_backoff_no_jitter_is_capped_exponential() -> None:
    backoff = Backoff(base=0.5, factor=2.0, cap=3.0, jitter="none")
    rng = random.Random(0)
    assert [backoff.delay(n, rng) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_equal_jitter_keeps_lower_half() -> None:
    backoff = Backoff(base=4.0, factor=2.0, cap=60.0, jitter="equal")
    rng = random.Random(1)
    for _ in range(100):
        assert 2.0 <= backoff.delay(0, rng) <= 4.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": -1.0},
        {"base": float("nan")},
        {"factor": 0.5},
        {"factor": float("inf")},
        {"cap": -1.0},
        {"jitter": "sometimes"},
    ],
)
def test_backoff_validates(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_backoff_rejects_negative_attempt() -> None:
    with pytest.raises(ValueError):
        Backoff().delay(-1, random.Random(0))


# --- send_with_retries ----------------------------------------------------------------------


async def send(script: Script, fake: FakeTime, **kwargs: object) -> httpx.Response:
    return await send_with_retries(
        script,
        backoff=Backoff(base=1.0, factor=2.0, cap=10.0, jitter="none"),
        sleep=fake.sleep,
        rng=random.Random(0),
        now=fake.wall,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.anyio
async def test_429_with_retry_after_sleeps_that_long() -> None:
    fake = FakeTime()
    script = Script(response(429, {"Retry-After": "2"}), response(200))
    result = await send(script, fake)
    assert result.status_code == 200
    assert script.calls == 2
    assert fake.slept == [2.0]


@pytest.mark.anyio
async def test_retry_after_http_date_is_relative_to_now() -> None:
    fake = FakeTime()
    script = Script(response(503, {"Retry-After": "Sun, 06 Nov 1994 08:49:05 GMT"}), response(200))
    assert (await send(script, fake)).status_code == 200
    assert fake.slept == [pytest.approx(5.0)]


@pytest.mark.anyio
async def test_503_three_times_then_200() -> None:
    fake = FakeTime()
    script = Script(response(503), response(503), response(503), response(200))
    result = await send(script, fake)
    assert result.status_code == 200
    assert script.calls == 4
    assert fake.slept == [1.0, 2.0, 4.0]


@pytest.mark.anyio
async def test_full_jitter_delays_within_growing_caps() -> None:
    fake = FakeTime()
    script = Script(response(502), response(504), response(503), response(200))
    backoff = Backoff(base=1.0, factor=2.0, cap=3.0)
    result = await send_with_retries(
        script, backoff=backoff, sleep=fake.sleep, rng=random.Random(7), now=fake.wall
    )
    assert result.status_code == 200
    assert len(fake.slept) == 3
    for attempt, delay in enumerate(fake.slept):
        assert 0.0 <= delay <= min(3.0, 2.0**attempt)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500, 501])
async def test_no_retry_on_client_errors_and_unlisted_statuses(status: int) -> None:
    fake = FakeTime()
    script = Script(response(status), response(200))
    result = await send(script, fake)
    assert result.status_code == status
    assert script.calls == 1
    assert fake.slept == []


@pytest.mark.anyio
async def test_500_retried_when_configured() -> None:
    fake = FakeTime()
    script = Script(response(500), response(200))
    result = await send(script, fake, retry_statuses={429, 500, 502, 503, 504})
    assert result.status_code == 200
    assert script.calls == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("refused", request=REQUEST),
        httpx.ReadTimeout("slow", request=REQUEST),
        httpx.RemoteProtocolError("reset", request=REQUEST),
    ],
)
async def test_transport_error_then_success(error: httpx.TransportError) -> None:
    fake = FakeTime()
    script = Script(error, response(200))
    result = await send(script, fake)
    assert result.status_code == 200
    assert script.calls == 2
    assert fake.slept == [1.0]


@pytest.mark.anyio
async def test_transport_errors_exhaust_attempts_and_raise_last() -> None:
    fake = FakeTime()
    last = httpx.ReadTimeout("third", request=REQUEST)
    script = Script(
        httpx.ConnectError("first", request=REQUEST),
        httpx.ConnectTimeout("second", request=REQUEST),
        last,
    )
    with pytest.raises(httpx.ReadTimeout) as info:
        await send(script, fake, max_attempts=3)
    assert info.value is last
    assert script.calls == 3
    assert fake.slept == [1.0, 2.0]


@pytest.mark.anyio
async def test_other_exceptions_are_not_retried() -> None:
    fake = FakeTime()
    script = Script(ValueError("bug"), response(200))
    with pytest.raises(ValueError, match="bug"):
        await send(script, fake)
    assert script.calls == 1


@pytest.mark.anyio
async def test_gives_up_at_once_when_retry_after_exceeds_max_delay() -> None:
    fake = FakeTime()
    script = Script(response(429, {"Retry-After": "301"}), response(200))
    result = await send(script, fake)
    assert result.status_code == 429
    assert result.headers["Retry-After"] == "301"
    assert script.calls == 1
    assert fake.slept == []


@pytest.mark.anyio
async def test_max_delay_is_configurable() -> None:
    fake = FakeTime()
    script = Script(response(429, {"Retry-After": "20"}), response(200))
    assert (await send(script, fake, max_delay=10.0)).status_code == 429
    script = Script(response(429, {"Retry-After": "20"}), response(200))
    assert (await send(script, fake, max_delay=20.0)).status_code == 200
    assert fake.slept == [20.0]


@pytest.mark.anyio
async def test_garbage_retry_after_falls_back_to_backoff() -> None:
    fake = FakeTime()
    script = Script(response(429, {"Retry-After": "soon"}), response(200))
    assert (await send(script, fake)).status_code == 200
    assert fake.slept == [1.0]


@pytest.mark.anyio
@pytest.mark.parametrize("max_attempts", [1, 2, 4, 6])
async def test_attempts_are_bounded(max_attempts: int) -> None:
    fake = FakeTime()
    script = Script(response(503))
    result = await send(script, fake, max_attempts=max_attempts)
    assert result.status_code == 503
    assert script.calls == max_attempts
    assert len(fake.slept) == max_attempts - 1


@pytest.mark.anyio
async def test_invalid_arguments() -> None:
    fake = FakeTime()
    with pytest.raises(ValueError):
        await send(Script(response(200)), fake, max_attempts=0)
    with pytest.raises(ValueError):
        await send(Script(response(200)), fake, max_delay=-1.0)


# --- ReconnectLoop --------------------------------------------------------------------------


class Stop(Exception):
    """Raised by a fake sleep to end an otherwise endless loop."""


def stopping_sleep(fake: FakeTime, after: int) -> Callable[[float], Awaitable[None]]:
    async def sleep(delay: float) -> None:
        await fake.sleep(delay)
        if len(fake.slept) >= after:
            raise Stop

    return sleep


@pytest.mark.anyio
async def test_reconnect_failures_back_off_exponentially_with_cap() -> None:
    fake = FakeTime()
    loop = ReconnectLoop()

    async def failing() -> None:
        raise ConnectionError("gateway down")

    with pytest.raises(Stop):
        await loop.run(
            failing,
            backoff=Backoff(base=1.0, factor=2.0, cap=8.0, jitter="none"),
            sleep=stopping_sleep(fake, 6),
            rng=random.Random(0),
            clock=fake.clock,
            min_delay=0.5,
        )
    assert fake.slept == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert loop.attempts == 6
    assert loop.consecutive_failures == 6
    assert loop.last_error == "ConnectionError: gateway down"


@pytest.mark.anyio
async def test_reconnect_jittered_delays_stay_within_cap() -> None:
    fake = FakeTime()

    async def failing() -> None:
        raise OSError

    with pytest.raises(Stop):
        await ReconnectLoop().run(
            failing,
            backoff=Backoff(base=1.0, factor=2.0, cap=5.0),
            sleep=stopping_sleep(fake, 20),
            rng=random.Random(3),
            clock=fake.clock,
            min_delay=0.25,
        )
    assert all(0.25 <= d <= 5.0 for d in fake.slept)


@pytest.mark.anyio
async def test_reconnect_resets_after_healthy_period() -> None:
    fake = FakeTime()
    loop = ReconnectLoop()
    uptimes = iter([0.0, 0.0, 0.0, 45.0, 0.0, 0.0])

    async def session() -> None:
        fake.now += next(uptimes)  # the connection "stays up" this long
        raise ConnectionResetError("reset by peer")

    with pytest.raises(Stop):
        await loop.run(
            session,
            backoff=Backoff(base=1.0, factor=2.0, cap=60.0, jitter="none"),
            sleep=stopping_sleep(fake, 6),
            rng=random.Random(0),
            healthy_after=30.0,
            clock=fake.clock,
        )
    # Three quick failures grow the delay; the healthy session resets it to the base.
    assert fake.slept == [1.0, 2.0, 4.0, 1.0, 2.0, 4.0]
    assert loop.consecutive_failures == 3
    assert loop.attempts == 6


@pytest.mark.anyio
async def test_immediate_return_still_waits_min_delay() -> None:
    fake = FakeTime()
    loop = ReconnectLoop()
    loop.last_error = "stale"

    async def returns_at_once() -> None:
        return None

    with pytest.raises(Stop):
        await loop.run(
            returns_at_once,
            backoff=Backoff(base=0.0, factor=1.0, cap=0.0),
            sleep=stopping_sleep(fake, 5),
            rng=random.Random(0),
            clock=fake.clock,
            min_delay=0.75,
        )
    assert fake.slept == [0.75] * 5
    assert loop.last_error is None


@pytest.mark.anyio
async def test_cancellation_during_session_stops_without_sleeping() -> None:
    fake = FakeTime()
    loop = ReconnectLoop()
    calls = 0

    async def serve() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("flaky")
        await anyio.sleep_forever()

    with anyio.move_on_after(0.05) as scope:
        await loop.run(
            serve,
            backoff=Backoff(),
            sleep=fake.sleep,
            rng=random.Random(0),
            clock=fake.clock,
        )
    assert scope.cancelled_caught
    assert calls == 3
    assert len(fake.slept) == 2  # no extra sleep after the cancellation
    assert loop.attempts == 3


@pytest.mark.anyio
async def test_cancellation_during_backoff_sleep_propagates() -> None:
    fake = FakeTime()
    loop = ReconnectLoop()

    async def failing() -> None:
        raise ConnectionError("down")

    async def sleep(delay: float) -> None:
        await fake.sleep(delay)
        if len(fake.slept) == 2:
            await anyio.sleep_forever()

    with anyio.move_on_after(0.05) as scope:
        await loop.run(failing, backoff=Backoff(), sleep=sleep, rng=random.Random(0))
    assert scope.cancelled_caught
    assert loop.attempts == 2
    assert len(fake.slept) == 2


@pytest.mark.anyio
async def test_reconnect_validates_arguments() -> None:
    async def noop() -> None:
        return None

    with pytest.raises(ValueError):
        await ReconnectLoop().run(noop, backoff=Backoff(), rng=random.Random(0), min_delay=0.0)
    with pytest.raises(ValueError):
        await ReconnectLoop().run(noop, backoff=Backoff(), rng=random.Random(0), healthy_after=-1)
