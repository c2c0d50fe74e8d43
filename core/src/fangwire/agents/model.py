"""Agents as the daemon keeps them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import attrs

AgentState = Literal["running", "suspended", "terminated"]


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise ValueError(f"{attribute.name}: must be a finite number >= 0, got {value}")


@attrs.frozen
class AgentLimits:
    """What one agent may spend. ``None`` means no limit of its own."""

    max_tokens_per_call: int | None = attrs.field(default=None, validator=_non_negative)
    daily_limit_usd: float | None = attrs.field(default=None, validator=_non_negative)
    monthly_limit_usd: float | None = attrs.field(default=None, validator=_non_negative)

    def within(self, parent: AgentLimits) -> list[str]:
        """Names of the limits that exceed ``parent``'s (a child may never hold more)."""
        problems = []
        for name in ("max_tokens_per_call", "daily_limit_usd", "monthly_limit_usd"):
            mine, theirs = getattr(self, name), getattr(parent, name)
            if theirs is not None and (mine is None or mine > theirs):
                problems.append(name)
        return problems


@attrs.frozen
class Agent:
    """An agent: a model behind a name, with a system prompt, tools and limits."""

    id: str
    name: str
    provider: str
    model: str
    system_prompt: str = ""
    tools: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    limits: AgentLimits = attrs.field(factory=AgentLimits)
    state: AgentState = "running"
    parent_id: str | None = None
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        body = attrs.asdict(self)
        body["tools"] = list(self.tools)
        body["skills"] = list(self.skills)
        return body

    @classmethod
    def from_row(cls, row: Mapping[str, Any], converter: Any) -> Agent:
        import json

        data = json.loads(row["spec"])
        agent: Agent = converter.structure(
            {**data, "id": row["id"], "state": row["state"], "created_at": row["created_at"]},
            cls,
        )
        return agent
