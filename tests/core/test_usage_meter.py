"""Tests of the usage meter (fangwire.usage.meter) on a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest

from fangwire.models import Usage
from fangwire.store import SQLiteStore
from fangwire.usage import USAGE_MIGRATIONS, ModelCatalog, UsageMeter

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 3, 15, 12, 30, 0, tzinfo=UTC)


class Clock:
    """A settable clock for the meter."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "db") as s:
        await s.migrate(USAGE_MIGRATIONS)
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def meter(store: SQLiteStore, clock: Clock) -> UsageMeter:
    return UsageMeter(store, ModelCatalog(), clock=clock)


# Fallback-priced ($1/M in, $3/M out): 1000 in + 1000 out costs $0.004.
UNIT = Usage(input_tokens=1000, output_tokens=1000)
UNIT_COST = 0.004


async def _at(
    meter: UsageMeter,
    clock: Clock,
    when: datetime,
    *,
    agent: str | None = "a1",
    usage: Usage = UNIT,
    provider: str = "test",
    model: str = "m",
) -> None:
    saved = clock.now
    clock.now = when
    try:
        await meter.record(
            agent_id=agent, provider=provider, model=model, usage=usage, latency_ms=5.0
        )
    finally:
        clock.now = saved


# -- record --------------------------------------------------------------------------------


async def test_record_prices_and_stores_one_row(meter: UsageMeter, store: SQLiteStore) -> None:
    usage = Usage(input_tokens=1000, output_tokens=200, cached_tokens=400)
    event = await meter.record(
        agent_id="agent-1",
        provider="openai",
        model="gpt-4o",
        usage=usage,
        latency_ms=123.5,
        channel="telegram",
    )
    expected = (600 * 2.5 + 400 * 1.25 + 200 * 10.0) / 1e6
    assert event.cost_usd == pytest.approx(expected)
    assert event.known_price
    assert event.timestamp == NOW
    assert event.usage == usage
    rows = await store.fetch_all("SELECT * FROM usage_events")
    assert rows == [
        {
            "id": event.id,
            "timestamp": "2025-03-15T12:30:00.000000Z",
            "day": "2025-03-15",
            "hour": "2025-03-15T12:00:00Z",
            "agent_id": "agent-1",
            "provider": "openai",
            "model": "gpt-4o",
            "channel": "telegram",
            "input_tokens": 1000,
            "output_tokens": 200,
            "cached_tokens": 400,
            "cost_usd": pytest.approx(expected),
            "latency_ms": 123.5,
            "known_price": 1,
        }
    ]
    as_dict = event.to_dict()
    assert as_dict["timestamp"] == "2025-03-15T12:30:00.000000Z"
    assert as_dict["cost_usd"] == round(expected, 6)


async def test_unknown_model_and_echo_use_the_fallback(meter: UsageMeter) -> None:
    event = await meter.record(
        agent_id=None, provider="echo", model="echo", usage=UNIT, latency_ms=0
    )
    assert not event.known_price
    assert event.cost_usd == pytest.approx(UNIT_COST)
    assert event.agent_id is None
    assert event.channel is None


async def test_clock_in_another_timezone_is_converted(store: SQLiteStore) -> None:
    plus2 = timezone(timedelta(hours=2))
    meter = UsageMeter(
        store, ModelCatalog(), clock=lambda: datetime(2025, 3, 16, 1, 0, tzinfo=plus2)
    )
    event = await meter.record(agent_id="a", provider="p", model="m", usage=UNIT, latency_ms=1)
    assert event.timestamp == datetime(2025, 3, 15, 23, 0, tzinfo=UTC)
    row = await store.fetch_one("SELECT day, hour FROM usage_events")
    assert row == {"day": "2025-03-15", "hour": "2025-03-15T23:00:00Z"}


