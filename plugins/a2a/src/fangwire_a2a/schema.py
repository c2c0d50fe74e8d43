"""The A2A tables (component ``a2a`` of the store).

``a2a_tasks`` holds tasks this daemon serves (the A2A 1.0 task as serialized protobuf, plus
the columns the lists filter on); ``a2a_remote_agents`` the agents discovered elsewhere with
their trust status; ``a2a_remote_tasks`` the tasks sent to them (as received, JSON).
"""

from __future__ import annotations

from fangwire.store import Migration

A2A_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        component="a2a",
        version=1,
        description="served tasks, discovered agents, tasks sent to them",
        apply="""
        CREATE TABLE a2a_tasks (
            id          TEXT PRIMARY KEY,
            owner       TEXT NOT NULL,
            context_id  TEXT NOT NULL,
            agent_id    TEXT NOT NULL DEFAULT '',
            state       INTEGER NOT NULL,
            status_ns   INTEGER NOT NULL DEFAULT 0,
            task        BLOB NOT NULL,
            created_at  TEXT NOT NULL,
            updated_at  TEXT NOT NULL
        );
        CREATE INDEX a2a_tasks_owner ON a2a_tasks (owner, status_ns DESC, id DESC);
        CREATE INDEX a2a_tasks_state ON a2a_tasks (state);
        CREATE TABLE a2a_remote_agents (
            id            TEXT PRIMARY KEY,
            url           TEXT NOT NULL UNIQUE,
            name          TEXT NOT NULL,
            description   TEXT NOT NULL DEFAULT '',
            version       TEXT NOT NULL DEFAULT '',
            card          TEXT NOT NULL,
            protocol      TEXT NOT NULL,
            endpoint      TEXT NOT NULL,
            status        TEXT NOT NULL,
            discovered_by TEXT NOT NULL,
            approved_by   TEXT,
            created_at    TEXT NOT NULL,
            updated_at    TEXT NOT NULL
        );
        CREATE TABLE a2a_remote_tasks (
            id          TEXT PRIMARY KEY,
            agent_id    TEXT NOT NULL,
            protocol    TEXT NOT NULL,
            state       TEXT NOT NULL,
            task        TEXT NOT NULL,
            sent_by     TEXT NOT NULL,
            created_at  TEXT NOT NULL,
            updated_at  TEXT NOT NULL
        );
        """,
    ),
)
