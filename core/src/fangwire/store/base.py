"""The state-store interface shared by every backend.

fangwire keeps all of its durable state (audit chain, usage events, webhook outbox, approvals,
tasks, comms events, small settings ...) in one database.  Each *component* (the core, or a
plugin) owns its own tables and describes them with a list of versioned :class:`Migration`\\ s.

Contracts common to every :class:`Store` implementation:

* Every method is a coroutine and never blocks the event loop: the database is accessed from
  worker threads.
* :meth:`Store.write` returns only after the transaction that contains the job has been
  durably committed.  A job whose awaiting task is cancelled may or may not have been
  applied; a job that was committed stays committed.
* Errors raised by the database are re-raised as :class:`StoreError` chained from the original
  exception.  Messages never contain filesystem paths.
* Exceptions raised by the caller's own function propagate unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias, TypeVar

import attrs

__all__ = [
    "Connection",
    "Migration",
    "Params",
    "Row",
    "Store",
    "StoreError",
    "StoreHealth",
]

T = TypeVar("T")

Row: TypeAlias = Mapping[str, Any]
"""One result row: column name to value."""

Params: TypeAlias = Sequence[Any] | Mapping[str, Any]
"""Bound parameters of one statement: positional (``?``) or named (``:name``)."""

Connection: TypeAlias = sqlite3.Connection
"""The connection type handed to :meth:`Store.read` and :meth:`Store.write` callbacks."""


class StoreError(Exception):
    """A state-store failure: database error, schema mismatch, or use of a closed store.

    The message is safe to show to operators and API clients: it never contains a path.
    When caused by a driver error, that error is available as ``__cause__``.
    """


def _check_component(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not value or not value.strip():
        raise ValueError("migration component must be a non-empty name")


@attrs.frozen
class Migration:
    """One versioned schema change owned by one component.

    Rules (enforced by :meth:`Store.migrate`):

    * ``version`` numbers of one ``component`` start at 1 and increase by exactly 1, with no
      gaps or duplicates; migrations are applied in version order.
    * A migration that has been released (and so may have been applied somewhere) is never
      edited or removed; changes are made by adding the next version.
    * ``apply`` is either an SQL script (several statements separated by ``;``) or a callable
      receiving the connection.  It runs inside a transaction that also records the migration;
      it must not begin, commit or roll back transactions itself.  If it fails, nothing of it
      and no bookkeeping row remain.
    """

    component: str = attrs.field(validator=_check_component)
    version: int = attrs.field(validator=attrs.validators.ge(1))
    description: str
    apply: str | Callable[[sqlite3.Connection], None] = attrs.field(repr=False)


@attrs.frozen
class StoreHealth:
    """A point-in-time health report, safe to expose (it contains no filesystem paths).

    ``schema`` maps each component to the highest migration version applied in the database.
    """

    ok: bool
    backend: str
    schema: dict[str, int]
    detail: str


class Store(Protocol):
    """A transactional state store.  See the module docstring for the shared contracts."""

    async def open(self) -> None:
        """Open the database (creating it if needed).  Calling it on an open store is a no-op."""
        ...

    async def close(self) -> None:
        """Finish every write submitted so far, then release all resources.

        Afterwards every operation raises :class:`StoreError`.  Closing twice is a no-op.
        """
        ...

    async def migrate(self, migrations: Sequence[Migration]) -> list[Migration]:
        """Apply the migrations that the database does not have yet; return those applied now.

        Idempotent.  Raises :class:`StoreError` if a component's versions are not exactly
        ``1..n``, or if the database already holds a version of a component higher than the
        highest one given (the database is ahead of the code).  Each migration is applied in
        its own transaction together with its bookkeeping row; on failure the migrations
        applied before it stay applied and the error is raised.
        """
        ...

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` on a read-only connection in a worker thread and return its result.

        ``fn`` sees one consistent snapshot of committed data; rows are dictionaries.
        """
        ...

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` inside a write transaction; return its result once durably committed.

        If ``fn`` raises, its changes are rolled back and the exception propagates.  ``fn``
        must not begin, commit or roll back transactions; it may use its own savepoints.
        """
        ...

    async def fetch_all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """Run one query and return every row."""
        ...

    async def fetch_one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        """Run one query and return its first row, or ``None``."""
        ...

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one data-changing statement durably; return the number of rows it changed."""
        ...

    async def health(self) -> StoreHealth:
        """Report whether the store is usable.  Never raises for an unhealthy store."""
        ...

    @property
    def schema_versions(self) -> dict[str, int]:
        """Component to highest applied migration version (a copy)."""
        ...
