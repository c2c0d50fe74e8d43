"""Communication events: a persisted copy of the comms kinds of bus events.

:class:`CommsEvents` subscribes to ``runtime.bus`` for :data:`KINDS` and writes each event into
``comms_events`` as ``{id, timestamp, kind, source_id, source_name, target_id, target_name,
detail}``, keeping only the newest :attr:`CommsEvents.retention` rows (older rows are trimmed
in the same transaction as the insert).

The copies are best effort: the bus never blocks its publishers, so a writer that falls far
behind loses the oldest buffered events (counted in :attr:`CommsEvents.dropped`). Events the
subscription has already delivered are written before :meth:`CommsEvents.run` returns, even
when it is cancelled at shutdown (the final flush is shielded and bounded in time).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from fangwire.bus import BusEvent, Subscription

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

log = logging.getLogger("fangwire.comms")

KINDS: tuple[str, ...] = (
    "agent_message",
    "agent_spawned",
    "agent_terminated",
    "task_posted",
    "task_claimed",
    "task_completed",
    "task_failed",
    "channel.outbound",
    "channel.inbound",
    "loop_detected",
    "budget.exceeded",
)

#: Longest string kept in an event's ``detail`` (message texts are cut to this).
MAX_DETAIL_STRING = 2000
#: Events written per transaction at most.
BATCH_SIZE = 200
#: Time allowed for the last write when the writer is stopped.
FLUSH_TIMEOUT_SECONDS = 5.0

Record = tuple[str, str, str, str, str, str, str]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _trim(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_DETAIL_STRING:
        return value[:MAX_DETAIL_STRING] + "…"
    if isinstance(value, Mapping):
        return {str(k): _trim(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_trim(v) for v in value]
    return value


def row_to_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """One ``comms_events`` row as the API shows it."""
    try:
        detail = json.loads(row["detail"])
    except (TypeError, ValueError):
        detail = {}
    return {
        "id": row["id"],
        "timestamp": row["timestamp"],
        "kind": row["kind"],
        "source_id": row["source_id"],
        "source_name": row["source_name"],
        "target_id": row["target_id"],
        "target_name": row["target_name"],
        "detail": detail,
    }


class CommsEvents:
    """The persisted comms event log of one runtime."""

    retention = 10_000

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.written = 0
        self.last_id = 0
        self._names: dict[str, str] = {}
        self._subscription: Subscription | None = None
        self._changed = anyio.Event()

    @property
    def dropped(self) -> int:
        """Bus events lost because the writer fell behind."""
        return 0 if self._subscription is None else self._subscription.dropped

    async def open(self) -> None:
        row = await self.runtime.store.fetch_one("SELECT MAX(id) AS m FROM comms_events")
        self.last_id = int(row["m"] or 0) if row is not None else 0

    # -- writing ------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Copy bus events into the table until cancelled (reports started once subscribed)."""
        async with self.runtime.bus.subscribe(*KINDS) as subscription:
            self._subscription = subscription
            task_status.started()
            pending: list[BusEvent] = []
            try:
                while True:
                    pending.append(await subscription.receive())
                    await self._drain(subscription, pending, BATCH_SIZE)
                    with anyio.CancelScope(shield=True):
                        await self._write_logged(pending)
                    pending = []
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(FLUSH_TIMEOUT_SECONDS):
                    await self._drain(subscription, pending, None)
                    if pending:
                        await self._write_logged(pending)

    @staticmethod
    async def _drain(subscription: Subscription, into: list[BusEvent], limit: int | None) -> None:
        """Move events already buffered into ``into``, without waiting for more."""
        while limit is None or len(into) < limit:
            with anyio.move_on_after(0) as scope:
                into.append(await subscription.receive())
            if scope.cancelled_caught:
                return

    async def _write_logged(self, events: Sequence[BusEvent]) -> None:
        try:
            await self.write(events)
        except Exception:
            log.exception("could not persist %d comms events", len(events))

    async def write(self, events: Sequence[BusEvent]) -> list[int]:
        """Persist ``events`` (trimming to :attr:`retention`); return their new ids."""
        records = [await self._record(event) for event in events]
        retention = self.retention

        def insert(conn: sqlite3.Connection) -> list[int]:
            ids = []
            for record in records:
                cursor = conn.execute(
                    "INSERT INTO comms_events (timestamp, kind, source_id, source_name,"
                    " target_id, target_name, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    record,
                )
                ids.append(int(cursor.lastrowid or 0))
            conn.execute(
                "DELETE FROM comms_events WHERE id <= ("
                " SELECT id FROM comms_events ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (retention,),
            )
            return ids

        ids = await self.runtime.store.write(insert)
        self.written += len(ids)
        if ids:
            self.last_id = max(self.last_id, *ids)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()
        return ids

    async def _name(self, agent_id: Any) -> str:
        if not agent_id:
            return ""
        key = str(agent_id)
        if key not in self._names:
            agent = await self.runtime.agents.get(key)
            if agent is None:
                return ""
            self._names[key] = agent.name
        return self._names[key]

    async def _record(self, event: BusEvent) -> Record:
        """Who sent what to whom, from the payloads the publishers use."""
        p = event.payload
        source_id = source_name = target_id = target_name = ""
        if event.kind in ("agent_spawned", "agent_terminated"):
            source_id, source_name = _text(p.get("agent_id")), _text(p.get("name"))
            if source_id and source_name:
                self._names[source_id] = source_name
            if p.get("parent_id"):
                target_id = _text(p.get("parent_id"))
                target_name = await self._name(target_id)
        elif event.kind == "agent_message":
            source_id = _text(p.get("from"))
            source_name = await self._name(source_id) or source_id
            target_id = _text(p.get("agent_id"))
            target_name = await self._name(target_id)
        elif event.kind.startswith("task_"):
            source_id = _text(p.get("from"))
            source_name = await self._name(source_id) or source_id
            target_id = _text(p.get("assigned_to"))
            target_name = await self._name(target_id)
        elif event.kind == "channel.outbound":
            source_id = _text(p.get("from"))
            source_name = await self._name(source_id) or source_id
            target_id = f"channel:{_text(p.get('channel'))}"
            target_name = _text(p.get("target"))
        elif event.kind == "channel.inbound":
            source_id = f"channel:{_text(p.get('channel'))}"
            source_name = _text(p.get("sender"))
            target_id = _text(p.get("chat"))
            target_name = target_id
        elif event.kind == "loop_detected":
            source_id = _text(p.get("from"))
            source_name = await self._name(source_id) or source_id
            target_id = _text(p.get("to"))
            target_name = await self._name(target_id.removeprefix("agent:")) or target_id
        else:  # budget.exceeded and anything else naming an agent
            source_id = _text(p.get("agent_id"))
            source_name = await self._name(source_id)
        detail = _trim({"bus_id": event.id, **p})
        text = json.dumps(detail, default=str, separators=(",", ":"))
        text = self.runtime.redactor.scrub(text)
        return (event.timestamp, event.kind, source_id, source_name, target_id, target_name, text)

    # -- reading ------------------------------------------------------------------------------

    async def recent(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The newest ``limit`` events, newest first, and how many are kept."""
        rows = await self.runtime.store.fetch_all(
            "SELECT * FROM comms_events ORDER BY id DESC LIMIT ?", (limit,)
        )
        total = await self.runtime.store.fetch_one("SELECT COUNT(*) AS n FROM comms_events")
        return [row_to_json(r) for r in rows], int(total["n"]) if total else 0

    async def after(self, event_id: int, limit: int = 100) -> list[dict[str, Any]]:
        """Events with an id above ``event_id``, oldest first."""
        rows = await self.runtime.store.fetch_all(
            "SELECT * FROM comms_events WHERE id > ? ORDER BY id LIMIT ?", (event_id, limit)
        )
        return [row_to_json(r) for r in rows]

    async def wait_for_new(self, event_id: int) -> None:
        """Return once an event newer than ``event_id`` has been written."""
        while self.last_id <= event_id:
            await self._changed.wait()
