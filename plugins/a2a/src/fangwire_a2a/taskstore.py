"""Served A2A tasks, persisted in fangwire's store.

:class:`PersistentTaskStore` implements the SDK's ``TaskStore`` on the ``a2a_tasks`` table, so
every state the SDK's request handler records (submitted, working, completed, failed,
canceled) is durable before the caller hears of it. Tasks are scoped to their owner (the
authenticated subject that created them): another caller gets "task not found".

Rules kept here:

- **A restart loses nothing acknowledged, and lies about nothing.** A task that was still
  submitted or working when the daemon stopped cannot be resumed (its model call died with the
  process); :meth:`PersistentTaskStore.fail_interrupted` marks it ``failed`` with that reason at
  start.
- **Recent tasks are served from memory.** This process is the only writer of the table, so the
  last :data:`CACHE_SIZE` tasks saved or read are kept (as serialized protobuf, never shared
  objects) with their owner; the SDK reads a task several times per request.
- **Bounded retention.** Finished tasks older than ``task_retention_days`` are deleted, and
  beyond ``max_tasks`` the oldest finished ones go first (:meth:`PersistentTaskStore.prune`,
  run at start and every :data:`PRUNE_EVERY` saves). Unfinished tasks are never pruned.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
from a2a.server.context import ServerCallContext
from a2a.server.tasks.task_store import TaskStore
from a2a.types.a2a_pb2 import (
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    Role,
    Task,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError
from a2a.utils.task import ListTasksCursor, decode_list_tasks_cursor, encode_list_tasks_cursor

from fangwire.timeutil import rfc3339, utc_now

if TYPE_CHECKING:
    from fangwire.store import Store

#: States after which a task never changes again.
TERMINAL_STATES = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
    }
)
#: States in which a task waits for its caller (never produced by fangwire's agents today).
INTERRUPTED_STATES = frozenset(
    {TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED}
)
SETTLED_STATES = TERMINAL_STATES | INTERRUPTED_STATES
PRUNE_EVERY = 200
CACHE_SIZE = 2048
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
#: ``ServerCallContext.state`` key naming the local agent a request is for.
AGENT_KEY = "fangwire_agent_id"
INTERRUPTED_REASON = "interrupted: the daemon stopped before the task finished"


def task_to_bytes(task: Task) -> bytes:
    return task.SerializeToString(deterministic=True)


def task_from_bytes(data: bytes) -> Task:
    return Task.FromString(data)


def owner_of(context: ServerCallContext) -> str:
    return context.user.user_name


class PersistentTaskStore(TaskStore):
    """The SDK ``TaskStore`` on fangwire's store (see the module docstring)."""

    def __init__(
        self, store: Store, *, retention_days: float = 7.0, max_tasks: int = 10_000
    ) -> None:
        self._store = store
        self._retention = timedelta(days=retention_days)
        self._max_tasks = max_tasks
        self._saves = 0
        self._waiters: dict[str, list[anyio.Event]] = {}
        #: task id -> (owner, agent id, serialized task), most recently used last.
        self._cache: OrderedDict[str, tuple[str, str, bytes]] = OrderedDict()

    def _remember(self, task_id: str, owner: str, agent_id: str, data: bytes) -> None:
        self._cache[task_id] = (owner, agent_id, data)
        self._cache.move_to_end(task_id)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    # -- the SDK interface ----------------------------------------------------------------------

    async def save(self, task: Task, context: ServerCallContext) -> None:
        now = rfc3339()
        status_ns = (
            task.status.timestamp.ToNanoseconds() if task.status.HasField("timestamp") else 0
        )
        data = task_to_bytes(task)
        row = (
            task.id,
            owner_of(context),
            task.context_id,
            str(context.state.get(AGENT_KEY, "")),
            int(task.status.state),
            status_ns,
            data,
            now,
            now,
        )

        def upsert(conn: sqlite3.Connection) -> tuple[str, str]:
            # The owner and agent are fixed when the task is created; report the stored ones.
            stored = conn.execute(
                "INSERT INTO a2a_tasks (id, owner, context_id, agent_id, state, status_ns, task,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET state = excluded.state,"
                " status_ns = excluded.status_ns, task = excluded.task,"
                " updated_at = excluded.updated_at RETURNING owner, agent_id",
                row,
            ).fetchone()
            return str(stored["owner"]), str(stored["agent_id"])

        owner, agent_id = await self._store.write(upsert)
        self._remember(task.id, owner, agent_id, data)
        if task.status.state in SETTLED_STATES:
            for event in self._waiters.pop(task.id, []):
                event.set()
        self._saves += 1
        if self._saves % PRUNE_EVERY == 0:
            await self.prune()

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        found = await self.get_any(task_id)
        if found is None or found[1] != owner_of(context):
            return None
        return found[0]

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        where = ["owner = ?"]
        args: list[Any] = [owner_of(context)]
        if params.context_id:
            where.append("context_id = ?")
            args.append(params.context_id)
        if params.status:
            where.append("state = ?")
            args.append(int(params.status))
        if params.HasField("status_timestamp_after"):
            where.append("status_ns >= ?")
            args.append(params.status_timestamp_after.ToNanoseconds())
        condition = " AND ".join(where)
        total_row = await self._store.fetch_one(
            f"SELECT COUNT(*) AS n FROM a2a_tasks WHERE {condition}",  # noqa: S608 - fixed SQL
            args,
        )
        total = int(total_row["n"]) if total_row else 0
        page_where, page_args = list(where), list(args)
        if params.page_token:
            cursor = decode_list_tasks_cursor(params.page_token)
            if cursor is None:
                raise InvalidParamsError(message="pageToken: not a token this server issued")
            page_where.append("(status_ns < ? OR (status_ns = ? AND id < ?))")
            ts = cursor.timestamp_ns or 0
            page_args += [ts, ts, cursor.task_id]
        size = params.page_size or DEFAULT_PAGE_SIZE
        rows = await self._store.fetch_all(
            f"SELECT id, status_ns, task FROM a2a_tasks WHERE {' AND '.join(page_where)}"  # noqa: S608
            " ORDER BY status_ns DESC, id DESC LIMIT ?",
            [*page_args, size + 1],
        )
        more = len(rows) > size
        rows = rows[:size]
        token = ""
        if more and rows:
            last = rows[-1]
            token = encode_list_tasks_cursor(
                ListTasksCursor(timestamp_ns=int(last["status_ns"]) or None, task_id=last["id"])
            )
        return ListTasksResponse(
            tasks=[task_from_bytes(r["task"]) for r in rows],
            next_page_token=token,
            page_size=size,
            total_size=total,
        )

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        self._cache.pop(task_id, None)
        await self._store.execute(
            "DELETE FROM a2a_tasks WHERE id = ? AND owner = ?", (task_id, owner_of(context))
        )

    # -- fangwire's additions -------------------------------------------------------------------

    async def get_any(self, task_id: str) -> tuple[Task, str, str] | None:
        """The task, its owner and its agent, whoever owns it."""
        cached = self._cache.get(task_id)
        if cached is not None:
            self._cache.move_to_end(task_id)
            owner, agent_id, data = cached
            return task_from_bytes(data), owner, agent_id
        row = await self._store.fetch_one(
            "SELECT task, owner, agent_id FROM a2a_tasks WHERE id = ?", (task_id,)
        )
        if row is None:
            return None
        self._remember(task_id, row["owner"], row["agent_id"], bytes(row["task"]))
        return task_from_bytes(row["task"]), row["owner"], row["agent_id"]

    async def wait_settled(self, task_id: str, context: ServerCallContext, seconds: float) -> Task:
        """The task once terminal or interrupted, or as it is after ``seconds``."""
        event = anyio.Event()
        self._waiters.setdefault(task_id, []).append(event)
        try:
            task = await self.get(task_id, context)
            if task is None or task.status.state in SETTLED_STATES:
                return task if task is not None else Task(id=task_id)
            with anyio.move_on_after(seconds):
                await event.wait()
        finally:
            waiting = self._waiters.get(task_id)
            if waiting is not None and event in waiting:
                waiting.remove(event)
                if not waiting:
                    del self._waiters[task_id]
        task = await self.get(task_id, context)
        return task if task is not None else Task(id=task_id)

    async def fail_interrupted(self) -> int:
        """Mark every task left unfinished by a previous run ``failed``; return how many."""
        settled = ",".join(str(int(s)) for s in SETTLED_STATES)
        rows = await self._store.fetch_all(
            f"SELECT id, task FROM a2a_tasks WHERE state NOT IN ({settled})"  # noqa: S608
        )
        if not rows:
            return 0
        now = utc_now()
        updates: list[tuple[int, int, bytes, str, str]] = []
        for row in rows:
            task = task_from_bytes(row["task"])
            task.status.state = TaskState.TASK_STATE_FAILED
            task.status.timestamp.FromDatetime(now)
            task.status.message.CopyFrom(
                Message(
                    message_id=f"{task.id}-interrupted",
                    role=Role.ROLE_AGENT,
                    task_id=task.id,
                    context_id=task.context_id,
                    parts=[Part(text=INTERRUPTED_REASON)],
                )
            )
            updates.append(
                (
                    int(TaskState.TASK_STATE_FAILED),
                    task.status.timestamp.ToNanoseconds(),
                    task_to_bytes(task),
                    rfc3339(now),
                    row["id"],
                )
            )

        def apply(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE a2a_tasks SET state = ?, status_ns = ?, task = ?, updated_at = ?"
                " WHERE id = ?",
                updates,
            )

        await self._store.write(apply)
        self._cache.clear()
        return len(updates)

    async def prune(self) -> int:
        """Apply the retention rules; return how many finished tasks were deleted."""
        terminal = ",".join(str(int(s)) for s in TERMINAL_STATES)
        cutoff = rfc3339(utc_now() - self._retention)
        limit = self._max_tasks

        def apply(conn: sqlite3.Connection) -> int:
            old = conn.execute(
                f"DELETE FROM a2a_tasks WHERE state IN ({terminal}) AND updated_at < ?",  # noqa: S608
                (cutoff,),
            ).rowcount
            count = conn.execute("SELECT COUNT(*) AS n FROM a2a_tasks").fetchone()["n"]
            excess = int(count) - limit
            extra = 0
            if excess > 0:
                extra = conn.execute(
                    f"DELETE FROM a2a_tasks WHERE id IN (SELECT id FROM a2a_tasks"  # noqa: S608
                    f" WHERE state IN ({terminal}) ORDER BY updated_at ASC LIMIT ?)",
                    (excess,),
                ).rowcount
            return int(old) + int(extra)

        deleted = await self._store.write(apply)
        if deleted:
            self._cache.clear()
        return deleted
