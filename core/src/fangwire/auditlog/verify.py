"""Walking the audit log to prove it intact.

The walk recomputes every entry's hash from its stored body and the previous hash, checks that
ids run 1, 2, 3, ... without a gap, and compares the chain at each trusted (signature-checked)
checkpoint with the hash the checkpoint signed. What each tampering looks like:

- a modified row: its recomputed hash differs from the stored one;
- a deleted row in the middle: a gap in the ids;
- two rows swapped: ids out of order, and the hashes no longer link;
- a deleted tail or an older copy of the database: fewer entries than a signed checkpoint covers;
- a chain rewritten from some entry on with every hash recomputed: it links, but its hash at the
  checkpoint's size is not the one the checkpoint signed.

``deep`` also recomputes the Merkle root at each checkpoint and checks that the indexed columns
agree with the hashed body.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from typing import Any, Literal

import attrs

from fangwire.auditlog.encoding import GENESIS_HASH
from fangwire.auditlog.merkle import CompactRange, leaf_hash


@attrs.frozen
class TrustedCheckpoint:
    """A checkpoint whose signature was verified: the log's size, Merkle root and chain tip."""

    size: int
    root: bytes
    tip: bytes


@attrs.frozen
class VerifyReport:
    """The result of a verification. ``broken_at`` is the first bad entry id."""

    status: Literal["valid", "broken"]
    chain_length: int
    first_entry: int | None
    last_entry: int | None
    tip_hash: str
    checkpoint_size: int | None = None
    broken_at: int | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        body = attrs.asdict(self)
        optional = ("checkpoint_size", "broken_at", "reason")
        return {k: v for k, v in body.items() if v is not None or k not in optional}


def verify_log(
    conn: sqlite3.Connection, checkpoints: Sequence[TrustedCheckpoint], *, deep: bool = False
) -> VerifyReport:
    """Walk every entry on ``conn`` (a read connection) and report the first problem."""
    marks = {cp.size: cp for cp in checkpoints if cp.size > 0}
    newest = max(marks, default=None)
    tree = CompactRange() if deep else None
    prev = GENESIS_HASH
    expected = 1
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: this loop runs once per entry
    columns = "id, body, hash, prev_hash" + (", event_type, agent_id, timestamp" if deep else "")
    rows = cursor.execute(f"SELECT {columns} FROM audit_entries ORDER BY id")  # noqa: S608
    sha256 = hashlib.sha256

    def broken(at: int, reason: str) -> VerifyReport:
        return VerifyReport(
            status="broken",
            chain_length=expected - 1,
            first_entry=1 if expected > 1 else None,
            last_entry=expected - 1 or None,
            tip_hash=prev.hex(),
            checkpoint_size=newest,
            broken_at=at,
            reason=reason,
        )

    for row in rows:
        entry_id, body, digest, prev_hash = row[0], row[1], row[2], row[3]
        if entry_id != expected:
            if not isinstance(entry_id, int):
                return broken(expected, "a stored entry has columns of the wrong type")
            if entry_id < expected:
                return broken(entry_id, f"entry {entry_id} appears after entry {expected - 1}")
            return broken(expected, f"entry {expected} is missing (the next entry is {entry_id})")
        if prev_hash != prev:
            return broken(entry_id, "prev_hash does not match the previous entry's hash")
        try:
            recomputed = sha256(prev + body).digest()
        except TypeError:
            # A tampered row can hold any SQLite type; it is a finding, never a crash.
            return broken(entry_id, "a stored entry has columns of the wrong type")
        if recomputed != digest:
            return broken(entry_id, "hash does not match the entry's content")
        if tree is not None:
            problem = _check_columns(entry_id, body, row[4], row[5], row[6])
            if problem:
                return broken(entry_id, problem)
            tree.append(leaf_hash(digest))
        if entry_id in marks:
            mark = marks[entry_id]
            if mark.tip != digest:
                return broken(
                    entry_id,
                    f"the chain differs from the signed checkpoint of size {entry_id}: "
                    "entries up to here were rewritten",
                )
            if tree is not None and tree.root() != mark.root:
                return broken(entry_id, f"Merkle root differs from checkpoint {entry_id}")
        prev = digest
        expected += 1
    length = expected - 1
    if newest is not None and length < newest:
        return broken(
            length + 1,
            f"the log holds {length} entries but a signed checkpoint covers {newest}: "
            "entries were removed or an older copy of the database was restored",
        )
    return VerifyReport(
        status="valid",
        chain_length=length,
        first_entry=1 if length else None,
        last_entry=length or None,
        tip_hash=prev.hex(),
        checkpoint_size=newest,
    )


def _check_columns(
    entry_id: int, body: bytes, event_type: str, agent_id: str | None, timestamp: str
) -> str | None:
    try:
        fields = json.loads(body)
    except ValueError:
        return "body is not valid JSON"
    if (fields.get("id"), fields.get("event_type"), fields.get("agent_id")) != (
        entry_id,
        event_type,
        agent_id,
    ) or fields.get("timestamp") != timestamp:
        return "indexed columns disagree with the hashed body"
    return None
