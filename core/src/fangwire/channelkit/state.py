"""Small durable state an adapter keeps across restarts (a stream position, a last-seen id).

``ctx.state`` is a :class:`ChannelState`: string values by key, scoped to the channel. The
daemon gives adapters :class:`StoredState` (a row per key in the store, written durably before
``set`` returns); contexts built by hand in tests get :class:`MemoryState`.
"""

from __future__ import annotations

from fangwire.store import Migration, Store
from fangwire.timeutil import rfc3339

STATE_MIGRATION = Migration(
    component="channels",
    version=2,
    description="per-channel adapter state (stream positions) kept across restarts",
    apply="""
    CREATE TABLE channel_state (
        channel    TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (channel, key)
    );
    """,
)


class ChannelState:
    """String values by key for one channel."""

    async def get(self, key: str) -> str | None:
        raise NotImplementedError

    async def set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``; durable once this returns."""
        raise NotImplementedError


class MemoryState(ChannelState):
    """State that lives as long as the object (for contexts built without a daemon)."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self._values.get(key)

    async def set(self, key: str, value: str) -> None:
        self._values[key] = value


class StoredState(ChannelState):
    """State in the daemon's store; a value is read back from memory after the first get."""

    def __init__(self, store: Store, channel: str) -> None:
        self._store = store
        self._channel = channel
        self._cache: dict[str, str | None] = {}

    async def get(self, key: str) -> str | None:
        if key not in self._cache:
            row = await self._store.fetch_one(
                "SELECT value FROM channel_state WHERE channel = ? AND key = ?",
                (self._channel, key),
            )
            self._cache[key] = None if row is None else str(row["value"])
        return self._cache[key]

    async def set(self, key: str, value: str) -> None:
        if self._cache.get(key) == value:
            return
        await self._store.execute(
            "INSERT INTO channel_state (channel, key, value, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (channel, key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            (self._channel, key, value, rfc3339()),
        )
        self._cache[key] = value
