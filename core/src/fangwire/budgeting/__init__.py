"""Budget enforcement: the gate every metered action passes through (see :mod:`.gate`)."""

from fangwire.budgeting.gate import BudgetExceeded, BudgetGate, Reservation, gate_for

__all__ = ["BudgetExceeded", "BudgetGate", "Reservation", "gate_for"]
