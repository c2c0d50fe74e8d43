"""Tests of the usage and budget API (fangwire.defaults.usage_routes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from fangwire.budget import BudgetAction
from fangwire.budgeting import BudgetExceeded, gate_for
from fangwire.models import Usage
from fangwire.runtime import Runtime
from fangwire.testing.fixtures import MakeClient

pytestmark = pytest.mark.anyio

TENTH = Usage(input_tokens=100_000)  # $0.10 at the fallback price


class FakeAgents:
    """Stands in for ``runtime.agents``: only ``get`` is used by the budget API."""

    def __init__(self, **agents: Any) -> None:
        self.agents = agents

    async def get(self, agent_id: str) -> Any:
        return self.agents.get(agent_id)


def agent(agent_id: str, name: str, **limits: Any) -> Any:
    defaults = {"daily_limit_usd": None, "monthly_limit_usd": None, "max_tokens_per_call": None}
    return SimpleNamespace(id=agent_id, name=name, limits=SimpleNamespace(**{**defaults, **limits}))


@pytest.fixture
async def client(runtime: Runtime, make_client: MakeClient) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(runtime) as http:
        runtime.agents = FakeAgents(  # type: ignore[assignment]
            a1=agent("a1", "alpha"),
            a2=agent("a2", "beta", daily_limit_usd=2.0),
        )
        yield http


async def record(runtime: Runtime, agent_id: str | None = "a1", usage: Usage = TENTH) -> None:
    await runtime.usage.record(
        agent_id=agent_id, provider="test", model="m1", usage=usage, latency_ms=5.0
    )


async def audit_of(runtime: Runtime, event_type: str) -> list[Any]:
    entries, _ = await runtime.audit.log.recent(50)
    return [e for e in entries if e.event_type == event_type]


def error_message(response: httpx.Response) -> str:
    message: str = response.json()["error"]["message"]
    return message


# -- usage ----------------------------------------------------------------------------------


async def test_usage_totals(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await record(runtime)
    await record(runtime, "a2", Usage(input_tokens=10, output_tokens=20))
    body = (await client.get("/api/usage")).json()
    assert body == {
        "period": "day",
        "total_input_tokens": 100_010,
        "total_output_tokens": 20,
        "total_cost_usd": pytest.approx(0.10007, abs=1e-6),
        "request_count": 2,
        "active_agents": 2,
    }
    for period in ("hour", "day", "week", "month"):
        response = await client.get("/api/usage", params={"period": period})
        assert response.status_code == 200
        assert response.json()["period"] == period
        assert response.json()["request_count"] == 2


async def test_usage_unknown_period_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/usage", params={"period": "year"})
    assert response.status_code == 400
    assert error_message(response).startswith("period:")


async def test_usage_summary_shows_the_hourly_token_limit(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await record(runtime)
    body = (await client.get("/api/usage/summary")).json()
    assert body["today"] == {
        "input_tokens": 100_000,
        "output_tokens": 0,
        "cost_usd": 0.1,
        "requests": 1,
    }
    assert body["quota"]["hourly_token_limit"] is None
    assert body["quota"]["hourly_tokens_used"] == 100_000
    assert body["quota"]["hourly_reset_at"].endswith(":00:00Z")
    assert (await client.put("/api/budget", json={"hourly_token_limit": 500_000})).is_success
    body = (await client.get("/api/usage/summary")).json()
    assert body["quota"]["hourly_token_limit"] == 500_000


async def test_usage_by_model_and_daily(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await record(runtime)
    await record(runtime)
    models = (await client.get("/api/usage/by-model")).json()["models"]
    assert models == [
        {
            "model": "m1",
            "provider": "test",
            "input_tokens": 200_000,
            "output_tokens": 0,
            "cost_usd": 0.2,
            "request_count": 2,
        }
    ]
    days = (await client.get("/api/usage/daily")).json()["days"]
    assert len(days) == 7
    assert set(days[-1]) >= {"date", "input_tokens", "output_tokens", "cost_usd", "requests"}
    assert days[-1]["requests"] == 2 and days[0]["requests"] == 0
    assert len((await client.get("/api/usage/daily?days=366")).json()["days"]) == 366
    assert len((await client.get("/api/usage/daily?days=1")).json()["days"]) == 1
    for bad in ("0", "367", "x", "-1"):
        response = await client.get("/api/usage/daily", params={"days": bad})
        assert response.status_code == 400, bad
        assert error_message(response).startswith("days:")


# -- global budget --------------------------------------------------------------------------


async def test_budget_defaults(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/budget")).json()
    assert {
        k: body[k]
        for k in (
            "daily_limit_usd",
            "monthly_limit_usd",
            "today_spent_usd",
            "month_spent_usd",
            "status",
        )
    } == {
        "daily_limit_usd": None,
        "monthly_limit_usd": None,
        "today_spent_usd": 0.0,
        "month_spent_usd": 0.0,
        "status": "ok",
    }
    assert body["alert_threshold"] == 0.8
    assert body["daily_limit"] == 0.0 and body["daily_pct"] == 0.0


async def test_budget_put_then_get_round_trip(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await record(runtime)
    response = await client.put(
        "/api/budget", json={"daily_limit_usd": 0.12, "monthly_limit_usd": 10}
    )
    assert response.status_code == 200
    body = (await client.get("/api/budget")).json()
    assert body == response.json()
    assert body["daily_limit_usd"] == 0.12
    assert body["monthly_limit_usd"] == 10.0
    assert body["today_spent_usd"] == 0.1
    assert body["month_spent_usd"] == 0.1
    assert body["status"] == "warning"  # 0.10 >= 0.8 * 0.12
    assert body["daily_pct"] == pytest.approx(0.1 / 0.12, abs=1e-6)

    await client.put("/api/budget", json={"daily_limit_usd": 0.1})
    assert (await client.get("/api/budget")).json()["status"] == "exceeded"
    await client.put("/api/budget", json={"daily_limit_usd": None, "alert_threshold": 0.5})
    body = (await client.get("/api/budget")).json()
    assert (body["daily_limit_usd"], body["monthly_limit_usd"]) == (None, 10.0)
    assert (body["status"], body["alert_threshold"]) == ("ok", 0.5)


async def test_budget_accepts_the_reference_names(client: httpx.AsyncClient) -> None:
    body = (
        await client.put(
            "/api/budget",
            json={"max_daily_usd": 5, "monthly_limit": 50, "max_llm_tokens_per_hour": 1000},
        )
    ).json()
    assert (body["daily_limit_usd"], body["monthly_limit_usd"]) == (5.0, 50.0)
    assert body["hourly_token_limit"] == 1000
    # Under LibreFang's names 0 means "no limit", as it does there.
    body = (await client.put("/api/budget", json={"max_daily_usd": 0})).json()
    assert body["daily_limit_usd"] is None
    body = (await client.put("/api/budget", json={"daily_limit_usd": 0})).json()
    assert body["daily_limit_usd"] == 0.0


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"daily_limit_usd": -1}, "daily_limit_usd"),
        ({"hourly_limit_usd": 2.2e-313}, "hourly_limit_usd"),
        ({"monthly_limit_usd": "5"}, "monthly_limit_usd"),
        ({"daily_limit_usd": True}, "daily_limit_usd"),
        ({"max_daily_usd": [1]}, "max_daily_usd"),
        ({"alert_threshold": 1.5}, "alert_threshold"),
        ({"alert_threshold": None}, "alert_threshold"),
        ({"hourly_token_limit": 1.5}, "hourly_token_limit"),
        ({"hourly_token_limit": 2**63}, "hourly_token_limit"),
        ({"daily_limit": -0.5}, "daily_limit"),
        ({"spending_cap": 1}, "spending_cap"),
        ({"daily_limit_usd": 1, "max_daily_usd": 1}, "max_daily_usd"),
    ],
)
async def test_budget_put_validation(
    client: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    response = await client.put("/api/budget", json=payload)
    assert response.status_code == 400
    assert error_message(response).startswith(f"{field}:")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_budget_put_rejects_non_finite(client: httpx.AsyncClient, literal: str) -> None:
    response = await client.put(
        "/api/budget",
        content=f'{{"daily_limit_usd": {literal}}}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert error_message(response).startswith("daily_limit_usd:")


async def test_budget_put_needs_an_object_with_a_field(client: httpx.AsyncClient) -> None:
    assert (await client.put("/api/budget", json={})).status_code == 400
    assert (await client.put("/api/budget", json=[1])).status_code == 400
    bad_json = await client.put(
        "/api/budget", content=b"{", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400


async def test_budget_change_is_audited(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await client.put("/api/budget", json={"daily_limit_usd": 3})
    (entry,) = await audit_of(runtime, "budget_changed")
    assert entry.outcome == "ok"
    assert entry.details["scope"] == "global"
    assert entry.details["changes"] == {"daily_limit_usd": {"from": None, "to": 3.0}}


async def test_exceeded_is_audited(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await record(runtime)
    await client.put("/api/budget", json={"daily_limit_usd": 0.1})
    with pytest.raises(BudgetExceeded) as caught:
        await gate_for(runtime).reserve(
            BudgetAction(kind="model_call", agent_id="a1", estimated_cost_usd=0.01)
        )
    assert caught.value.message == "daily budget of $0.10 exceeded ($0.10 spent)"
    (entry,) = await audit_of(runtime, "budget_exceeded")
    assert entry.outcome == "denied"
    assert entry.agent_id == "a1"
    assert entry.details["limit"] == "daily_limit_usd"
    assert entry.details["limit_usd"] == 0.1


# -- per agent ------------------------------------------------------------------------------


async def test_budget_agents_ranked(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await record(runtime, "a1")
    await record(runtime, "a2")
    await record(runtime, "a2")
    await record(runtime, "gone")
    await record(runtime, None)
    ranked = (await client.get("/api/budget/agents")).json()
    assert [
        {k: row[k] for k in ("agent_id", "agent_name", "total_cost_usd", "today_cost_usd")}
        for row in ranked
    ] == [
        {"agent_id": "a2", "agent_name": "beta", "total_cost_usd": 0.2, "today_cost_usd": 0.2},
        {"agent_id": "a1", "agent_name": "alpha", "total_cost_usd": 0.1, "today_cost_usd": 0.1},
        {"agent_id": "gone", "agent_name": None, "total_cost_usd": 0.1, "today_cost_usd": 0.1},
    ]


async def test_agent_budget_get_put_round_trip(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await record(runtime, "a2")
    body = (await client.get("/api/budget/agents/a2")).json()
    assert (body["agent_id"], body["agent_name"]) == ("a2", "beta")
    assert (body["daily_limit_usd"], body["monthly_limit_usd"]) == (2.0, None)
    assert body["limits_source"] == "manifest"
    assert body["today_spent_usd"] == 0.1
    assert body["daily"] == {"spend": 0.1, "limit": 2.0, "pct": 0.05}

    response = await client.put(
        "/api/budget/agents/a2", json={"monthly_limit_usd": 0.1, "max_llm_tokens_per_hour": 9}
    )
    assert response.status_code == 200
    body = (await client.get("/api/budget/agents/a2")).json()
    assert body == response.json()
    assert (body["daily_limit_usd"], body["monthly_limit_usd"]) == (2.0, 0.1)
    assert body["hourly_token_limit"] == 9
    assert body["limits_source"] == "budget"
    assert body["status"] == "exceeded"
    (entry,) = await audit_of(runtime, "budget_changed")
    assert entry.agent_id == "a2"
    assert entry.details["scope"] == "agent"
    assert set(entry.details["changes"]) == {"monthly_limit_usd", "hourly_token_limit"}

    with pytest.raises(BudgetExceeded) as caught:
        await gate_for(runtime).reserve(
            BudgetAction(kind="model_call", agent_id="a2", estimated_cost_usd=0.0)
        )
    assert caught.value.limit_name == "agent.monthly_limit_usd"


async def test_agent_budget_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/budget/agents/nobody")).status_code == 404
    response = await client.put("/api/budget/agents/nobody", json={"daily_limit_usd": 1})
    assert response.status_code == 404


async def test_agent_budget_put_validation(client: httpx.AsyncClient) -> None:
    for payload, field in (
        ({}, "request body"),
        ({"daily_limit_usd": -1}, "daily_limit_usd"),
        ({"max_cost_per_day_usd": "x"}, "max_cost_per_day_usd"),
        ({"alert_threshold": 0.5}, "alert_threshold"),
    ):
        response = await client.put("/api/budget/agents/a1", json=payload)
        assert response.status_code == 400, payload
        assert error_message(response).startswith(f"{field}:"), error_message(response)


async def test_budget_routes_are_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/openapi.json")
    if response.status_code == 404:
        pytest.skip("no OpenAPI route")
    paths = response.json()["paths"]
    for path in ("/api/usage", "/api/usage/summary", "/api/budget", "/api/budget/agents/{id}"):
        assert path in paths
