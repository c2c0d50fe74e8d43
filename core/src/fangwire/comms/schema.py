"""The comms tables (component ``comms`` of the store)."""

from __future__ import annotations

from fangwire.store import Migration

COMMS_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        component="comms",
        version=1,
        description="communication events and dispatched tasks",
        apply="""
        CREATE TABLE comms_events (
            id          INTEGER PRIMARY KEY,
            timestamp   TEXT NOT NULL,
            kind        TEXT NOT NULL,
            source_id   TEXT NOT NULL DEFAULT '',
            source_name TEXT NOT NULL DEFAULT '',
            target_id   TEXT NOT NULL DEFAULT '',
            target_name TEXT NOT NULL DEFAULT '',
            detail      TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE comms_tasks (
            id          TEXT PRIMARY KEY,
            title       TEXT NOT NULL,
            description TEXT NOT NULL,
            assigned_to TEXT NOT NULL,
            status      TEXT NOT NULL,
            result      TEXT,
            error       TEXT,
            created_by  TEXT NOT NULL,
            created_at  TEXT NOT NULL,
            updated_at  TEXT NOT NULL
        );
        CREATE INDEX comms_tasks_open ON comms_tasks (assigned_to, status);
        """,
    ),
)
