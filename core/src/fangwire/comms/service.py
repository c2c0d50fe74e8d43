"""The comms service of one runtime: the event log writer, the task board and the loop guard.

Background work (the event writer and running dispatched tasks) lives in one task group owned
by a host task created at :meth:`Comms.start`; :meth:`Comms.stop` cancels it and waits, bounded.
The startup and shutdown hooks run in the lifespan task between other cancel scopes, so the
task group cannot be entered in one hook and left in the other; the host task owns it instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from fangwire.agents import Agent, AgentCallFailed, AgentNotFound
from fangwire.bus import BusEvent
from fangwire.comms.events import CommsEvents
from fangwire.comms.loopguard import LoopGuard
from fangwire.comms.schema import COMMS_MIGRATIONS
from fangwire.timeutil import rfc3339

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

log = logging.getLogger("fangwire.comms")

STOP_TIMEOUT_SECONDS = 5.0
OPEN_STATUSES = ("posted", "claimed")
_WORD = re.compile(r"[\w+#.-]+")


class NoAgentAvailable(LookupError):
    """No running agent can take a task."""


def _words(text: str) -> set[str]:
    return {w.strip(".-").lower() for w in _WORD.findall(text) if w.strip(".-")}


def skill_score(agent: Agent, text: str) -> int:
    """How many of the agent's skills the text mentions (every word of a skill must occur)."""
    words = _words(text)
    score = 0
    for skill in agent.skills:
        parts = _words(skill.replace("_", " ").replace("-", " "))
        if parts and parts <= words:
            score += 1
    return score


def task_to_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "task_id": row["id"],
        "title": row["title"],
        "description": row["description"],
        "assigned_to": row["assigned_to"],
        "status": row["status"],
        "result": row["result"],
        "error": row["error"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


class Comms:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.events = CommsEvents(runtime)
        self.guard = LoopGuard(runtime.bus)
        self.open_streams = 0
        self._tg: TaskGroup | None = None
        self._host: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.runtime.store.migrate(COMMS_MIGRATIONS)
        await self.events.open()
        ready = anyio.Event()
        self._host = asyncio.get_running_loop().create_task(self._main(ready))
        with anyio.fail_after(STOP_TIMEOUT_SECONDS):
            await ready.wait()
        self.runtime.security.register("loop_guard", self.guard.probe)

    async def _main(self, ready: anyio.Event) -> None:
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.events.run)
                self._tg = tg
                ready.set()
                await anyio.sleep_forever()
        finally:
            self._tg = None
            ready.set()

    async def stop(self) -> None:
        self.runtime.security.unregister("loop_guard")
        host, self._host = self._host, None
        if host is None:
            return
        host.cancel()
        with anyio.move_on_after(STOP_TIMEOUT_SECONDS):
            await asyncio.wait({host})
        if not host.done():
            log.warning("comms background work did not stop in time")
        elif not host.cancelled() and host.exception() is not None:
            log.error("comms background work failed", exc_info=host.exception())

    # -- tasks --------------------------------------------------------------------------------

    async def pick_agent(self, text: str) -> Agent:
        """The running agent whose skills best match ``text``, then the least busy one."""
        agents = [a for a in await self.runtime.agents.all() if a.state == "running"]
        if not agents:
            raise NoAgentAvailable("no running agent can take the task")
        rows = await self.runtime.store.fetch_all(
            "SELECT assigned_to, COUNT(*) AS n FROM comms_tasks"
            " WHERE status IN ('posted', 'claimed') GROUP BY assigned_to"
        )
        busy = {r["assigned_to"]: int(r["n"]) for r in rows}
        order = {a.id: i for i, a in enumerate(agents)}
        return min(agents, key=lambda a: (-skill_score(a, text), busy.get(a.id, 0), order[a.id]))

    async def post_task(
        self, title: str, description: str, agent: Agent, *, created_by: str
    ) -> dict[str, Any]:
        if self._tg is None:
            raise RuntimeError("the comms service is not running")
        task_id = str(uuid.uuid4())
        now = rfc3339()
        await self.runtime.store.execute(
            "INSERT INTO comms_tasks (id, title, description, assigned_to, status, created_by,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, 'posted', ?, ?, ?)",
            (task_id, title, description, agent.id, created_by, now, now),
        )
        self._publish("task_posted", task_id, agent, created_by, title=title)
        self._tg.start_soon(self._run_task, task_id, title, description, agent, created_by)
        return task_to_json(
            {"id": task_id, "title": title, "description": description,
             "assigned_to": agent.id, "status": "posted", "result": None, "error": None,
             "created_by": created_by, "created_at": now, "updated_at": now}
        )  # fmt: skip

    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        row = await self.runtime.store.fetch_one(
            "SELECT * FROM comms_tasks WHERE id = ?", (task_id,)
        )
        return None if row is None else task_to_json(row)

    def _publish(self, kind: str, task_id: str, agent: Agent, sender: str, **extra: Any) -> None:
        payload = {"task_id": task_id, "assigned_to": agent.id, "from": sender, **extra}
        self.runtime.bus.publish(BusEvent(kind=kind, payload=payload))

    async def _set_status(
        self, task_id: str, status: str, *, result: str | None = None, error: str | None = None
    ) -> None:
        await self.runtime.store.execute(
            "UPDATE comms_tasks SET status = ?, updated_at = ?, result = COALESCE(?, result),"
            " error = COALESCE(?, error) WHERE id = ?",
            (status, rfc3339(), result, error, task_id),
        )

    async def _run_task(
        self, task_id: str, title: str, description: str, agent: Agent, sender: str
    ) -> None:
        try:
            await self._set_status(task_id, "claimed")
            self._publish("task_claimed", task_id, agent, sender)
            text = f"{title}\n\n{description}" if description else title
            try:
                reply = await self.runtime.agents.message(agent.id, text, sender=f"task:{task_id}")
            except (AgentCallFailed, AgentNotFound) as exc:
                reason = exc.reason if isinstance(exc, AgentCallFailed) else str(exc)
            except Exception as exc:  # a budget refusal, a store error ...
                reason = getattr(exc, "message", None) or type(exc).__name__
            else:
                await self._set_status(task_id, "completed", result=reply.text)
                self._publish("task_completed", task_id, agent, sender)
                return
            await self._set_status(task_id, "failed", error=reason)
            self._publish("task_failed", task_id, agent, sender, reason=reason)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception:
            log.exception("comms task %s could not be run", task_id)
