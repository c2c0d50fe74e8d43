"""The agent registry: spawn, list, kill, and talk to agents.

Agents are kept in the store and survive restarts. A fresh home gets one agent, ``assistant``
on the offline ``echo`` provider, so the daemon answers out of the box. Spawning and killing
are audited and published on the bus (``agent_spawned``, ``agent_terminated``).

Capability inheritance: an agent spawned by another agent never holds a tool or a limit beyond
its parent's; such a spawn is refused (:class:`CapabilityDenied`) and audited.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from fangwire.agents.model import Agent, AgentLimits
from fangwire.agents.repair import RepairStats, repair_history
from fangwire.agents.schema import AGENT_MIGRATIONS
from fangwire.budget import BudgetAction
from fangwire.budgeting import gate_for
from fangwire.bus import BusEvent
from fangwire.models import ChatMessage, CompletionRequest, ModelError, Usage
from fangwire.security.registry import SystemState
from fangwire.timeutil import rfc3339

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

#: Messages of history sent with each call (the newest ones).
HISTORY_WINDOW = 40
#: Output tokens reserved against budgets when the agent sets no cap.
ESTIMATED_OUTPUT_TOKENS = 512


class AgentNotFound(LookupError):
    """No such agent (or it was terminated)."""


class CapabilityDenied(PermissionError):
    """A spawn asked for more than its parent holds."""


class AgentCallFailed(Exception):
    """The agent's model call failed; ``reason`` is the provider's, safe to show."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@attrs.frozen
class AgentSpec:
    """What a spawn asks for."""

    name: str
    provider: str
    model: str
    system_prompt: str = ""
    tools: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    limits: AgentLimits = attrs.field(factory=AgentLimits)


DEFAULT_AGENT = AgentSpec(name="assistant", provider="echo", model="echo-1")


@attrs.frozen
class Reply:
    """An agent's answer to one message."""

    agent_id: str
    text: str
    usage: Usage
    cost_usd: float
    latency_ms: float
    model: str
    provider: str