async def test_record_rejects_bad_input(store: SQLiteStore, meter: UsageMeter) -> None:
    with pytest.raises(ValueError, match="latency_ms"):
        await meter.record(agent_id="a", provider="p", model="m", usage=UNIT, latency_ms=-1)
    with pytest.raises(ValueError, match="latency_ms"):
        await meter.record(
            agent_id="a", provider="p", model="m", usage=UNIT, latency_ms=float("nan")
        )
    with pytest.raises(ValueError, match="non-empty"):
        await meter.record(agent_id="a", provider="", model="m", usage=UNIT, latency_ms=1)
    with pytest.raises(ValueError, match="negative"):
        await meter.record(
            agent_id="a", provider="p", model="m", usage=Usage(output_tokens=-5), latency_ms=1
        )
    naive = UsageMeter(store, ModelCatalog(), clock=lambda: datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        await naive.record(agent_id="a", provider="p", model="m", usage=UNIT, latency_ms=1)
    assert await store.fetch_all("SELECT id FROM usage_events") == []


async def test_overrides_apply_to_recorded_cost(store: SQLiteStore, clock: Clock) -> None:
    catalog = ModelCatalog({"echo/echo": {"input_per_million": 0, "output_per_million": 0}})
    meter = UsageMeter(store, catalog, clock=clock)
    event = await meter.record(
        agent_id="a", provider="echo", model="echo", usage=UNIT, latency_ms=1
    )
    assert event.known_price
    assert event.cost_usd == 0.0


# -- totals --------------------------------------------------------------------------------


async def _spread(meter: UsageMeter, clock: Clock) -> None:
    """Events around NOW = 2025-03-15T12:30Z."""
    await _at(meter, clock, NOW - timedelta(minutes=10), agent="a1")  # hour, day, week, month
    await _at(meter, clock, NOW - timedelta(minutes=59), agent="a2")  # hour, day, ...
    await _at(meter, clock, NOW - timedelta(hours=2), agent="a1")  # day, week, month
    await _at(meter, clock, datetime(2025, 3, 15, 0, 0, tzinfo=UTC), agent=None)  # day, ...
    await _at(meter, clock, datetime(2025, 3, 14, 23, 59, tzinfo=UTC), agent="a3")  # week
    await _at(meter, clock, datetime(2025, 3, 9, 0, 0, tzinfo=UTC), agent="a3")  # week
    await _at(meter, clock, datetime(2025, 3, 8, 23, 59, tzinfo=UTC), agent="a4")  # month
    await _at(meter, clock, datetime(2025, 3, 1, 0, 0, tzinfo=UTC), agent="a4")  # month
    await _at(meter, clock, datetime(2025, 2, 28, 23, 59, tzinfo=UTC), agent="a5")  # none
    await _at(meter, clock, NOW + timedelta(minutes=5), agent="a1")  # hour, day, ... (skew)


@pytest.mark.parametrize(
    ("period", "requests", "agents"),
    [("hour", 3, 2), ("day", 5, 2), ("week", 7, 3), ("month", 9, 4)],
)
async def test_totals_per_period(
    meter: UsageMeter, clock: Clock, period: str, requests: int, agents: int
) -> None:
    await _spread(meter, clock)
    totals = await meter.totals(period)  # type: ignore[arg-type]
    assert totals == {
        "period": period,
        "total_input_tokens": 1000 * requests,
        "total_output_tokens": 1000 * requests,
        "total_cost_usd": round(UNIT_COST * requests, 6),
        "request_count": requests,
        "active_agents": agents,
    }


async def test_totals_default_to_day_and_are_zero_when_empty(meter: UsageMeter) -> None:
    assert await meter.totals() == {
        "period": "day",
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "total_cost_usd": 0.0,
        "request_count": 0,
        "active_agents": 0,
    }


async def test_totals_reject_unknown_period(meter: UsageMeter) -> None:
    with pytest.raises(ValueError, match="period"):
        await meter.totals("year")  # type: ignore[arg-type]


async def test_month_and_week_across_a_month_boundary(meter: UsageMeter, clock: Clock) -> None:
    await _at(meter, clock, datetime(2025, 3, 31, 23, 30, tzinfo=UTC))
    await _at(meter, clock, datetime(2025, 4, 1, 0, 5, tzinfo=UTC))
    clock.now = datetime(2025, 4, 1, 0, 10, tzinfo=UTC)
    assert (await meter.totals("month"))["request_count"] == 1
    assert (await meter.totals("week"))["request_count"] == 2
    assert (await meter.totals("hour"))["request_count"] == 2  # rolling 60 minutes
    assert (await meter.totals("day"))["request_count"] == 1


async def test_money_is_rounded_to_six_decimals(meter: UsageMeter) -> None:
    for _ in range(3):
        await meter.record(
            agent_id="a", provider="p", model="m", usage=Usage(input_tokens=1), latency_ms=1
        )
    totals = await meter.totals("day")
    assert totals["total_cost_usd"] == 0.000003
    assert len(repr(totals["total_cost_usd"]).split(".")[-1].split("e")[0]) <= 6


# -- summary -------------------------------------------------------------------------------


async def test_summary(meter: UsageMeter, clock: Clock) -> None:
    await _at(meter, clock, datetime(2025, 3, 15, 12, 0, tzinfo=UTC))  # this clock hour
    await _at(meter, clock, datetime(2025, 3, 15, 12, 29, tzinfo=UTC), usage=Usage(500, 250, 100))
    await _at(meter, clock, datetime(2025, 3, 15, 11, 59, tzinfo=UTC))  # previous hour
    await _at(meter, clock, datetime(2025, 3, 14, 12, 10, tzinfo=UTC))  # yesterday, same hour
    summary = await meter.summary(hourly_token_limit=100_000)
    today_cost = 2 * UNIT_COST + (500 * 1 + 250 * 3) / 1e6
    assert summary == {
        "today": {
            "input_tokens": 2500,
            "output_tokens": 2250,
            "cost_usd": round(today_cost, 6),
            "requests": 3,
        },
        "quota": {
            "hourly_token_limit": 100_000,
            "hourly_tokens_used": 2000 + 750,
            "hourly_reset_at": "2025-03-15T13:00:00Z",
        },
    }


async def test_summary_without_limit_and_at_day_end(meter: UsageMeter, clock: Clock) -> None:
    clock.now = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
    summary = await meter.summary(None)
    assert summary["quota"] == {
        "hourly_token_limit": None,
        "hourly_tokens_used": 0,
        "hourly_reset_at": "2026-01-01T00:00:00Z",
    }
    assert summary["today"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "requests": 0,
    }


# -- by model ------------------------------------------------------------------------------


async def test_by_model(meter: UsageMeter, clock: Clock) -> None:
    await _at(meter, clock, NOW, provider="openai", model="gpt-4o", usage=Usage(1000, 1000))
    await _at(meter, clock, NOW - timedelta(days=40), provider="openai", model="gpt-4o")
    await _at(meter, clock, NOW, provider="echo", model="echo")
    await _at(meter, clock, NOW, provider="groq", model="llama-3.1-8b-instant")
    result = await meter.by_model()
    gpt4o_cost = 2 * (1000 * 2.5 + 1000 * 10.0) / 1e6
    groq_cost = (1000 * 0.05 + 1000 * 0.08) / 1e6
    assert result == {
        "models": [
            {
                "model": "gpt-4o",
                "provider": "openai",
                "input_tokens": 2000,
                "output_tokens": 2000,
                "cost_usd": round(gpt4o_cost, 6),
                "request_count": 2,
            },
            {
                "model": "echo",
                "provider": "echo",
                "input_tokens": 1000,
                "output_tokens": 1000,
                "cost_usd": UNIT_COST,
                "request_count": 1,
            },
            {
                "model": "llama-3.1-8b-instant",
                "provider": "groq",
                "input_tokens": 1000,
                "output_tokens": 1000,
                "cost_usd": round(groq_cost, 6),
                "request_count": 1,
            },
        ]
    }


async def test_by_model_empty(meter: UsageMeter) -> None:
    assert await meter.by_model() == {"models": []}


# -- daily ---------------------------------------------------------------------------------


async def test_daily_fills_missing_days_with_zeros(meter: UsageMeter, clock: Clock) -> None:
    await _at(meter, clock, NOW)
    await _at(meter, clock, NOW - timedelta(hours=1))
    await _at(meter, clock, NOW - timedelta(days=3), usage=Usage(10, 20))
    await _at(meter, clock, NOW - timedelta(days=5))  # outside a 5-day window
    result = await meter.daily(5)
    zero = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "requests": 0}
    assert result == {
        "days": [
            {"date": "2025-03-11", **zero},
            {
                "date": "2025-03-12",
                "input_tokens": 10,
                "output_tokens": 20,
                "cost_usd": round((10 + 60) / 1e6, 6),
                "requests": 1,
            },
            {"date": "2025-03-13", **zero},
            {"date": "2025-03-14", **zero},
            {
                "date": "2025-03-15",
                "input_tokens": 2000,
                "output_tokens": 2000,
                "cost_usd": round(2 * UNIT_COST, 6),
                "requests": 2,
            },
        ]
    }


