"""The usage meter: one durable row per model call, and the aggregates the API serves.

Every model call is recorded as a ``usage_events`` row (component ``usage`` of the store) with
its tokens, its cost at the catalog's price and its latency. Times are UTC; ``timestamp`` is
RFC 3339 with microseconds (``2025-01-02T03:04:05.000000Z``, fixed width so text order is time
order), ``day`` is ``YYYY-MM-DD`` and ``hour`` the start of the clock hour
(``2025-01-02T03:00:00Z``).

Period windows of :meth:`UsageMeter.totals`:

* ``hour``  — the last 60 minutes (rolling);
* ``day``   — today (UTC calendar day);
* ``week``  — the last 7 UTC calendar days, today included;
* ``month`` — the current UTC calendar month.

The hourly token quota of :meth:`UsageMeter.summary` counts input + output tokens of the
current UTC clock hour; it resets at the start of the next hour. Money is rounded to 6
decimals in every output; stored costs are unrounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal, get_args

import attrs

from fangwire.models import Usage
from fangwire.store import Migration, Store
from fangwire.store.base import Connection
from fangwire.timeutil import utc_now
from fangwire.usage.catalog import ModelCatalog

__all__ = ["USAGE_COMPONENT", "USAGE_MIGRATIONS", "Period", "UsageEvent", "UsageMeter"]

USAGE_COMPONENT: Final = "usage"

USAGE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        component=USAGE_COMPONENT,
        version=1,
        description="one row per metered model call",
        apply="""
        CREATE TABLE usage_events (
            id            INTEGER PRIMARY KEY,
            timestamp     TEXT    NOT NULL,  -- RFC 3339 UTC, microseconds, fixed width
            day           TEXT    NOT NULL,  -- YYYY-MM-DD (UTC)
            hour          TEXT    NOT NULL,  -- YYYY-MM-DDTHH:00:00Z (UTC)
            agent_id      TEXT,
            provider      TEXT    NOT NULL,
            model         TEXT    NOT NULL,
            channel       TEXT,
            input_tokens  INTEGER NOT NULL,  -- includes cached_tokens
            output_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL,
            cost_usd      REAL    NOT NULL,
            latency_ms    REAL    NOT NULL,
            known_price   INTEGER NOT NULL   -- 0: priced by the catalog's fallback
        );
        CREATE INDEX usage_events_day ON usage_events (day);
        CREATE INDEX usage_events_agent_day ON usage_events (agent_id, day);
        CREATE INDEX usage_events_model ON usage_events (provider, model);
        """,
    ),
)

Period = Literal["hour", "day", "week", "month"]
_PERIODS: Final = frozenset(get_args(Period))

_MONEY_DECIMALS: Final = 6


def _money(value: float | None) -> float:
    return round(float(value or 0.0), _MONEY_DECIMALS)


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hour(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:00:00Z")


def _day(moment: datetime | date) -> str:
    return moment.strftime("%Y-%m-%d")


@attrs.frozen
class UsageEvent:
    """One recorded model call. ``cost_usd`` is unrounded; ``known_price`` is false when the
    catalog's fallback price was used."""

    id: int
    timestamp: datetime
    agent_id: str | None
    provider: str
    model: str
    channel: str | None
    usage: Usage
    cost_usd: float
    latency_ms: float
    known_price: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "timestamp": _timestamp(self.timestamp),
            "agent_id": self.agent_id,
            "provider": self.provider,
            "model": self.model,
            "channel": self.channel,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cached_tokens": self.usage.cached_tokens,
            "cost_usd": _money(self.cost_usd),
            "latency_ms": self.latency_ms,
            "known_price": self.known_price,
        }


_INSERT: Final = """
INSERT INTO usage_events (
    timestamp, day, hour, agent_id, provider, model, channel,
    input_tokens, output_tokens, cached_tokens, cost_usd, latency_ms, known_price
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_TOTALS: Final = """
SELECT COALESCE(SUM(input_tokens), 0)  AS input_tokens,
       COALESCE(SUM(output_tokens), 0) AS output_tokens,
       COALESCE(SUM(cost_usd), 0.0)    AS cost_usd,
       COUNT(*)                        AS requests,
       COUNT(DISTINCT agent_id)        AS agents
