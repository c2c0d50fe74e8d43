"""GCRA: burst, steady rate, no window-edge double burst, bounded memory."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fangwire.ratelimit import GcraLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(rate=10, period=60.0, burst=None, **kw):
    clock = Clock()
    return GcraLimiter(rate=rate, period=period, burst=burst, clock=clock, **kw), clock


def test_burst_passes_then_the_next_waits_one_interval():
    gcra, clock = limiter(rate=10, period=60.0)
    assert all(gcra.check("k").allowed for _ in range(10))
    denied = gcra.check("k")
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(6.0)
    assert denied.remaining == 0
    clock.now += 6.0
    assert gcra.check("k").allowed


def test_denials_do_not_spend():
    gcra, clock = limiter(rate=2, period=10.0)
    gcra.check("k")
    gcra.check("k")
    for _ in range(100):
        assert not gcra.check("k").allowed
    clock.now += 5.0
    assert gcra.check("k").allowed


def test_cost_is_charged():
    gcra, _ = limiter(rate=100, period=60.0)
    assert gcra.check("k", 60).allowed
    assert gcra.check("k", 40).allowed
    assert not gcra.check("k", 1).allowed


def test_cost_larger_than_burst_never_passes():
    gcra, clock = limiter(rate=10, period=60.0)
    clock.now += 10_000
    assert not gcra.check("k", 11).allowed


def test_keys_are_independent():
    gcra, _ = limiter(rate=1, period=60.0)
    assert gcra.check("a").allowed
    assert not gcra.check("a").allowed
    assert gcra.check("b").allowed


def test_remaining_and_reset_after():
    gcra, _ = limiter(rate=10, period=60.0)
    first = gcra.check("k", 3)
    assert first.remaining == 7
    assert first.reset_after == pytest.approx(18.0)


def test_dry_run_does_not_spend():
    gcra, _ = limiter(rate=1, period=60.0)
    assert gcra.check("k", spend=False).allowed
    assert gcra.check("k").allowed


def test_headers():
    gcra, _ = limiter(rate=2, period=60.0)
    gcra.check("k")
    gcra.check("k")
    headers = gcra.check("k").headers()
    assert headers["RateLimit-Policy"] == '"default";q=2;w=60'
    assert headers["RateLimit"].startswith('"default";r=0;t=')
    assert headers["Retry-After"] == "30"


def test_memory_is_bounded():
    gcra, clock = limiter(rate=1, period=1.0, max_keys=100)
    for n in range(1000):
        gcra.check(f"k{n}")
    assert len(gcra) <= 100
    clock.now += 10
    gcra.check("fresh")
    assert len(gcra) <= 100


def test_invalid_settings():
    with pytest.raises(ValueError, match="positive"):
        GcraLimiter(rate=0, period=1.0)
    with pytest.raises(ValueError, match="burst"):
        GcraLimiter(rate=1, period=1.0, burst=0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(1, 50),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=200),
    window=st.floats(0.1, 30),
)
def test_never_more_than_burst_plus_rate_in_any_window(rate, burst, gaps, window):
    period = 10.0
    gcra, clock = limiter(rate=rate, period=period, burst=burst)
    interval = period / rate
    passed: list[float] = []
    for gap in gaps:
        clock.now += gap
        if gcra.check("k").allowed:
            passed.append(clock.now)
    # In any window of length w, at most burst + w/T requests pass.
    bound = burst + math.floor(window / interval) + 1
    j = 0
    for i, start in enumerate(passed):
        while passed[j] < start - window:
            j += 1
        assert i - j + 1 <= bound