class AgentRegistry:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.repairs = RepairStats()
        # This process is the only writer of the agents table, so agents read once are served
        # from memory (every message looks its agent up several times).
        self._cache: dict[str, Agent] = {}
        self.inheritance_checks = 0
        self.inheritance_denials = 0
        self._open = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        await self.runtime.store.migrate(AGENT_MIGRATIONS)
        row = await self.runtime.store.fetch_one("SELECT COUNT(*) AS n FROM agents")
        if row is not None and row["n"] == 0 and self.runtime.config.agents.default_agent:
            await self.spawn(DEFAULT_AGENT, actor="system")
        self._open = True

    def close(self) -> None:
        self._open = False
        self._cache.clear()

    # -- reading ------------------------------------------------------------------------------

    async def get(self, agent_id: str) -> Agent | None:
        cached = self._cache.get(agent_id)
        if cached is not None:
            return cached
        row = await self.runtime.store.fetch_one("SELECT * FROM agents WHERE id = ?", (agent_id,))
        if row is None:
            return None
        agent = self._cache[agent_id] = Agent.from_row(row, self.runtime.converter)
        return agent

    async def all(self, *, include_terminated: bool = False) -> list[Agent]:
        where = "" if include_terminated else "WHERE state != 'terminated'"
        rows = await self.runtime.store.fetch_all(
            f"SELECT * FROM agents {where} ORDER BY created_at, id"  # noqa: S608
        )
        return [Agent.from_row(row, self.runtime.converter) for row in rows]

    async def find(self, name_or_id: str) -> Agent | None:
        """An agent by id, or else by name (the newest running one of that name)."""
        agent = await self.get(name_or_id)
        if agent is not None:
            return agent
        named = [
            a for a in self._cache.values() if a.name == name_or_id and a.state != "terminated"
        ]
        if named:
            return max(named, key=lambda a: a.created_at)
        row = await self.runtime.store.fetch_one(
            "SELECT * FROM agents WHERE name = ? AND state != 'terminated'"
            " ORDER BY created_at DESC LIMIT 1",
            (name_or_id,),
        )
        return None if row is None else Agent.from_row(row, self.runtime.converter)

    # -- changing -----------------------------------------------------------------------------

    async def spawn(self, spec: AgentSpec, *, actor: str, parent_id: str | None = None) -> Agent:
        """Create an agent. Raises ``ValueError`` for an unknown provider,
        :class:`AgentNotFound` for an unknown parent and :class:`CapabilityDenied`."""
        provider = self.runtime.model_providers.get(spec.provider)
        if provider is None:
            known = ", ".join(sorted(self.runtime.model_providers)) or "none"
            raise ValueError(f"provider: unknown provider {spec.provider!r} (known: {known})")
        if parent_id is not None:
            await self._check_inheritance(spec, parent_id, actor)
        agent = Agent(
            id=str(uuid.uuid4()),
            name=spec.name,
            provider=spec.provider,
            model=spec.model,
            system_prompt=spec.system_prompt,
            tools=tuple(spec.tools),
            skills=tuple(spec.skills),
            limits=spec.limits,
            parent_id=parent_id,
            created_at=rfc3339(),
        )
        await self.runtime.audit.record(
            "agent_spawned",
            agent_id=agent.id,
            details={"name": agent.name, "provider": agent.provider, "model": agent.model,
                     "parent_id": parent_id, "actor": actor},
        )  # fmt: skip
        spec_json = self.runtime.converter.unstructure(agent)
        for key in ("id", "state", "created_at"):
            spec_json.pop(key)
        await self.runtime.store.execute(
            "INSERT INTO agents (id, name, spec, state, parent_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (agent.id, agent.name, json.dumps(spec_json), agent.state, parent_id,
             agent.created_at),
        )  # fmt: skip
        self._cache[agent.id] = agent
        self.runtime.bus.publish(
            BusEvent(kind="agent_spawned", payload={"agent_id": agent.id, "name": agent.name})
        )
        return agent

    async def _check_inheritance(self, spec: AgentSpec, parent_id: str, actor: str) -> None:
        self.inheritance_checks += 1
        parent = await self.get(parent_id)
        if parent is None or parent.state == "terminated":
            raise AgentNotFound(f"no running parent agent {parent_id!r}")
        problems = [f"tool {t!r}" for t in spec.tools if t not in parent.tools]
        problems += [f"limit {n}" for n in spec.limits.within(parent.limits)]
        if problems:
            self.inheritance_denials += 1
            await self.runtime.audit.record(
                "capability_denied",
                agent_id=parent_id,
                details={"child": spec.name, "exceeds": problems, "actor": actor},
                outcome="denied",
            )
            raise CapabilityDenied(
                f"a child of agent {parent.name!r} cannot hold " + ", ".join(problems)
            )

    async def kill(self, agent_id: str, *, actor: str) -> Agent:
        agent = await self.get(agent_id)
        if agent is None or agent.state == "terminated":
            raise AgentNotFound(f"no running agent {agent_id!r}")
        await self.runtime.audit.record(
            "agent_terminated", agent_id=agent_id, details={"name": agent.name, "actor": actor}
        )
        await self.runtime.store.execute(
            "UPDATE agents SET state = 'terminated' WHERE id = ?", (agent_id,)
        )
        terminated = self._cache[agent_id] = attrs.evolve(agent, state="terminated")
        self.runtime.bus.publish(
            BusEvent(kind="agent_terminated", payload={"agent_id": agent_id, "name": agent.name})
        )
        return terminated

    # -- talking ------------------------------------------------------------------------------

    async def history(self, agent_id: str, limit: int = HISTORY_WINDOW) -> list[ChatMessage]:
        rows = await self.runtime.store.fetch_all(
            "SELECT role, content FROM agent_messages WHERE agent_id = ? ORDER BY id DESC LIMIT ?",
            (agent_id, limit),
        )
        return [ChatMessage(role=r["role"], content=r["content"]) for r in reversed(rows)]

    async def message(
        self,
        agent_id: str,
        text: str,
        *,
        sender: str = "api",
        channel: str | None = None,
    ) -> Reply:
        """Send ``text`` to the agent and return its answer once metered and stored.
        A failed model call raises :class:`AgentCallFailed` (and is published as such)."""
        agent = await self.get(agent_id)
        if agent is None or agent.state != "running":
            raise AgentNotFound(f"no running agent {agent_id!r}")
        provider = self.runtime.model_providers.get(agent.provider)
        if provider is None:
            raise AgentCallFailed(f"provider {agent.provider!r} is not available")
        history = await self.history(agent.id)
        conversation = [*history, ChatMessage(role="user", content=text)]
        messages = repair_history(conversation, self.repairs)
        if agent.system_prompt:
            messages.insert(0, ChatMessage(role="system", content=agent.system_prompt))
        request = CompletionRequest(
            model=agent.model,
            messages=messages,
            max_tokens=agent.limits.max_tokens_per_call,
            settings=self._settings(agent),
        )
        reservation = await gate_for(self.runtime).reserve(self._estimate(agent, messages))
        started = time.perf_counter()
        try:
            completion = await provider.complete(request)
        except ModelError as exc:
            reservation.release()
            self.runtime.bus.publish(
                BusEvent(
                    kind="agent_message",
                    payload={"agent_id": agent.id, "from": sender, "error": exc.reason},
                )
            )
            raise AgentCallFailed(exc.reason, status=exc.status) from exc
        except BaseException:
            reservation.release()
            raise
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            event = await self.runtime.usage.record(
                agent_id=agent.id,
                provider=agent.provider,
                model=agent.model,
                usage=completion.usage,
                latency_ms=latency_ms,
                channel=channel,
            )
        except BaseException:
            reservation.release()
            raise
        reservation.settle(event.cost_usd, completion.usage.total_tokens)
        stamp = rfc3339()
        rows = [(agent.id, "user", text, stamp), (agent.id, "assistant", completion.text, stamp)]

        def store_turn(conn: sqlite3.Connection) -> None:
            # Return nothing: a cursor must never leave the writer thread.
            conn.executemany(
                "INSERT INTO agent_messages (agent_id, role, content, timestamp)"
                " VALUES (?, ?, ?, ?)",
                rows,
            )

        await self.runtime.store.write(store_turn)
        self.runtime.bus.publish(
            BusEvent(
                kind="agent_message",
                payload={
                    "agent_id": agent.id,
                    "from": sender,
                    "channel": channel,
                    "input_tokens": completion.usage.input_tokens,
                    "output_tokens": completion.usage.output_tokens,
                },
            )
        )
        return Reply(
            agent_id=agent.id,
            text=completion.text,
            usage=completion.usage,
            cost_usd=event.cost_usd,
            latency_ms=latency_ms,
            model=agent.model,
            provider=agent.provider,
        )

    def _estimate(self, agent: Agent, messages: Sequence[ChatMessage]) -> BudgetAction:
        """What the call will probably cost, reserved against budgets before it runs:
        about four characters per input token, and the output cap (or 512 tokens)."""
        input_tokens = sum(len(m.content) for m in messages) // 4 + 4 * len(messages)
        output_tokens = agent.limits.max_tokens_per_call or ESTIMATED_OUTPUT_TOKENS
        price, _ = self.runtime.catalog.price(agent.provider, agent.model)
        cost = self.runtime.catalog.cost(Usage(input_tokens, output_tokens), price)
        return BudgetAction(
            kind="model_call",
            agent_id=agent.id,
            estimated_tokens=input_tokens + output_tokens,
            estimated_cost_usd=cost,
        )

    def _settings(self, agent: Agent) -> Mapping[str, Any]:
        return self.runtime.config.providers.get(agent.provider, {})

    # -- security report ----------------------------------------------------------------------

    # Both run inside message() and spawn(), which serve only while the registry is open.

    def repair_state(self) -> SystemState:
        if not self._open:
            return SystemState("inactive", {"reason": "the agent registry is not open"})
        return SystemState("active", self.repairs.to_json())

    def inheritance_state(self) -> SystemState:
        if not self._open:
            return SystemState("inactive", {"reason": "the agent registry is not open"})
        return SystemState(
            "active",
            {"checks": self.inheritance_checks, "denials": self.inheritance_denials},
        )


def spec_from_manifest(text: str) -> dict[str, Any]:
    """The spawn body described by a LibreFang-style agent manifest (TOML): ``name``,
    ``[model] provider/model`` (or top-level ``provider``/``model``), ``system_prompt``,
    ``tools``, ``skills``. Raises ``ValueError`` naming what is wrong."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"manifest_toml: not valid TOML: {exc}") from None
    model = data.get("model", {})
    if not isinstance(model, Mapping):
        model = {"model": model}
    body: dict[str, Any] = {
        "name": data.get("name"),
        "provider": model.get("provider", data.get("provider")),
        "model": model.get("model", model.get("name", data.get("model"))),
    }
    for key in ("system_prompt", "tools", "skills"):
        if key in data:
            body[key] = data[key]
    if "system_prompt" not in body and isinstance(model.get("system_prompt"), str):
        body["system_prompt"] = model["system_prompt"]
    return {k: v for k, v in body.items() if v is not None}
