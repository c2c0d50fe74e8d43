"""The inbox: inbound messages are durable from the moment a channel accepts them.

A message is written (and committed) before the adapter acknowledges it to the platform — a
webhook's 200 is sent after :meth:`Inbox.accept` returns — and removed once it has been
handled. Messages still in the inbox when the daemon stops or crashes are handled again when
their channel next starts. Delivery is therefore at least once: a crash after the answer was
sent but before the row was removed answers that message twice, which beats losing it.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import attrs

from fangwire.channelkit.state import STATE_MIGRATION
from fangwire.channels import Attachment, InboundMessage
from fangwire.store import Migration, Store
from fangwire.timeutil import rfc3339

CHANNEL_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        component="channels",
        version=1,
        description="inbound messages accepted but not yet handled",
        apply="""
        CREATE TABLE channel_inbox (
            id          INTEGER PRIMARY KEY,
            channel     TEXT NOT NULL,
            received_at TEXT NOT NULL,
            message     TEXT NOT NULL
        );
        CREATE INDEX channel_inbox_by_channel ON channel_inbox (channel, id);
        """,
    ),
    STATE_MIGRATION,
)


def _encode(message: InboundMessage) -> str:
    return json.dumps(attrs.asdict(message), default=str, separators=(",", ":"))


def _decode(text: str) -> InboundMessage:
    data: dict[str, Any] = json.loads(text)
    data["attachments"] = tuple(Attachment(**a) for a in data.get("attachments", ()))
    return InboundMessage(**data)


class Inbox:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def accept(self, message: InboundMessage) -> int:
        """Persist ``message``; return its row id once committed."""
        params = (message.channel, rfc3339(), _encode(message))

        def insert(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO channel_inbox (channel, received_at, message) VALUES (?, ?, ?)",
                params,
            )
            return int(cursor.lastrowid or 0)

        return await self.store.write(insert)

    async def done(self, row_id: int) -> None:
        await self.store.execute("DELETE FROM channel_inbox WHERE id = ?", (row_id,))

    async def pending(self, channel: str) -> list[tuple[int, InboundMessage]]:
        rows = await self.store.fetch_all(
            "SELECT id, message FROM channel_inbox WHERE channel = ? ORDER BY id", (channel,)
        )
        return [(int(r["id"]), _decode(r["message"])) for r in rows]
