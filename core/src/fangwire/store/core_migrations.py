"""The core's own schema and small helpers over it.

Version 1 creates ``kv``: small persistent settings (key to text value).  Migrations listed
here are never edited once released; changes are appended as the next version.
"""

from datetime import UTC, datetime

from fangwire.store.base import Migration, Store

__all__ = ["CORE_COMPONENT", "CORE_MIGRATIONS", "kv_get", "kv_set"]

CORE_COMPONENT = "core"

CORE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        component=CORE_COMPONENT,
        version=1,
        description="key-value table for small persistent settings",
        apply="""
        CREATE TABLE kv (
            key        TEXT PRIMARY KEY,
            value      TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        """,
    ),
)


async def kv_get(store: Store, key: str) -> str | None:
    """Return the value stored under ``key``, or ``None`` if there is none."""
    row = await store.fetch_one("SELECT value FROM kv WHERE key = ?", (key,))
    return None if row is None else str(row["value"])


async def kv_set(store: Store, key: str, value: str) -> None:
    """Durably store ``value`` under ``key`` (insert or replace), stamping ``updated_at`` (UTC)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    await store.execute(
        "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (key, value, now),
    )
