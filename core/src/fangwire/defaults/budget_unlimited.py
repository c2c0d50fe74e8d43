"""The ``unlimited`` budget policy: allows every action.

It is the policy in force when the operator sets no limits; metering still records usage.
"""

from __future__ import annotations

from collections.abc import Callable

from fangwire.budget import BudgetAction, BudgetDecision, BudgetPolicy
from fangwire.hookspecs import hookimpl


class UnlimitedPolicy(BudgetPolicy):
    policy_id = "unlimited"
    description = "Allows every action; usage is still metered."

    async def check(self, action: BudgetAction) -> BudgetDecision:
        return BudgetDecision(allowed=True, policy=self.policy_id)


@hookimpl
def register_budget_policies(register: Callable[[type[BudgetPolicy]], None]) -> None:
    register(UnlimitedPolicy)
