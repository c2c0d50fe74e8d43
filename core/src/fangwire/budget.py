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
    """The outcome of a check. ``reason`` is shown to the caller when ``allowed`` is false."""

    allowed: bool
    policy: str
    reason: str = ""
    retry_after_seconds: float | None = None


class BudgetPolicy:
    """Base class for policies registered through ``register_budget_policies``."""

    policy_id: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def check(self, action: BudgetAction) -> BudgetDecision:
        """Decide whether ``action`` may run. Must not block the event loop."""
        raise NotImplementedError
