"""The usage and budget API: metered totals, and the limits the ``limits`` policy enforces.

Limit bodies accept the canonical names (``daily_limit_usd``, ...) and LibreFang's names
(``max_daily_usd``, ``daily_limit``, ``max_cost_per_day_usd``, ``max_llm_tokens_per_hour``,
...). A canonical value of ``0`` is a limit of zero; under LibreFang's names ``0`` means no
limit, as it does there. ``null`` always means no limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fangwire.defaults.budget_limits import (
    WINDOWS,
    Limits,
    LimitsPolicy,
    Status,
    limits_policy,
    status_of,
    window_end,
    worst,
)
from fangwire.hookspecs import hookimpl
from fangwire.http.context import actor_of, runtime_of
from fangwire.http.errors import ApiError
from fangwire.http.jsonbody import read_json
from fangwire.http.params import int_param
from fangwire.http.routes import QueryParam, RouteSpec

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

PERIODS: Final = ("hour", "day", "week", "month")
DEFAULT_DAYS: Final = 7
MAX_DAYS: Final = 366
#: Largest value SQLite stores as an INTEGER.
MAX_TOKENS: Final = 2**63 - 1

FieldKind = Literal["usd", "tokens", "threshold"]

#: canonical name -> (kind, LibreFang's names for it)
GLOBAL_FIELDS: Final[Mapping[str, tuple[FieldKind, tuple[str, ...]]]] = {
    "hourly_limit_usd": ("usd", ("max_hourly_usd", "hourly_limit")),
    "daily_limit_usd": ("usd", ("max_daily_usd", "daily_limit")),
    "monthly_limit_usd": ("usd", ("max_monthly_usd", "monthly_limit")),
    "hourly_token_limit": (
        "tokens",
        ("default_max_llm_tokens_per_hour", "max_llm_tokens_per_hour"),
    ),
    "alert_threshold": ("threshold", ()),
}
AGENT_FIELDS: Final[Mapping[str, tuple[FieldKind, tuple[str, ...]]]] = {
    "hourly_limit_usd": ("usd", ("max_cost_per_hour_usd", "hourly_limit")),
    "daily_limit_usd": ("usd", ("max_cost_per_day_usd", "daily_limit")),
    "monthly_limit_usd": ("usd", ("max_cost_per_month_usd", "monthly_limit")),
    "hourly_token_limit": ("tokens", ("max_llm_tokens_per_hour",)),
}


#: The smallest non-zero USD limit accepted (money is kept to micro-dollars).
MIN_USD_LIMIT = 0.000001


def _bad(message: str) -> ApiError:
    return ApiError(400, message, code="invalid_input")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{name}: expected a number or null, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise _bad(f"{name}: must be a finite number, got {value!r}")
    if number < 0:
        raise _bad(f"{name}: must be >= 0, got {value!r}")
    return number


def _field_value(name: str, kind: FieldKind, value: Any, *, reference_name: bool) -> Any:
    if kind == "threshold":
        if value is None:
            raise _bad(f"{name}: expected a number between 0 and 1, got null")
        number = _number(name, value)
        if number > 1:
            raise _bad(f"{name}: must be between 0 and 1, got {value!r}")
        return number
    if value is None:
        return None
    if kind == "tokens":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(f"{name}: expected a non-negative integer or null, got {value!r}")
        if value < 0 or value > MAX_TOKENS:
            raise _bad(f"{name}: must be between 0 and {MAX_TOKENS}, got {value!r}")
        tokens: int | None = value
        if reference_name and value == 0:
            tokens = None
        return tokens
    number = _number(name, value)
    if 0 < number < MIN_USD_LIMIT:
        # Below a millionth of a dollar a limit means nothing, and spent/limit overflows.
        raise _bad(f"{name}: must be 0 or at least {MIN_USD_LIMIT}, got {value!r}")
    return None if reference_name and number == 0 else number


def parse_limits(
    data: Any, fields: Mapping[str, tuple[FieldKind, tuple[str, ...]]]
) -> dict[str, Any]:
    """Canonical name -> checked value, for the fields present in ``data`` (400s name the
    field as the caller spelled it)."""
    if not isinstance(data, dict):
        raise _bad("request body must be a JSON object")
    spelled: dict[str, str] = {}
    for canonical, (_, aliases) in fields.items():
        spelled[canonical] = canonical
        spelled.update(dict.fromkeys(aliases, canonical))
    unknown = sorted(set(data) - set(spelled))
    if unknown:
        raise _bad(f"{unknown[0]}: unknown field (expected some of {', '.join(sorted(fields))})")
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for name, raw in data.items():
        canonical = spelled[name]
        if canonical in given:
            raise _bad(f"{name}: {given[canonical]} and {name} set the same limit; send one")
        given[canonical] = name
        kind = fields[canonical][0]
        values[canonical] = _field_value(name, kind, raw, reference_name=name != canonical)
    if not values:
        raise _bad(f"request body: expected at least one of {', '.join(sorted(fields))}")
    return values


def _pct(spent: float, limit: float | None) -> float:
    if not limit:
        return 0.0
    return round(spent / limit, 6)


async def _global_body(runtime: Runtime) -> dict[str, Any]:
    policy = limits_policy(runtime)
    limits = await policy.limits.global_limits()
    now = policy.now()
    spend = await policy.spend(None, now)
    statuses: list[Status] = [
        status_of(spend.usd(w), limits.usd(w), limits.alert_threshold) for w in WINDOWS
    ]
    body: dict[str, Any] = {
        "daily_limit_usd": limits.daily_limit_usd,
        "monthly_limit_usd": limits.monthly_limit_usd,
        "today_spent_usd": spend.daily,
        "month_spent_usd": spend.monthly,
        "status": worst(statuses),
        "hourly_limit_usd": limits.hourly_limit_usd,
        "hour_spent_usd": spend.hourly,
        "alert_threshold": limits.alert_threshold,
        "hourly_token_limit": limits.hourly_token_limit,
        "hourly_tokens_used": spend.hourly_tokens,
        "hourly_reset_at": window_end("hourly", now).strftime("%Y-%m-%dT%H:%M:%SZ"),
        # LibreFang's shape (0 = no limit; pct are fractions of the limit).
        "default_max_llm_tokens_per_hour": limits.hourly_token_limit or 0,
    }
    for window, spent in (
        ("hourly", spend.hourly),
        ("daily", spend.daily),
        ("monthly", spend.monthly),
    ):
        limit = limits.usd(window)  # type: ignore[arg-type]
        body[f"{window}_spend"] = spent
        body[f"{window}_limit"] = limit or 0.0
        body[f"{window}_pct"] = _pct(spent, limit)
    return body


async def _agent_body(runtime: Runtime, agent_id: str, agent_name: str) -> dict[str, Any]:
    policy = limits_policy(runtime)
    limits, source = await policy.limits.agent_limits(agent_id)
    threshold = (await policy.limits.global_limits()).alert_threshold
    spend = await policy.spend(agent_id)
    statuses: list[Status] = [status_of(spend.usd(w), limits.usd(w), threshold) for w in WINDOWS]
    body: dict[str, Any] = {
        "agent_id": agent_id,
        "agent_name": agent_name,
        "daily_limit_usd": limits.daily_limit_usd,
        "monthly_limit_usd": limits.monthly_limit_usd,
        "hourly_limit_usd": limits.hourly_limit_usd,
        "hourly_token_limit": limits.hourly_token_limit,
        "today_spent_usd": spend.daily,
        "month_spent_usd": spend.monthly,
        "hour_spent_usd": spend.hourly,
        "status": worst(statuses),
        "limits_source": source,
    }
    for window, spent in (
        ("hourly", spend.hourly),
        ("daily", spend.daily),
        ("monthly", spend.monthly),
    ):
        limit = limits.usd(window)  # type: ignore[arg-type]
        body[window] = {"spend": spent, "limit": limit, "pct": _pct(spent, limit)}
    body["tokens"] = {
        "used": spend.hourly_tokens,
        "limit": limits.hourly_token_limit,
        "pct": _pct(spend.hourly_tokens, limits.hourly_token_limit),
    }
    return body


async def _audited_change(
    runtime: Runtime,
    *,
    scope: str,
    agent_id: str | None,
    old: Limits,
    new: Limits,
    actor: str,
    apply: Callable[[], Any],
) -> None:
    changes = {
        name: {"from": getattr(old, name), "to": getattr(new, name)}
        for name in attrs.fields_dict(Limits)
        if getattr(old, name) != getattr(new, name)
    }
    details = {"scope": scope, "actor": actor, "changes": changes}
    await runtime.audit.record("budget_changed", agent_id=agent_id, details=details)
    try:
        await apply()
    except Exception as exc:
        await runtime.audit.record(
            "budget_changed",
            agent_id=agent_id,
            details={**details, "error": type(exc).__name__},
            outcome="error",
        )
        raise


# -- usage ---------------------------------------------------------------------------------


async def usage_totals(request: Request) -> Response:
    period = request.query_params.get("period", "day")
    if period not in PERIODS:
        raise _bad(f"period: expected one of {', '.join(PERIODS)}, got {period!r}")
    totals = await runtime_of(request).usage.totals(cast(Any, period))
    return JSONResponse(totals)


async def usage_summary(request: Request) -> Response:
    runtime = runtime_of(request)
    limits = await limits_policy(runtime).limits.global_limits()
    return JSONResponse(await runtime.usage.summary(limits.hourly_token_limit))


async def usage_by_model(request: Request) -> Response:
    return JSONResponse(await runtime_of(request).usage.by_model())


async def usage_daily(request: Request) -> Response:
    days = int_param(request, "days", default=DEFAULT_DAYS, minimum=1, maximum=MAX_DAYS)
    return JSONResponse(await runtime_of(request).usage.daily(days or DEFAULT_DAYS))


# -- budget --------------------------------------------------------------------------------


async def budget(request: Request) -> Response:
    runtime = runtime_of(request)
    if request.method == "PUT":
        values = parse_limits(await read_json(request), GLOBAL_FIELDS)
        store = limits_policy(runtime).limits
        old = await store.global_limits()
        new = attrs.evolve(old, **values)
        await _audited_change(
            runtime,
            scope="global",
            agent_id=None,
            old=old,
            new=new,
            actor=actor_of(request),
            apply=lambda: store.set_global_limits(new),
        )
    return JSONResponse(await _global_body(runtime))


async def budget_agents(request: Request) -> Response:
    runtime = runtime_of(request)
    ranked = await runtime.usage.by_agent()
    names: dict[str, str | None] = {}
    for row in ranked:
        agent = await runtime.agents.get(row["agent_id"])
        names[row["agent_id"]] = agent.name if agent is not None else None
    return JSONResponse(
        [
            {
                "agent_id": row["agent_id"],
                "agent_name": names.get(row["agent_id"]),
                "total_cost_usd": row["total_cost_usd"],
                "today_cost_usd": row["today_cost_usd"],
                # LibreFang's names
                "name": names.get(row["agent_id"]),
                "daily_cost_usd": row["today_cost_usd"],
            }
            for row in ranked
        ]
    )


async def budget_agent(request: Request) -> Response:
    runtime = runtime_of(request)
    agent_id = request.path_params["id"]
    agent = await runtime.agents.get(agent_id)
    if agent is None:
        raise ApiError(404, f"agent {agent_id!r} not found", code="not_found")
    if request.method == "PUT":
        values = parse_limits(await read_json(request), AGENT_FIELDS)
        store = limits_policy(runtime).limits
        old, _ = await store.agent_limits(agent_id)
        new = attrs.evolve(old, **values)
        await _audited_change(
            runtime,
            scope="agent",
            agent_id=agent_id,
            old=old,
            new=new,
            actor=actor_of(request),
            apply=lambda: store.set_agent_limits(agent_id, new),
        )
    return JSONResponse(await _agent_body(runtime, agent.id, agent.name))


def _limits_schema(fields: Mapping[str, tuple[FieldKind, tuple[str, ...]]]) -> dict[str, Any]:
    schemas: dict[FieldKind, dict[str, Any]] = {
        "usd": {"type": ["number", "null"], "minimum": 0},
        "tokens": {"type": ["integer", "null"], "minimum": 0},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
    }
    properties: dict[str, Any] = {}
    for canonical, (kind, aliases) in fields.items():
        properties[canonical] = schemas[kind]
        for alias in aliases:
            properties[alias] = {**schemas[kind], "description": f"alias of {canonical}; 0 = none"}
    return {"type": "object", "properties": properties, "additionalProperties": False}


_OBJECT: Final = {"type": "object"}


@hookimpl
def register_routes(register: Callable[[RouteSpec], None]) -> None:
    usage_tags = ("usage",)
    budget_tags = ("budget",)
    register(
        RouteSpec(
            "/usage",
            usage_totals,
            name="usage_totals",
            summary="Usage totals for a period (default: today)",
            tags=usage_tags,
            query=(
                QueryParam("period", {"type": "string", "enum": list(PERIODS), "default": "day"}),
            ),
            response_model=_OBJECT,
        )
    )
    register(
        RouteSpec(
            "/usage/summary",
            usage_summary,
            name="usage_summary",
            summary="Today's totals and the hourly token quota",
            tags=usage_tags,
            response_model=_OBJECT,
        )
    )
    register(
        RouteSpec(
            "/usage/by-model",
            usage_by_model,
            name="usage_by_model",
            summary="Usage per provider and model",
            tags=usage_tags,
            response_model=_OBJECT,
        )
    )
    register(
        RouteSpec(
            "/usage/daily",
            usage_daily,
            name="usage_daily",
            summary="Usage per UTC day, oldest first",
            tags=usage_tags,
            query=(
                QueryParam(
                    "days",
                    {"type": "integer", "minimum": 1, "maximum": MAX_DAYS, "default": DEFAULT_DAYS},
                ),
            ),
            response_model=_OBJECT,
        )
    )
    register(
        RouteSpec(
            "/budget",
            budget,
            name="budget",
            summary="Global limits and spend",
            tags=budget_tags,
            response_model=_OBJECT,
        )
    )
    register(
        RouteSpec(
            "/budget",
            budget,
            methods=("PUT",),
            name="budget_update",
            summary="Set global limits",
            tags=budget_tags,
            request_model=_limits_schema(GLOBAL_FIELDS),
            response_model=_OBJECT,
            responses={400: "A limit is not a finite non-negative number or null"},
        )
    )
    register(
        RouteSpec(
            "/budget/agents",
            budget_agents,
            name="budget_agents",
            summary="Agents ranked by spend",
            tags=budget_tags,
            response_model={"type": "array", "items": _OBJECT},
        )
    )
    register(
        RouteSpec(
            "/budget/agents/{id}",
            budget_agent,
            name="budget_agent",
            summary="One agent's limits and spend",
            tags=budget_tags,
            response_model=_OBJECT,
            responses={404: "No such agent"},
        )
    )
    register(
        RouteSpec(
            "/budget/agents/{id}",
            budget_agent,
            methods=("PUT",),
            name="budget_agent_update",
            summary="Set one agent's limits",
            tags=budget_tags,
            request_model=_limits_schema(AGENT_FIELDS),
            response_model=_OBJECT,
            responses={
                400: "A limit is not a finite non-negative number or null",
                404: "No such agent",
            },
        )
    )


__all__ = ["AGENT_FIELDS", "GLOBAL_FIELDS", "LimitsPolicy", "parse_limits", "register_routes"]
