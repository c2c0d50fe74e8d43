"""The ``limits`` budget policy: global and per-agent spending limits and an hourly token quota.

Limits live in the store (component ``budget``):

* ``budget_global`` — one row: hourly/daily/monthly USD limits, the hourly token quota
  (input + output tokens of the current UTC clock hour) and the alert threshold (default 0.8);
* ``budget_agent_limits`` — one row per agent whose limits were set through the API. An agent
  without a row is held to its manifest limits (``Agent.limits``).

``None`` (JSON ``null``) means no limit; ``0`` is a limit of zero. Windows are UTC: the clock
hour, the calendar day, the calendar month. Spend comes from ``runtime.usage.spend`` plus the
budget gate's pending reservations, so concurrent calls cannot overshoot.

A limit refuses an action when what is spent or reserved has reached it, or when the action's
estimate would take it past it. Status of a set of limits: ``exceeded`` when spend has reached
a limit, ``warning`` when it has reached ``alert_threshold`` of one, else ``ok``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from fangwire.budget import BudgetAction, BudgetDecision, BudgetPolicy, Pending
from fangwire.hookspecs import hookimpl
from fangwire.store import Migration
from fangwire.timeutil import rfc3339, utc_now

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

BUDGET_COMPONENT: Final = "budget"
DEFAULT_ALERT_THRESHOLD: Final = 0.8

BUDGET_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        component=BUDGET_COMPONENT,
        version=1,
        description="global and per-agent budget limits",
        apply="""
        CREATE TABLE budget_global (
            id                 INTEGER PRIMARY KEY CHECK (id = 1),
            hourly_limit_usd   REAL,
            daily_limit_usd    REAL,
            monthly_limit_usd  REAL,
            hourly_token_limit INTEGER,
            alert_threshold    REAL NOT NULL DEFAULT 0.8,
            updated_at         TEXT NOT NULL
        );
        CREATE TABLE budget_agent_limits (
            agent_id           TEXT PRIMARY KEY,
            hourly_limit_usd   REAL,
            daily_limit_usd    REAL,
            monthly_limit_usd  REAL,
            hourly_token_limit INTEGER,
            updated_at         TEXT NOT NULL
        );
        """,
    ),
)

Window = Literal["hourly", "daily", "monthly"]
WINDOWS: Final[tuple[Window, ...]] = ("hourly", "daily", "monthly")
Status = Literal["ok", "warning", "exceeded"]

_MONEY_DECIMALS: Final = 6


def _money(value: float) -> float:
    return round(float(value), _MONEY_DECIMALS)


def format_usd(value: float) -> str:
    """``$5.00``; more decimals (up to 6) only when cents would hide the amount."""
    value = _money(value)
    if round(value, 2) == value:
        return f"${value:.2f}"
    return "$" + f"{value:.6f}".rstrip("0")


@attrs.frozen
class Limits:
    """A set of limits; ``None`` means none. ``alert_threshold`` only matters globally."""

    hourly_limit_usd: float | None = None
    daily_limit_usd: float | None = None
    monthly_limit_usd: float | None = None
    hourly_token_limit: int | None = None
    alert_threshold: float = DEFAULT_ALERT_THRESHOLD

    def usd(self, window: Window) -> float | None:
        limit: float | None = getattr(self, f"{window}_limit_usd")
        return limit

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


_LIMIT_COLUMNS: Final = (
    "hourly_limit_usd",
    "daily_limit_usd",
    "monthly_limit_usd",
    "hourly_token_limit",
)


def _limits_from_row(row: Mapping[str, Any], *, threshold: float | None = None) -> Limits:
    return Limits(
        hourly_limit_usd=row["hourly_limit_usd"],
        daily_limit_usd=row["daily_limit_usd"],
        monthly_limit_usd=row["monthly_limit_usd"],
        hourly_token_limit=row["hourly_token_limit"],
        alert_threshold=DEFAULT_ALERT_THRESHOLD if threshold is None else threshold,
    )


def window_start(window: Window, now: datetime) -> datetime:
    """Start of the UTC window containing ``now``."""
    now = now.astimezone(UTC)
    if window == "hourly":
        return now.replace(minute=0, second=0, microsecond=0)
    if window == "daily":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def window_end(window: Window, now: datetime) -> datetime:
    """Start of the next UTC window (when the current one resets)."""
    start = window_start(window, now)
    if window == "hourly":
        return start + timedelta(hours=1)
    if window == "daily":
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)


def status_of(spent: float, limit: float | None, threshold: float) -> Status:
    if limit is None:
        return "ok"
    if _money(spent) >= _money(limit):
        return "exceeded"
    if limit > 0 and _money(spent) >= _money(limit * threshold):
        return "warning"
    return "ok"


def worst(statuses: list[Status]) -> Status:
    for candidate in ("exceeded", "warning"):
        if candidate in statuses:
            return candidate
    return "ok"


class LimitStore:
    """Reads and writes the ``budget`` tables (migrated on first use)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._migrated_store: object | None = None
        # Limits change only through the setters below, so reads are served from memory: the
        # check runs before every model call and must not cost a database round trip.
        self._global: Limits | None = None
        self._agents: dict[str, tuple[Limits, str]] = {}

    async def ready(self) -> None:
        store = self.runtime.store
        if self._migrated_store is not store:
            await store.migrate(BUDGET_MIGRATIONS)
            self._migrated_store = store

    async def global_limits(self) -> Limits:
        if self._global is not None and self._migrated_store is self.runtime.store:
            return self._global
        await self.ready()
        row = await self.runtime.store.fetch_one("SELECT * FROM budget_global WHERE id = 1")
        limits = (
            Limits() if row is None else _limits_from_row(row, threshold=row["alert_threshold"])
        )
        self._global = limits
        return limits

    async def set_global_limits(self, limits: Limits) -> None:
        await self.ready()
        self._global = None
        await self.runtime.store.execute(
            """
            INSERT INTO budget_global (id, hourly_limit_usd, daily_limit_usd, monthly_limit_usd,
                                       hourly_token_limit, alert_threshold, updated_at)
            VALUES (1, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET
                hourly_limit_usd = excluded.hourly_limit_usd,
                daily_limit_usd = excluded.daily_limit_usd,
                monthly_limit_usd = excluded.monthly_limit_usd,
                hourly_token_limit = excluded.hourly_token_limit,
                alert_threshold = excluded.alert_threshold,
                updated_at = excluded.updated_at
            """,
            (
                limits.hourly_limit_usd,
                limits.daily_limit_usd,
                limits.monthly_limit_usd,
                limits.hourly_token_limit,
                limits.alert_threshold,
                rfc3339(),
            ),
        )

    async def stored_agent_limits(self, agent_id: str) -> Limits | None:
        await self.ready()
        row = await self.runtime.store.fetch_one(
            "SELECT * FROM budget_agent_limits WHERE agent_id = ?", (agent_id,)
        )
        return None if row is None else _limits_from_row(row)

    async def agent_limits(self, agent_id: str) -> tuple[Limits, str]:
        """The limits ``agent_id`` is held to and where they come from (``budget``: set through
        the API; ``manifest``: the agent's own limits; ``none``: unknown agent)."""
        cached = self._agents.get(agent_id)
        if cached is not None and self._migrated_store is self.runtime.store:
            return cached
        result = await self._load_agent_limits(agent_id)
        if result[1] != "none":  # an agent spawned later must not inherit a cached "none"
            self._agents[agent_id] = result
        return result

    async def _load_agent_limits(self, agent_id: str) -> tuple[Limits, str]:
        stored = await self.stored_agent_limits(agent_id)
        if stored is not None:
            return stored, "budget"
        agent = await self.runtime.agents.get(agent_id)
        if agent is None:
            return Limits(), "none"
        return (
            Limits(
                daily_limit_usd=agent.limits.daily_limit_usd,
                monthly_limit_usd=agent.limits.monthly_limit_usd,
            ),
            "manifest",
        )

    async def set_agent_limits(self, agent_id: str, limits: Limits) -> None:
        await self.ready()
        self._agents.pop(agent_id, None)
        await self.runtime.store.execute(
            """
            INSERT INTO budget_agent_limits (agent_id, hourly_limit_usd, daily_limit_usd,
                                             monthly_limit_usd, hourly_token_limit, updated_at)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (agent_id) DO UPDATE SET
                hourly_limit_usd = excluded.hourly_limit_usd,
                daily_limit_usd = excluded.daily_limit_usd,
                monthly_limit_usd = excluded.monthly_limit_usd,
                hourly_token_limit = excluded.hourly_token_limit,
                updated_at = excluded.updated_at
            """,
            (
                agent_id,
                limits.hourly_limit_usd,
                limits.daily_limit_usd,
                limits.monthly_limit_usd,
                limits.hourly_token_limit,
                rfc3339(),
            ),
        )


