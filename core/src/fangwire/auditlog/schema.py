"""The audit log's tables (component ``audit`` of the store)."""

from __future__ import annotations

from fangwire.store import Migration

AUDIT_COMPONENT = "audit"

AUDIT_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        component=AUDIT_COMPONENT,
        version=1,
        description="append-only audit entries, Merkle subtrees and signed checkpoints",
        apply="""
        CREATE TABLE audit_entries (
            id         INTEGER PRIMARY KEY,
            body       BLOB    NOT NULL,
            hash       BLOB    NOT NULL,
            prev_hash  BLOB    NOT NULL,
            event_type TEXT    NOT NULL,
            agent_id   TEXT,
            timestamp  TEXT    NOT NULL
        );
        -- Complete aligned subtrees above the leaves (level >= 1); level-0 hashes are
        -- SHA-256(0x00 || audit_entries.hash) and are computed from the entries.
        CREATE TABLE audit_nodes (
            level INTEGER NOT NULL,
            idx   INTEGER NOT NULL,
            hash  BLOB    NOT NULL,
            PRIMARY KEY (level, idx)
        ) WITHOUT ROWID;
        CREATE TABLE audit_checkpoints (
            size      INTEGER PRIMARY KEY,
            root      BLOB    NOT NULL,
            tip       BLOB    NOT NULL,
            timestamp TEXT    NOT NULL,
            note      TEXT    NOT NULL
        );
        -- Defence in depth only: whoever can write the file can drop these.
        CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
        BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
        CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
        BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
        CREATE TRIGGER audit_nodes_no_update BEFORE UPDATE ON audit_nodes
        BEGIN SELECT RAISE(ABORT, 'audit nodes are append-only'); END;
        """,
    ),
)
