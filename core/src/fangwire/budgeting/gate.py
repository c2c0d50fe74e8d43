"""The budget gate: every registered budget policy, run before a metered action, with
reservations so that concurrent actions cannot together overshoot a limit.

Usage (one gate per runtime, :func:`gate_for`)::

    gate = gate_for(runtime)
    action = BudgetAction(kind="model_call", agent_id=a, estimated_cost_usd=0.1)
    async with gate.reserve(action) as r:
        reply = await provider.complete(...)
        await runtime.usage.record(...)          # record first, then settle
        r.settle(event.cost_usd, tokens)

``reserve`` checks every policy and reserves the action's estimate under one lock, so N
concurrent calls against a budget that admits K admit exactly K. The estimate stays *pending*
(counted as spent by the policies) until the reservation is settled or released; leaving the
``async with`` block releases it if that has not happened. A refusal raises
:class:`BudgetExceeded` (HTTP 429, code ``budget_exceeded``), is audited as
``budget_exceeded`` and published on the bus as ``budget.exceeded``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from fangwire.budget import BudgetAction, BudgetDecision, Pending
from fangwire.bus import BusEvent
from fangwire.http.errors import ApiError

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

__all__ = ["BudgetExceeded", "BudgetGate", "Reservation", "ReserveCall", "gate_for"]

log = logging.getLogger("fangwire.budget")


class BudgetExceeded(ApiError):
    """A budget policy refused an action. Served as HTTP 429 with code ``budget_exceeded``
    (and ``Retry-After`` when the limit resets at a known time)."""

    def __init__(
        self,
        limit_name: str,
        message: str,
        retry_after_seconds: float | None = None,
        *,
        policy: str = "",
    ) -> None:
        headers = {}
        if retry_after_seconds is not None:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after_seconds)))
        super().__init__(429, message, code="budget_exceeded", headers=headers)
        self.limit_name = limit_name
        self.retry_after_seconds = retry_after_seconds
        self.policy = policy


class Reservation:
    """An admitted action's hold on the budget, until :meth:`settle` or :meth:`release`."""

    def __init__(self, gate: BudgetGate, reservation_id: int, action: BudgetAction) -> None:
        self._gate = gate
        self.id = reservation_id
        self.action = action
        self.actual_cost_usd: float | None = None
        self.actual_tokens: int | None = None
        self.state = "pending"  # then "settled" or "released"

    @property
    def active(self) -> bool:
        return self.state == "pending"

    def settle(self, actual_cost_usd: float, actual_tokens: int) -> None:
        """The action ran and cost this much. Record its usage (``runtime.usage.record``)
        *before* settling: settling stops counting the estimate. A second call is a no-op."""
        if isinstance(actual_cost_usd, bool) or not isinstance(actual_cost_usd, int | float):
            raise TypeError("actual_cost_usd must be a number")
        if not math.isfinite(actual_cost_usd) or actual_cost_usd < 0:
            raise ValueError("actual_cost_usd must be a finite number >= 0")
        if isinstance(actual_tokens, bool) or not isinstance(actual_tokens, int):
            raise TypeError("actual_tokens must be an integer")
        if actual_tokens < 0:
            raise ValueError("actual_tokens must be >= 0")
        if not self.active:
            return
        self.actual_cost_usd = float(actual_cost_usd)
        self.actual_tokens = actual_tokens
        self.state = "settled"
        self._gate._forget(self)

    def release(self) -> None:
        """The action did not run (or failed before costing anything): free the estimate.
        No-op once settled or released."""
        if not self.active:
            return
        self.state = "released"
        self._gate._forget(self)

    def __repr__(self) -> str:
        return f"<Reservation {self.id} {self.state} {self.action.kind} {self.action.agent_id}>"


class ReserveCall:
    """What :meth:`BudgetGate.reserve` returns: await it for a :class:`Reservation`, or use it
    as ``async with`` (the reservation is released on exit unless settled)."""

    def __init__(self, gate: BudgetGate, action: BudgetAction) -> None:
        self._gate = gate
        self._action = action
        self._reservation: Reservation | None = None

    def __await__(self) -> Generator[Any, None, Reservation]:
        return self._gate._reserve(self._action).__await__()

    async def __aenter__(self) -> Reservation:
        self._reservation = await self._gate._reserve(self._action)
        return self._reservation

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reservation is not None:
            self._reservation.release()


