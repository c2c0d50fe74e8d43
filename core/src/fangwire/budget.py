"""Budget policies: decide, before a metered action runs, whether it may proceed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    from fangwire.runtime import Runtime


@attrs.frozen
class BudgetAction:
    """Something that costs: a model call, a tool run, an outbound message.

    ``estimated_cost_usd`` and ``estimated_tokens`` are the caller's best estimate before the
    action; policies compare them with what has already been spent.
    """

    kind: str
    agent_id: str | None = None
    estimated_tokens: int = 0
    estimated_cost_usd: float = 0.0
    attributes: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class BudgetDecision:
    """The outcome of a check. ``reason`` is shown to the caller when ``allowed`` is false.

    ``limit`` names the limit that refused (``"daily_limit_usd"``, ...) and ``details`` holds
    the figures behind a refusal (safe to audit).
    """

    allowed: bool
    policy: str
    reason: str = ""
    retry_after_seconds: float | None = None
    limit: str = ""
    details: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Pending:
    """What admitted but unsettled actions (reservations) may still spend.

    Policies add it to what has already been spent, so concurrent actions cannot together
    overshoot a limit.
    """

    usd: float = 0.0
    tokens: int = 0
    agent_usd: Mapping[str, float] = attrs.field(factory=dict)
    agent_tokens: Mapping[str, int] = attrs.field(factory=dict)

    def usd_for(self, agent_id: str | None) -> float:
        """Pending dollars of ``agent_id``, or of everyone when ``None``."""
        return self.usd if agent_id is None else self.agent_usd.get(agent_id, 0.0)

    def tokens_for(self, agent_id: str | None) -> int:
        """Pending tokens of ``agent_id``, or of everyone when ``None``."""
        return self.tokens if agent_id is None else self.agent_tokens.get(agent_id, 0)


class BudgetPolicy:
    """Base class for policies registered through ``register_budget_policies``."""

    policy_id: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def check(self, action: BudgetAction) -> BudgetDecision:
        """Decide whether ``action`` may run. Must not block the event loop."""
        raise NotImplementedError

    async def check_pending(self, action: BudgetAction, pending: Pending) -> BudgetDecision:
        """Decide with ``pending`` reservations counted as spent. Policies that track spend
        override this; the default ignores ``pending`` and calls :meth:`check`."""
        return await self.check(action)