async def test_daily_default_range_spans_months(meter: UsageMeter, clock: Clock) -> None:
    clock.now = datetime(2025, 3, 2, 8, 0, tzinfo=UTC)
    await _at(meter, clock, datetime(2025, 2, 28, 8, 0, tzinfo=UTC))
    days = (await meter.daily())["days"]
    assert len(days) == 30
    assert days[0]["date"] == "2025-02-01"
    assert days[-1]["date"] == "2025-03-02"
    assert [d["date"] for d in days] == sorted(d["date"] for d in days)
    assert [d["requests"] for d in days if d["requests"]] == [1]
    assert days[-3]["date"] == "2025-02-28"
    assert days[-3]["requests"] == 1


async def test_daily_rejects_bad_ranges(meter: UsageMeter) -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match="days"):
            await meter.daily(bad)
    assert len((await meter.daily(1))["days"]) == 1


# -- spend and agents ----------------------------------------------------------------------


async def test_spend(meter: UsageMeter, clock: Clock) -> None:
    await _at(meter, clock, NOW - timedelta(minutes=30), agent="a1")
    await _at(meter, clock, NOW - timedelta(hours=2), agent="a1")
    await _at(meter, clock, NOW - timedelta(days=2), agent="a1")
    await _at(meter, clock, NOW - timedelta(minutes=5), agent="a2")
    await _at(meter, clock, NOW - timedelta(minutes=5), agent=None)
    start_of_day = datetime(2025, 3, 15, tzinfo=UTC)
    assert await meter.spend("a1", since=start_of_day) == round(2 * UNIT_COST, 6)
    assert await meter.spend("a1", since=NOW - timedelta(hours=1)) == UNIT_COST
    assert await meter.spend("a2", since=start_of_day) == UNIT_COST
    assert await meter.spend(None, since=start_of_day) == round(4 * UNIT_COST, 6)
    assert await meter.spend(None, since=datetime(2025, 1, 1, tzinfo=UTC)) == round(
        5 * UNIT_COST, 6
    )
    assert await meter.spend("nobody", since=start_of_day) == 0.0
    # The lower bound is inclusive, and other timezones are converted.
    exact = NOW - timedelta(minutes=30)
    assert await meter.spend("a1", since=exact) == UNIT_COST
    assert await meter.spend("a1", since=exact + timedelta(microseconds=1)) == 0.0
    plus1 = timezone(timedelta(hours=1))
    assert await meter.spend("a1", since=exact.astimezone(plus1)) == UNIT_COST
    with pytest.raises(ValueError, match="aware"):
        await meter.spend("a1", since=datetime(2025, 3, 15))


