"""Tests of the budget gate (fangwire.budgeting.gate) and the ``limits`` policy."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from fangwire.budget import BudgetAction, BudgetDecision, BudgetPolicy, Pending
from fangwire.budgeting import BudgetExceeded, BudgetGate, gate_for
from fangwire.defaults.budget_limits import (
    Limits,
    LimitsPolicy,
    format_usd,
    status_of,
    worst,
)
from fangwire.models import Usage
from fangwire.runtime import Runtime
from fangwire.testing.fixtures import MakeRuntime

pytestmark = pytest.mark.anyio

# Fallback-priced provider ($1/M input, $3/M output): 100k input tokens cost $0.10.
TENTH = Usage(input_tokens=100_000)


@pytest.fixture
async def served(runtime: Runtime) -> AsyncIterator[Runtime]:
    async with runtime.serving():
        yield runtime


def policy(runtime: Runtime) -> LimitsPolicy:
    found = runtime.budget_policies["limits"]
    assert isinstance(found, LimitsPolicy)
    return found


async def set_limits(runtime: Runtime, **limits: object) -> None:
    await policy(runtime).limits.set_global_limits(Limits(**limits))  # type: ignore[arg-type]


def call(cost: float = 0.1, *, agent: str | None = None, tokens: int = 0) -> BudgetAction:
    return BudgetAction(
        kind="model_call", agent_id=agent, estimated_cost_usd=cost, estimated_tokens=tokens
    )


async def spend(runtime: Runtime, usage: Usage = TENTH, agent: str | None = None) -> None:
    await runtime.usage.record(
        agent_id=agent, provider="test", model="m", usage=usage, latency_ms=1.0
    )


# -- registration ---------------------------------------------------------------------------


def test_limits_policy_is_registered_next_to_unlimited(runtime: Runtime) -> None:
    assert {"limits", "unlimited"} <= set(runtime.budget_policies)
    assert runtime.pm.records["limits"].status == "loaded"


def test_gate_for_returns_one_gate_per_runtime(make_runtime: MakeRuntime) -> None:
    first = make_runtime()
    assert gate_for(first) is gate_for(first)
    assert isinstance(gate_for(first), BudgetGate)


async def test_unlimited_policy_still_decides_alone(runtime: Runtime) -> None:
    unlimited = runtime.budget_policies["unlimited"]
    decision = await unlimited.check_pending(call(1e9), Pending(usd=1e9))
    assert decision == BudgetDecision(allowed=True, policy="unlimited")


# -- reservation semantics ------------------------------------------------------------------


async def test_no_limits_admits_everything(served: Runtime) -> None:
    gate = BudgetGate(served)
    reservations = [await gate.reserve(call(100.0)) for _ in range(5)]
    assert len(gate.reservations) == 5
    assert gate.pending().usd == pytest.approx(500.0)
    for r in reservations:
        r.release()
    assert gate.reservations == []


async def test_reservations_count_against_the_limit(served: Runtime) -> None:
    await set_limits(served, daily_limit_usd=0.25)
    gate = BudgetGate(served)
    first = await gate.reserve(call(0.1))
    second = await gate.reserve(call(0.1))
    with pytest.raises(BudgetExceeded) as caught:
        await gate.reserve(call(0.1))
    exc = caught.value
    assert exc.limit_name == "daily_limit_usd"
    assert exc.status == 429 and exc.code == "budget_exceeded"
    assert "daily budget of $0.25 would be exceeded" in exc.message
    assert exc.retry_after_seconds is not None and 0 < exc.retry_after_seconds <= 86400
    assert int(exc.headers["Retry-After"]) >= 1
    # Releasing frees the estimate.
    first.release()
    third = await gate.reserve(call(0.1))
    for r in (second, third):
        r.release()


async def test_settle_frees_pending_and_spend_then_counts(served: Runtime) -> None:
    await set_limits(served, daily_limit_usd=0.2)
    gate = BudgetGate(served)
    r = await gate.reserve(call(0.1))
    await spend(served)  # the call really cost $0.10
    r.settle(0.1, 100_000)
    assert (r.state, r.actual_cost_usd, r.actual_tokens) == ("settled", 0.1, 100_000)
    assert gate.pending() == Pending()
    r.release()  # no-op once settled
    assert r.state == "settled"
    second = await gate.reserve(call(0.1))
    with pytest.raises(BudgetExceeded):
        await gate.reserve(call(0.01))
    second.release()


async def test_async_with_releases_unless_settled(served: Runtime) -> None:
    gate = BudgetGate(served)
    async with gate.reserve(call(0.5)) as r:
        assert gate.pending().usd == pytest.approx(0.5)
    assert r.state == "released"
    assert gate.pending().usd == 0.0
    with pytest.raises(RuntimeError):
        async with gate.reserve(call(0.5)) as failing:
            raise RuntimeError("provider down")
    assert failing.state == "released"
    async with gate.reserve(call(0.5)) as settled:
        settled.settle(0.4, 10)
    assert settled.state == "settled"


async def test_settle_rejects_bad_values(served: Runtime) -> None:
    r = await BudgetGate(served).reserve(call(0.1))
    for cost, tokens in ((float("nan"), 1), (-1.0, 1), (0.1, -1)):
        with pytest.raises(ValueError):
            r.settle(cost, tokens)
    with pytest.raises(TypeError):
        r.settle("0.1", 1)  # type: ignore[arg-type]
    assert r.active
    r.release()


async def test_bad_estimates_are_rejected(served: Runtime) -> None:
    gate = BudgetGate(served)
    for action in (call(float("nan")), call(-0.1), call(0.1, tokens=-1)):
        with pytest.raises(ValueError):
            await gate.reserve(action)
    assert gate.reservations == []


async def test_concurrent_reservations_admit_exactly_k(served: Runtime) -> None:
    await set_limits(served, daily_limit_usd=0.7)
    gate = BudgetGate(served)
    admitted: list[object] = []
    refused: list[BudgetExceeded] = []

    async def one() -> None:
        try:
            admitted.append(await gate.reserve(call(0.1)))
        except BudgetExceeded as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(one)
    assert len(admitted) == 7
    assert len(refused) == 43
    assert {exc.limit_name for exc in refused} == {"daily_limit_usd"}
    assert "daily budget of $0.70 exceeded ($0.70 spent or reserved)" in refused[-1].message


async def test_concurrent_reservations_with_spend_already_recorded(served: Runtime) -> None:
    await spend(served)
    await spend(served)  # $0.20 spent; $0.50 left = 5 calls of $0.10
    await set_limits(served, daily_limit_usd=0.7)
    gate = BudgetGate(served)
    results: list[bool] = []

    async def one() -> None:
        try:
            await gate.reserve(call(0.1))
            results.append(True)
        except BudgetExceeded:
            results.append(False)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert results.count(True) == 5


async def test_per_agent_limits_and_tokens(served: Runtime) -> None:
    limits = policy(served).limits
    await limits.set_agent_limits("a1", Limits(monthly_limit_usd=0.15))
    gate = BudgetGate(served)
    await spend(served, agent="a1")
    with pytest.raises(BudgetExceeded) as caught:
        await gate.reserve(call(0.1, agent="a1"))
    assert caught.value.limit_name == "agent.monthly_limit_usd"
    assert "agent 'a1' monthly budget" in caught.value.message
    # Another agent, and calls without an agent, are not held to a1's limit.
    (await gate.reserve(call(0.1, agent="a2"))).release()
    (await gate.reserve(call(0.1))).release()

    await set_limits(served, hourly_token_limit=150_000)
    first = await gate.reserve(call(0.0, agent="a2", tokens=40_000))  # 100k used + 40k
    with pytest.raises(BudgetExceeded) as caught:
        await gate.reserve(call(0.0, agent="a2", tokens=20_000))
    assert caught.value.limit_name == "hourly_token_limit"
    assert "hourly token limit of 150000 would be exceeded" in caught.value.message
    first.release()


async def test_refusal_is_audited_and_published(served: Runtime) -> None:
    await set_limits(served, daily_limit_usd=0.0)
    gate = BudgetGate(served)
    async with served.bus.subscribe() as events:
        with pytest.raises(BudgetExceeded):
            await gate.reserve(call(0.1, agent="a9"))
        event = await events.receive()
    assert event.kind == "budget.exceeded"
    assert event.payload["agent_id"] == "a9"
    assert event.payload["limit"] == "daily_limit_usd"
    entries, _ = await served.audit.log.recent(5)
    entry = next(e for e in entries if e.event_type == "budget_exceeded")
    assert entry.outcome == "denied"
    assert entry.agent_id == "a9"


async def test_other_policies_refuse_through_the_gate(served: Runtime) -> None:
    class Never(BudgetPolicy):
        policy_id = "never"

        async def check(self, action: BudgetAction) -> BudgetDecision:
            return BudgetDecision(allowed=False, policy="never", reason="closed today")

    served.budget_policies["never"] = Never(served)
    with pytest.raises(BudgetExceeded) as caught:
        await BudgetGate(served).reserve(call(0.0))
    assert (caught.value.limit_name, caught.value.message) == ("never", "closed today")


# -- status --------------------------------------------------------------------------------


def test_status_thresholds() -> None:
    assert status_of(1.0, None, 0.8) == "ok"
    assert status_of(0.79, 1.0, 0.8) == "ok"
    assert status_of(0.8, 1.0, 0.8) == "warning"
    assert status_of(0.99, 1.0, 0.8) == "warning"
    assert status_of(1.0, 1.0, 0.8) == "exceeded"
    assert status_of(1.5, 1.0, 0.8) == "exceeded"
    assert status_of(0.0, 0.0, 0.8) == "exceeded"
    assert status_of(0.5, 1.0, 0.5) == "warning"
    assert worst(["ok", "warning", "ok"]) == "warning"
    assert worst(["warning", "exceeded"]) == "exceeded"
    assert worst([]) == "ok"


def test_format_usd() -> None:
    assert format_usd(5) == "$5.00"
    assert format_usd(5.01) == "$5.01"
    assert format_usd(0.004) == "$0.004"