@attrs.frozen
class Spend:
    """What one scope (everyone, or one agent) has spent in each window, tokens this hour."""

    hourly: float
    daily: float
    monthly: float
    hourly_tokens: int

    def usd(self, window: Window) -> float:
        value: float = getattr(self, window)
        return value


class LimitsPolicy(BudgetPolicy):
    policy_id = "limits"
    description = (
        "Global and per-agent hourly/daily/monthly USD limits and an hourly token quota, "
        "set through /api/budget."
    )

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.limits = LimitStore(runtime)
        #: Current time (aware); tests replace it.
        self.clock: Callable[[], datetime] = utc_now

    def now(self) -> datetime:
        return self.clock().astimezone(UTC)

    async def spend(self, agent_id: str | None, now: datetime | None = None) -> Spend:
        """Spend of ``agent_id`` (everyone when ``None``) in the windows containing ``now``."""
        now = self.now() if now is None else now
        usage = self.runtime.usage
        hour = window_start("hourly", now)
        sql = (
            "SELECT COALESCE(SUM(input_tokens + output_tokens), 0) AS used FROM usage_events "
            "WHERE day = ? AND hour = ?"
        )
        params: list[Any] = [hour.strftime("%Y-%m-%d"), hour.strftime("%Y-%m-%dT%H:00:00Z")]
        if agent_id is not None:
            sql += " AND agent_id = ?"
            params.append(agent_id)
        row = await self.runtime.store.fetch_one(sql, params)
        return Spend(
            hourly=await usage.spend(agent_id, since=hour),
            daily=await usage.spend(agent_id, since=window_start("daily", now)),
            monthly=await usage.spend(agent_id, since=window_start("monthly", now)),
            hourly_tokens=int(row["used"]) if row else 0,
        )

    async def check(self, action: BudgetAction) -> BudgetDecision:
        return await self.check_pending(action, Pending())

    async def check_pending(self, action: BudgetAction, pending: Pending) -> BudgetDecision:
        now = self.now()
        global_limits = await self.limits.global_limits()
        decision = await self._check_scope(action, pending, None, global_limits, now)
        if decision is not None:
            return decision
        if action.agent_id is not None:
            agent_limits, _ = await self.limits.agent_limits(action.agent_id)
            decision = await self._check_scope(action, pending, action.agent_id, agent_limits, now)
            if decision is not None:
                return decision
        return BudgetDecision(allowed=True, policy=self.policy_id)

    async def _check_scope(
        self,
        action: BudgetAction,
        pending: Pending,
        agent_id: str | None,
        limits: Limits,
        now: datetime,
    ) -> BudgetDecision | None:
        if all(getattr(limits, name) is None for name in _LIMIT_COLUMNS):
            return None
        spend = await self.spend(agent_id, now)
        scope = "global" if agent_id is None else "agent"
        who = "" if agent_id is None else f"agent {agent_id!r} "
        for window in WINDOWS:
            limit = limits.usd(window)
            if limit is None:
                continue
            spent = spend.usd(window)
            reserved = pending.usd_for(agent_id)
            committed = _money(spent + reserved)
            projected = _money(committed + action.estimated_cost_usd)
            if committed < _money(limit) and projected <= _money(limit):
                continue
            shown = "spent" if reserved == 0 else "spent or reserved"
            if committed >= _money(limit):
                reason = (
                    f"{who}{window} budget of {format_usd(limit)} exceeded "
                    f"({format_usd(committed)} {shown})"
                )
            else:
                reason = (
                    f"{who}{window} budget of {format_usd(limit)} would be "
                    f"exceeded ({format_usd(committed)} {shown}, "
                    f"{format_usd(action.estimated_cost_usd)} requested)"
                )
            return self._refuse(
                f"{window}_limit_usd",
                reason,
                window,
                now,
                {
                    "scope": scope,
                    "window": window,
                    "limit_usd": limit,
                    "spent_usd": _money(spent),
                    "reserved_usd": _money(reserved),
                },
            )
        token_limit = limits.hourly_token_limit
        if token_limit is not None:
            reserved_tokens = pending.tokens_for(agent_id)
            used = spend.hourly_tokens + reserved_tokens
            if used >= token_limit or used + action.estimated_tokens > token_limit:
                reason = (
                    f"{who}hourly token limit of {token_limit} would be exceeded "
                    f"({used} used, {action.estimated_tokens} requested)"
                )
                return self._refuse(
                    "hourly_token_limit",
                    reason,
                    "hourly",
                    now,
                    {
                        "scope": scope,
                        "window": "hourly",
                        "limit_tokens": token_limit,
                        "used_tokens": spend.hourly_tokens,
                        "reserved_tokens": reserved_tokens,
                    },
                )
        return None

    def _refuse(
        self, limit: str, reason: str, window: Window, now: datetime, details: dict[str, Any]
    ) -> BudgetDecision:
        scope = details["scope"]
        return BudgetDecision(
            allowed=False,
            policy=self.policy_id,
            reason=reason,
            retry_after_seconds=(window_end(window, now) - now).total_seconds(),
            limit=limit if scope == "global" else f"agent.{limit}",
            details=details,
        )


def limits_policy(runtime: Runtime) -> LimitsPolicy:
    """The runtime's ``limits`` policy, or a detached one when the plugin is disabled (the
    budget API still reads and writes limits; nothing enforces them)."""
    policy = runtime.budget_policies.get(LimitsPolicy.policy_id)
    if isinstance(policy, LimitsPolicy):
        return policy
    return LimitsPolicy(runtime)


@hookimpl
def register_budget_policies(register: Callable[[type[BudgetPolicy]], None]) -> None:
    register(LimitsPolicy)


@hookimpl
async def startup(runtime: Runtime) -> None:
    await limits_policy(runtime).limits.ready()