async def test_by_agent_ranks_by_total_spend(meter: UsageMeter, clock: Clock) -> None:
    big = Usage(input_tokens=10_000, output_tokens=10_000)  # $0.04 at the fallback price
    await _at(meter, clock, NOW - timedelta(days=10), agent="old-spender", usage=big)
    await _at(meter, clock, NOW, agent="today", usage=UNIT)
    await _at(meter, clock, NOW, agent="today", usage=UNIT)
    await _at(meter, clock, NOW - timedelta(days=1), agent="b-tie", usage=UNIT)
    await _at(meter, clock, NOW - timedelta(days=1), agent="a-tie", usage=UNIT)
    await _at(meter, clock, NOW, agent=None, usage=big)  # no agent: not listed
    assert await meter.by_agent() == [
        {"agent_id": "old-spender", "total_cost_usd": 0.04, "today_cost_usd": 0.0},
        {"agent_id": "today", "total_cost_usd": 0.008, "today_cost_usd": 0.008},
        {"agent_id": "a-tie", "total_cost_usd": UNIT_COST, "today_cost_usd": 0.0},
        {"agent_id": "b-tie", "total_cost_usd": UNIT_COST, "today_cost_usd": 0.0},
    ]


# -- concurrency ---------------------------------------------------------------------------


async def test_concurrent_records_are_all_counted(meter: UsageMeter) -> None:
    ids: list[int] = []

    async def one(i: int) -> None:
        event = await meter.record(
            agent_id=f"agent-{i % 7}",
            provider="p",
            model="m",
            usage=Usage(input_tokens=i, output_tokens=1),
            latency_ms=float(i),
        )
        ids.append(event.id)

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(one, i)

    assert len(set(ids)) == 200
    totals = await meter.totals("day")
    assert totals["request_count"] == 200
    assert totals["total_input_tokens"] == sum(range(200))
    assert totals["total_output_tokens"] == 200
    assert totals["active_agents"] == 7
    expected_cost = (sum(range(200)) * 1 + 200 * 3) / 1e6
    assert totals["total_cost_usd"] == round(expected_cost, 6)
    assert sum(a["total_cost_usd"] for a in await meter.by_agent()) == pytest.approx(expected_cost)


async def test_migration_is_idempotent_and_creates_indexes(store: SQLiteStore) -> None:
    assert await store.migrate(USAGE_MIGRATIONS) == []
    assert store.schema_versions["usage"] == 1
    rows = await store.fetch_all(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage_events'"
    )
    assert {r["name"] for r in rows} == {
        "usage_events_day",
        "usage_events_agent_day",
        "usage_events_model",
    }