FROM usage_events
"""


class UsageMeter:
    """Records model calls in ``store`` (migrated with :data:`USAGE_MIGRATIONS`) priced by
    ``catalog``, and answers the usage API's aggregate queries.

    ``clock`` returns the current time as an aware datetime (converted to UTC); tests inject
    one to place events in the past.
    """

    def __init__(
        self,
        store: Store,
        catalog: ModelCatalog,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._clock = clock

    @property
    def catalog(self) -> ModelCatalog:
        return self._catalog

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("the usage meter's clock must return an aware datetime")
        return now.astimezone(UTC)

    async def record(
        self,
        *,
        agent_id: str | None,
        provider: str,
        model: str,
        usage: Usage,
        latency_ms: float,
        channel: str | None = None,
    ) -> UsageEvent:
        """Price ``usage`` and store it durably (one write); return the stored event."""
        if not provider or not model:
            raise ValueError("provider and model must be non-empty")
        if isinstance(latency_ms, bool) or not math.isfinite(latency_ms) or latency_ms < 0:
            raise ValueError("latency_ms must be a non-negative finite number")
        price, known = self._catalog.price(provider, model)
        cost = self._catalog.cost(usage, price)  # rejects negative token counts
        now = self._now()
        params = (
            _timestamp(now),
            _day(now),
            _hour(now),
            agent_id,
            provider,
            model,
            channel,
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens,
            cost,
            float(latency_ms),
            int(known),
        )

        def insert(conn: Connection) -> int:
            cursor = conn.execute(_INSERT, params)
            assert cursor.lastrowid is not None  # noqa: S101 - an INSERT always sets it
            return cursor.lastrowid

        event_id = await self._store.write(insert)
        return UsageEvent(
            id=event_id,
            timestamp=now,
            agent_id=agent_id,
            provider=provider,
            model=model,
            channel=channel,
            usage=usage,
            cost_usd=cost,
            latency_ms=float(latency_ms),
            known_price=known,
        )

    async def totals(self, period: Period = "day") -> dict[str, Any]:
        """Totals over ``period`` (see the module docstring for the windows)."""
        if period not in _PERIODS:
            raise ValueError(f"period must be one of hour, day, week, month; got {period!r}")
        now = self._now()
        today = now.date()
        if period == "hour":
            since = now - timedelta(hours=1)
            where, params = "WHERE day >= ? AND timestamp >= ?", [_day(since), _timestamp(since)]
        elif period == "day":
            where, params = "WHERE day = ?", [_day(today)]
        elif period == "week":
            where, params = "WHERE day >= ?", [_day(today - timedelta(days=6))]
        else:
            where, params = "WHERE day >= ?", [_day(today.replace(day=1))]
        row = await self._store.fetch_one(f"{_TOTALS} {where}", params)
        assert row is not None  # noqa: S101 - an aggregate always yields a row
        return {
            "period": period,
            "total_input_tokens": row["input_tokens"],
            "total_output_tokens": row["output_tokens"],
            "total_cost_usd": _money(row["cost_usd"]),
            "request_count": row["requests"],
            "active_agents": row["agents"],
        }

    async def summary(self, hourly_token_limit: int | None = None) -> dict[str, Any]:
        """Today's totals and the hourly token quota (current UTC clock hour)."""
        now = self._now()
        hour_start = now.replace(minute=0, second=0, microsecond=0)

        def query(conn: Connection) -> tuple[dict[str, Any], int]:
            today = conn.execute(f"{_TOTALS} WHERE day = ?", (_day(now),)).fetchone()
            used = conn.execute(
                "SELECT COALESCE(SUM(input_tokens + output_tokens), 0) AS used "
                "FROM usage_events WHERE day = ? AND hour = ?",
                (_day(now), _hour(now)),
            ).fetchone()
            return today, int(used["used"])

        today, used = await self._store.read(query)
        return {
            "today": {
                "input_tokens": today["input_tokens"],
                "output_tokens": today["output_tokens"],
                "cost_usd": _money(today["cost_usd"]),
                "requests": today["requests"],
            },
            "quota": {
                "hourly_token_limit": hourly_token_limit,
                "hourly_tokens_used": used,
                "hourly_reset_at": _hour(hour_start + timedelta(hours=1)),
            },
        }

    async def by_model(self) -> dict[str, Any]:
        """All-time totals per provider and model, most expensive first."""
        rows = await self._store.fetch_all(
            """
            SELECT provider, model,
                   SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,
                   SUM(cost_usd) AS cost_usd, COUNT(*) AS request_count
            FROM usage_events
            GROUP BY provider, model
            ORDER BY cost_usd DESC, request_count DESC, provider, model
            """
        )
        return {
            "models": [
                {
                    "model": r["model"],
                    "provider": r["provider"],
                    "input_tokens": r["input_tokens"],
                    "output_tokens": r["output_tokens"],
                    "cost_usd": _money(r["cost_usd"]),
                    "request_count": r["request_count"],
                }
                for r in rows
            ]
        }

    async def daily(self, days: int = 30) -> dict[str, Any]:
        """One entry per UTC day of the last ``days`` days (today included), oldest first;
        days without usage are present with zeros."""
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise ValueError("days must be a positive integer")
        today = self._now().date()
        first = today - timedelta(days=days - 1)
        rows = await self._store.fetch_all(
            """
            SELECT day, SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,
                   SUM(cost_usd) AS cost_usd, COUNT(*) AS requests
            FROM usage_events WHERE day >= ? AND day <= ? GROUP BY day
            """,
            (_day(first), _day(today)),
        )
        by_day = {r["day"]: r for r in rows}
        out: list[dict[str, Any]] = []
        for offset in range(days):
            key = _day(first + timedelta(days=offset))
            r = by_day.get(key)
            out.append(
                {
                    "date": key,
                    "input_tokens": r["input_tokens"] if r else 0,
                    "output_tokens": r["output_tokens"] if r else 0,
                    "cost_usd": _money(r["cost_usd"]) if r else 0.0,
                    "requests": r["requests"] if r else 0,
                }
            )
        return {"days": out}

    async def spend(self, agent_id: str | None, *, since: datetime) -> float:
        """US dollars spent since ``since`` (inclusive) by ``agent_id``, or by everyone when
        ``agent_id`` is ``None``."""
        if since.tzinfo is None or since.utcoffset() is None:
            raise ValueError("since must be an aware datetime")
        since_utc = since.astimezone(UTC)
        sql = "SELECT SUM(cost_usd) AS spent FROM usage_events WHERE day >= ? AND timestamp >= ?"
        params: list[Any] = [_day(since_utc), _timestamp(since_utc)]
        if agent_id is not None:
            sql += " AND agent_id = ?"
            params.append(agent_id)
        row = await self._store.fetch_one(sql, params)
        return _money(row["spent"] if row else None)

    async def by_agent(self) -> list[dict[str, Any]]:
        """Agents ranked by all-time spend (highest first, then by id), with today's spend.
        Calls recorded without an agent are not listed."""
        rows = await self._store.fetch_all(
            """
            SELECT agent_id,
                   SUM(cost_usd) AS total_cost_usd,
                   SUM(CASE WHEN day = ? THEN cost_usd ELSE 0.0 END) AS today_cost_usd
            FROM usage_events
            WHERE agent_id IS NOT NULL
            GROUP BY agent_id
            ORDER BY total_cost_usd DESC, agent_id
            """,
            (_day(self._now()),),
        )
        return [
            {
                "agent_id": r["agent_id"],
                "total_cost_usd": _money(r["total_cost_usd"]),
                "today_cost_usd": _money(r["today_cost_usd"]),
            }
            for r in rows
        ]