def _check_action(action: BudgetAction) -> None:
    cost, tokens = action.estimated_cost_usd, action.estimated_tokens
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        raise TypeError("estimated_cost_usd must be a number")
    if not math.isfinite(cost) or cost < 0:
        raise ValueError("estimated_cost_usd must be a finite number >= 0")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError("estimated_tokens must be an integer >= 0")


class BudgetGate:
    """Runs ``runtime.budget_policies`` (in policy-id order) before each metered action and
    keeps the pending reservations. Use one gate per runtime (:func:`gate_for`)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lock = anyio.Lock()
        self._ids = itertools.count(1)
        self._active: dict[int, Reservation] = {}

    def reserve(self, action: BudgetAction) -> ReserveCall:
        """Check ``action`` against every policy and reserve its estimate; raises
        :class:`BudgetExceeded` when a policy refuses."""
        return ReserveCall(self, action)

    @property
    def reservations(self) -> list[Reservation]:
        """The active (unsettled) reservations, oldest first."""
        return list(self._active.values())

    def pending(self) -> Pending:
        """The sum of the active reservations' estimates, overall and per agent."""
        usd, tokens = 0.0, 0
        agent_usd: dict[str, float] = {}
        agent_tokens: dict[str, int] = {}
        for reservation in self._active.values():
            action = reservation.action
            usd += action.estimated_cost_usd
            tokens += action.estimated_tokens
            if action.agent_id is not None:
                agent_usd[action.agent_id] = (
                    agent_usd.get(action.agent_id, 0.0) + action.estimated_cost_usd
                )
                agent_tokens[action.agent_id] = (
                    agent_tokens.get(action.agent_id, 0) + action.estimated_tokens
                )
        return Pending(usd=usd, tokens=tokens, agent_usd=agent_usd, agent_tokens=agent_tokens)

    async def check(self, action: BudgetAction) -> BudgetDecision:
        """Run every policy against ``action`` (pending reservations counted), reserving
        nothing; the first refusal, or an allowing decision."""
        _check_action(action)
        return await self._decide(action)

    async def _decide(self, action: BudgetAction) -> BudgetDecision:
        pending = self.pending()
        policies = self.runtime.budget_policies
        for policy_id in sorted(policies):
            decision = await policies[policy_id].check_pending(action, pending)
            if not decision.allowed:
                return decision
        return BudgetDecision(allowed=True, policy="*")

    async def _reserve(self, action: BudgetAction) -> Reservation:
        _check_action(action)
        async with self._lock:
            decision = await self._decide(action)
            if decision.allowed:
                reservation = Reservation(self, next(self._ids), action)
                self._active[reservation.id] = reservation
                return reservation
        await self._refused(action, decision)
        raise BudgetExceeded(
            decision.limit or decision.policy,
            decision.reason or f"refused by budget policy {decision.policy!r}",
            decision.retry_after_seconds,
            policy=decision.policy,
        )

    async def _refused(self, action: BudgetAction, decision: BudgetDecision) -> None:
        details: dict[str, Any] = {
            "policy": decision.policy,
            "limit": decision.limit or decision.policy,
            "reason": decision.reason,
            "kind": action.kind,
            "estimated_cost_usd": action.estimated_cost_usd,
            "estimated_tokens": action.estimated_tokens,
            **decision.details,
        }
        self.runtime.bus.publish(
            BusEvent(kind="budget.exceeded", payload={"agent_id": action.agent_id, **details})
        )
        try:
            await self.runtime.audit.record(
                "budget_exceeded", agent_id=action.agent_id, details=details, outcome="denied"
            )
        except Exception:
            # The refusal stands either way; a failing audit log is reported by its own probe.
            log.exception("could not audit a budget refusal")

    def _forget(self, reservation: Reservation) -> None:
        self._active.pop(reservation.id, None)


def gate_for(runtime: Runtime) -> BudgetGate:
    """The one budget gate of ``runtime`` (``runtime.budget``)."""
    return runtime.budget
