"""The tamper-evident audit log.

Every security-relevant action calls :meth:`AuditLog.record` and awaits it before going on:
the entry is acknowledged only once its row is committed with ``synchronous=FULL``, and if the
write fails the call raises, so the audited action fails too. All appends run as jobs of the
store's single writer thread, so concurrent appenders can never fork the chain; and callers
that arrive while a batch is being written are written together in the next one by the log's
writer task (one store job and one durable commit for all of them), which is what makes tens
of thousands of durable appends per second possible.

Beside the hash chain (:mod:`fangwire.auditlog.encoding`) the log keeps an RFC 6962 Merkle tree
over the entries (its complete subtrees are stored with each append) and regularly signs a
checkpoint of it with the node's Ed25519 key. The newest checkpoint is also kept in a file
outside the database (the anchor), so deleting the tail, restoring an old copy of the database
or rewriting the chain is caught by :meth:`AuditLog.verify`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
import attrs

from fangwire.audit import AuditEntry
from fangwire.auditlog.encoding import (
    GENESIS_HASH,
    audit_timestamp,
    entry_body,
    entry_hash,
)
from fangwire.auditlog.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
)
from fangwire.auditlog.schema import AUDIT_MIGRATIONS
from fangwire.redaction import Redactor
from fangwire.store import Store, StoreError

log = logging.getLogger("fangwire.audit")

Outcome = str


class AuditError(Exception):
    """The entry could not be recorded; the audited action must not proceed."""


class _DbHashSource:
    """Persisted aligned subtrees, read through one connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, level: int, index: int) -> bytes:
        if level == 0:
            row = self._conn.execute(
                "SELECT hash FROM audit_entries WHERE id = ?", (index + 1,)
            ).fetchone()
            if row is None:
                raise KeyError((level, index))
            return leaf_hash(bytes(_first(row)))
        row = self._conn.execute(
            "SELECT hash FROM audit_nodes WHERE level = ? AND idx = ?", (level, index)
        ).fetchone()
        if row is None:
            raise KeyError((level, index))
        return bytes(_first(row))


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, Mapping) else row[0]


@attrs.define(eq=False)
class _Request:
    """One caller's entry waiting to be written, and how it ended."""

    event_type: str
    agent_id: str | None
    details: dict[str, Any]
    outcome: str
    finished: bool = False
    entry: AuditEntry | None = None
    error: BaseException | None = None


@attrs.define
class _Tip:
    """The writer thread's view of the end of the log (a cache, checked against the table)."""

    size: int
    hash: bytes
    range: CompactRange


def _entry_from_row(row: Mapping[str, Any]) -> AuditEntry:
    body = json.loads(bytes(row["body"]))
    return AuditEntry(
        id=body["id"],
        timestamp=body["timestamp"],
        event_type=body["event_type"],
        agent_id=body["agent_id"],
        details=body["details"],
        outcome=body["outcome"],
        prev_hash=bytes(row["prev_hash"]).hex(),
        hash=bytes(row["hash"]).hex(),
    )


