"""How an audit entry is encoded and hashed. This is a compatibility contract: never change it
for existing entries.

An entry's **body** is the UTF-8 bytes of the JSON object

    {"agent_id": <string or null>, "details": <object>, "event_type": <string>,
     "id": <integer>, "outcome": <string>, "timestamp": <string>}

written canonically: keys of every object sorted by code point, no whitespace
(``","`` and ``":"`` separators), non-ASCII characters as UTF-8 (not ``\\u`` escapes),
integers in decimal, floats as Python's shortest round-trip form, ``NaN``/``Infinity``
refused. ``timestamp`` is RFC 3339 UTC with microseconds and a ``Z`` suffix; ``id`` starts at 1.

An entry's **hash** is ``SHA-256(prev_hash ‖ body)`` where ``prev_hash`` is the previous
entry's hash as 32 raw bytes, and 32 zero bytes for the first entry (shown as 64 ``0``
characters). Hashes are shown as lowercase hex.

The RFC 6962 Merkle tree over the log has one leaf per entry, in ``id`` order; a leaf's data is
the entry's 32-byte hash, so its leaf hash is ``SHA-256(0x00 ‖ hash)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fangwire.timeutil import rfc3339

GENESIS_HASH = bytes(32)


def canonical_json(value: Any) -> bytes:
    """The canonical encoding described above (``ValueError`` for NaN or Infinity)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def audit_timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-11-29T08:00:00.123456Z``."""
    return rfc3339(moment, timespec="microseconds")


def entry_body(
    *,
    id: int,
    timestamp: str,
    event_type: str,
    agent_id: str | None,
    details: Mapping[str, Any],
    outcome: str,
) -> bytes:
    return canonical_json(
        {
            "agent_id": agent_id,
            "details": dict(details),
            "event_type": event_type,
            "id": id,
            "outcome": outcome,
            "timestamp": timestamp,
        }
    )


def entry_hash(prev_hash: bytes, body: bytes) -> bytes:
    return hashlib.sha256(prev_hash + body).digest()
