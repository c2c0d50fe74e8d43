"""The agents' tables (component ``agents`` of the store)."""

from __future__ import annotations

from fangwire.store import Migration

AGENT_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        component="agents",
        version=1,
        description="agents and their conversation history",
        apply="""
        CREATE TABLE agents (
            id         TEXT PRIMARY KEY,
            name       TEXT NOT NULL,
            spec       TEXT NOT NULL,
            state      TEXT NOT NULL,
            parent_id  TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX agents_name ON agents (name);
        CREATE TABLE agent_messages (
            id        INTEGER PRIMARY KEY,
            agent_id  TEXT NOT NULL,
            role      TEXT NOT NULL,
            content   TEXT NOT NULL,
            timestamp TEXT NOT NULL
        );
        CREATE INDEX agent_messages_agent ON agent_messages (agent_id, id);
        """,
    ),
)