class AuditLog:
    """Append, list, prove and verify audit entries stored in ``store``."""

    def __init__(
        self,
        store: Store,
        *,
        redactor: Redactor,
    ) -> None:
        self._store = store
        self._redactor = redactor
        self._tip: _Tip | None = None
        self._queue: list[_Request] = []
        self._work: anyio.Event | None = None
        self._batch_done: anyio.Event | None = None
        self._listeners: list[Callable[[AuditEntry], None]] = []

    def add_listener(self, listener: Callable[[AuditEntry], None]) -> None:
        """Call ``listener`` with each entry after it is committed (must not block)."""
        self._listeners.append(listener)

    @property
    def store(self) -> Store:
        return self._store

    async def open(self) -> None:
        await self._store.migrate(AUDIT_MIGRATIONS)

    # -- appending ----------------------------------------------------------------------------

    async def record(
        self,
        event_type: str,
        *,
        agent_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        outcome: Outcome = "ok",
    ) -> AuditEntry:
        """Append one entry and return it once it is durable. Known secret values in
        ``details`` are masked first. Raises :class:`AuditError` if it could not be written."""
        if not event_type or len(event_type) > 100:
            raise ValueError("event_type must be 1-100 characters")
        scrubbed = self._redactor.scrub_obj(dict(details or {}))
        clean: dict[str, Any] = scrubbed if isinstance(scrubbed, dict) else {}
        work, done = self._work, self._batch_done
        if work is None or done is None:
            raise AuditError("the audit log's writer is not running")
        request = _Request(event_type, agent_id, clean, outcome)
        self._queue.append(request)
        work.set()
        try:
            await done.wait()
        except BaseException:
            if not request.finished and request in self._queue:
                self._queue.remove(request)  # cancelled before its batch was taken
            raise
        if isinstance(request.error, AuditError):
            raise request.error
        if request.error is not None:
            log.error("audit write failed: %s", request.error)
            raise AuditError(f"the audit log could not record {event_type!r}") from request.error
        if request.entry is None:
            raise AuditError(f"the audit log could not record {event_type!r}")
        for listener in self._listeners:
            try:
                listener(request.entry)
            except Exception:
                log.exception("audit listener failed")
        return request.entry

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The writer task: writes queued entries, a batch per durable commit, until
        cancelled. Entries still queued then are failed, never left waiting."""
        self._work, self._batch_done = anyio.Event(), anyio.Event()
        task_status.started()
        try:
            while True:
                await self._work.wait()
                self._work = anyio.Event()
                while self._queue:
                    await self._write_batch()
        finally:
            for r in self._queue:
                r.error = AuditError("the audit log closed before the entry was written")
                r.finished = True
            self._queue = []
            if self._batch_done is not None:
                self._batch_done.set()
            self._work = self._batch_done = None

    async def _write_batch(self) -> None:
        """Write every queued request in one store job (one durable commit), then wake them
        all (they share one event per batch)."""
        batch, done = self._queue, self._batch_done
        self._queue, self._batch_done = [], anyio.Event()

        def append_all(conn: sqlite3.Connection) -> list[AuditEntry | None]:
            try:
                return self._append_batch(conn, batch)
            except BaseException:
                self._tip = None  # re-read from the table on the next append
                raise

        try:
            # Shielded: the callers waiting on this batch must always be woken.
            with anyio.CancelScope(shield=True):
                try:
                    entries = await self._store.write(append_all)
                except StoreError as exc:
                    self._tip = None
                    for r in batch:
                        r.error = exc
                else:
                    for r, entry in zip(batch, entries, strict=True):
                        if entry is not None:
                            r.entry = entry
        finally:
            for r in batch:
                r.finished = True
            if done is not None:
                done.set()

    def _current_tip(self, conn: sqlite3.Connection) -> _Tip:
        size, last = _read_tip(conn)
        tip = self._tip
        if tip is None or tip.size != size or tip.hash != last:
            # First append, or a batch rolled back after the cache moved: rebuild from disk.
            tip = _Tip(size, last, CompactRange.from_source(size, _DbHashSource(conn)))
        return tip

    def _append_batch(
        self, conn: sqlite3.Connection, batch: Sequence[_Request]
    ) -> list[AuditEntry | None]:
        """Append ``batch`` in order (writer thread). A request whose details cannot be
        encoded gets its own error and no entry; the others are written."""
        tip = self._current_tip(conn)
        # One commit, one moment: entries written together share their timestamp.
        timestamp = audit_timestamp()
        entry_rows: list[tuple[Any, ...]] = []
        node_rows: list[tuple[int, int, bytes]] = []
        results: list[AuditEntry | None] = []
        for r in batch:
            entry_id = tip.size + 1
            try:
                body = entry_body(
                    id=entry_id,
                    timestamp=timestamp,
                    event_type=r.event_type,
                    agent_id=r.agent_id,
                    details=r.details,
                    outcome=r.outcome,
                )
            except (TypeError, ValueError) as exc:
                r.error = AuditError(f"audit details are not JSON-encodable: {exc}")
                results.append(None)
                continue
            digest = entry_hash(tip.hash, body)
            entry_rows.append(
                (entry_id, body, digest, tip.hash, r.event_type, r.agent_id, timestamp)
            )
            node_rows.extend(tip.range.append(leaf_hash(digest))[1:])  # level 0 is derived
            results.append(
                AuditEntry(
                    id=entry_id,
                    timestamp=timestamp,
                    event_type=r.event_type,
                    agent_id=r.agent_id,
                    details=r.details,
                    outcome=r.outcome,
                    prev_hash=tip.hash.hex(),
                    hash=digest.hex(),
                )
            )
            tip.size, tip.hash = entry_id, digest
        conn.executemany(
            "INSERT INTO audit_entries (id, body, hash, prev_hash, event_type, agent_id, timestamp)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            entry_rows,
        )
        conn.executemany("INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)", node_rows)
        self._tip = tip
        return results

    # -- reading ------------------------------------------------------------------------------

    async def size(self) -> int:
        row = await self._store.fetch_one("SELECT COALESCE(MAX(id), 0) AS n FROM audit_entries")
        return int(row["n"]) if row else 0

    async def recent(self, limit: int) -> tuple[list[AuditEntry], int]:
        """The newest ``limit`` entries, newest first, and the total count."""
        rows = await self._store.fetch_all(
            "SELECT body, hash, prev_hash FROM audit_entries ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [_entry_from_row(r) for r in rows], await self.size()

    async def tree_head(self) -> tuple[int, bytes, bytes]:
        """``(size, Merkle root, chain tip)`` of the committed log."""

        def read(conn: sqlite3.Connection) -> tuple[int, bytes, bytes]:
            size, tip = _read_tip(conn)
            return size, _root_at(conn, size), tip

        return await self._store.read(read)

    async def inclusion(self, entry_id: int, size: int | None = None) -> dict[str, Any]:
        """An RFC 6962 inclusion proof of entry ``entry_id`` in the tree of ``size`` entries."""

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            current = _size(conn)
            tree_size = current if size is None else size
            if not 1 <= entry_id <= tree_size <= current:
                raise LookupError(
                    f"no entry {entry_id} in a tree of {tree_size} entries (log has {current})"
                )
            source = _DbHashSource(conn)
            row = conn.execute(
                "SELECT hash FROM audit_entries WHERE id = ?", (entry_id,)
            ).fetchone()
            leaf = leaf_hash(bytes(row["hash"]))
            proof = inclusion_proof(entry_id - 1, tree_size, source)
            root = _root_at(conn, tree_size)
            return {
                "id": entry_id,
                "leaf_index": entry_id - 1,
                "tree_size": tree_size,
                "entry_hash": bytes(row["hash"]).hex(),
                "leaf_hash": leaf.hex(),
                "root": root.hex(),
                "proof": [p.hex() for p in proof],
            }

        return await self._store.read(read)

    async def consistency(self, old_size: int, new_size: int | None = None) -> dict[str, Any]:
        """An RFC 6962 consistency proof between the trees of ``old_size`` and ``new_size``."""

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            current = _size(conn)
            second = current if new_size is None else new_size
            if not 0 <= old_size <= second <= current:
                raise LookupError(
                    f"sizes must satisfy 0 <= from <= to <= {current}; got {old_size}, {second}"
                )
            source = _DbHashSource(conn)
            proof = consistency_proof(old_size, second, source)
            return {
                "from": old_size,
                "to": second,
                "from_root": _root_at(conn, old_size).hex(),
                "to_root": _root_at(conn, second).hex(),
                "proof": [p.hex() for p in proof],
            }

        return await self._store.read(read)


def _read_tip(conn: sqlite3.Connection) -> tuple[int, bytes]:
    """``(number of entries, hash of the last one)`` as committed (genesis when empty)."""
    row = conn.execute("SELECT id, hash FROM audit_entries ORDER BY id DESC LIMIT 1").fetchone()
    return (int(row["id"]), bytes(row["hash"])) if row else (0, GENESIS_HASH)


def _size(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COALESCE(MAX(id), 0) AS n FROM audit_entries").fetchone()
    return int(row["n"])


def _root_at(conn: sqlite3.Connection, size: int) -> bytes:
    return CompactRange.from_source(size, _DbHashSource(conn)).root()
