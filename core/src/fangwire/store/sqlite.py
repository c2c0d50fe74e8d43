"""SQLite implementation of :class:`fangwire.store.base.Store`.

Design:

* **One writer thread** owns the only write connection, so writes are serialised in-process and
  never contend with each other for the database lock.  It drains a queue of write jobs and
  runs up to ``max_batch`` of them in one transaction (*group commit*): each job runs inside
  its own ``SAVEPOINT``, so a failing job rolls back only itself and receives its exception
  while the others commit.  Every job is acknowledged only after ``COMMIT`` has returned, with
  ``synchronous=FULL`` (the commit is on stable storage).
* **A small pool of read connections** (``query_only``) used from anyio worker threads under a
  :class:`anyio.CapacityLimiter`; each read runs in one snapshot transaction.
* Results are handed back to the awaiting task with a non-blocking call into its event loop
  (``call_soon_threadsafe`` on asyncio, ``run_sync_soon`` on trio), so the writer never waits
  for an event loop.
* Every connection uses ``journal_mode=WAL`` (persistent, set once by the writer),
  ``synchronous=FULL``, ``foreign_keys=ON`` and ``busy_timeout=5000``; rows are dictionaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar, cast

import anyio
import attrs

from fangwire.store.base import Connection, Migration, Params, StoreError, StoreHealth
from fangwire.timeutil import rfc3339

__all__ = ["SQLiteStore", "StoreStats"]

T = TypeVar("T")

_BACKEND: Final = "sqlite"
_BUSY_TIMEOUT_MS: Final = 5000

# Transaction-control statements issued by the store carry a marker comment.  SQLite consults
# the authorizer only when a statement is prepared and Python caches prepared statements by
# their text, so a job issuing a bare "COMMIT" never reuses the store's own (authorised) one.
_SAVEPOINT_NAME: Final = "fangwire_job"
_BEGIN_WRITE: Final = "BEGIN IMMEDIATE /* fangwire */"
_BEGIN_READ: Final = "BEGIN DEFERRED /* fangwire */"
_COMMIT: Final = "COMMIT /* fangwire */"
_ROLLBACK: Final = "ROLLBACK /* fangwire */"
_SAVEPOINT: Final = f"SAVEPOINT {_SAVEPOINT_NAME} /* fangwire */"
_RELEASE: Final = f"RELEASE {_SAVEPOINT_NAME} /* fangwire */"
_ROLLBACK_TO: Final = f"ROLLBACK TO {_SAVEPOINT_NAME} /* fangwire */"

_SCHEMA_TABLE_DDL: Final = """
CREATE TABLE IF NOT EXISTS fangwire_schema (
    component   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    description TEXT    NOT NULL,
    applied_at  TEXT    NOT NULL,
    PRIMARY KEY (component, version)
)
"""
_SCHEMA_VERSIONS_SQL: Final = (
    "SELECT component, MAX(version) AS version FROM fangwire_schema GROUP BY component"
)

_Schedule = Callable[..., object]
"""Non-blocking, thread-safe "run this callback in the waiting task's event loop"."""


@attrs.define
class StoreStats:
    """Counters of the writer thread (cumulative over the store's lifetime; for tests/metrics).

    ``batches`` transactions were started for ``jobs`` jobs, ``commits`` of them committed;
    ``failed_jobs`` jobs were rolled back; ``max_batch`` is the largest batch seen.
    """

    commits: int = 0
    batches: int = 0
    jobs: int = 0
    failed_jobs: int = 0
    max_batch: int = 0


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


def _trio_schedule() -> _Schedule:
    """Return trio's thread-safe, non-blocking "run soon" for the current trio run."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return cast(_Schedule, trio.lowlevel.current_trio_token().run_sync_soon)
        except RuntimeError:
            pass
    raise StoreError("the store must be used from an asyncio or trio event loop")


def _split_sql(script: str) -> list[str]:
    """Split an SQL script into complete statements (respecting quotes, comments, triggers)."""
    statements: list[str] = []
    parts = script.split(";")
    buf = ""
    for index, part in enumerate(parts):
        buf += part
        if index == len(parts) - 1:
            break
        buf += ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                statements.append(buf)
            buf = ""
    if buf.strip():
        statements.append(buf)
    return statements


class _Scrubber:
    """Turns driver exceptions into :class:`StoreError` without leaking the database path."""

    def __init__(self, path: Path) -> None:
        self._needles = sorted({str(path), str(path.parent), path.name}, key=len, reverse=True)

    def message(self, exc: BaseException) -> str:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        for needle in self._needles:
            if needle:
                text = text.replace(needle, "<database>")
        return text or type(exc).__name__

    def wrap(self, exc: BaseException, prefix: str = "") -> StoreError:
        err = StoreError(f"{prefix}{self.message(exc)}")
        err.__cause__ = exc
        err.__suppress_context__ = True
        return err


class _Job:
    """One unit of work for the writer thread and its hand-over back to the waiting task.

    On asyncio the waiting task awaits a plain future (cheapest); on trio an anyio Event.
    The writer thread never touches either: it asks the task's loop to run :func:`_deliver`.
    """

    __slots__ = ("cancelled", "error", "fn", "isolated", "result", "schedule", "waiter")

    def __init__(self, fn: Callable[[Connection], object], *, isolated: bool = False) -> None:
        self.fn = fn
        self.isolated = isolated  # run alone in its own transaction (migrations)
        self.result: object = None
        self.error: BaseException | None = None
        self.cancelled = False  # the waiting task gave up; skip the job if not started yet
        self.waiter: asyncio.Future[None] | anyio.Event
        self.schedule: _Schedule
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.schedule = _trio_schedule()
            self.waiter = anyio.Event()
        else:
            self.schedule = loop.call_soon_threadsafe
            self.waiter = loop.create_future()

    async def wait(self) -> object:
        try:
            if isinstance(self.waiter, asyncio.Future):
                await self.waiter
            else:
                await self.waiter.wait()
        except BaseException:
            self.cancelled = True
            raise
        error, self.error = self.error, None
        if error is not None:
            raise error
        return self.result

    def wake(self) -> None:
        """Runs in the waiting task's event loop."""
        if isinstance(self.waiter, asyncio.Future):
            if not self.waiter.done():  # a cancelled waiter's future is already done
                self.waiter.set_result(None)
        else:
            self.waiter.set()


def _deliver(jobs: list[_Job]) -> None:
    """Runs in the event loop: wake the tasks waiting for these jobs."""
    for job in jobs:
        job.wake()


class _TransactionLost(Exception):
    """A job ended the batch transaction behind the writer's back."""


class _Writer:
    """The writer thread: group-commits queued jobs on its own connection."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        stats: StoreStats,
        scrubber: _Scrubber,
        max_batch: int,
    ) -> None:
        self._conn = conn
        self._stats = stats
        self._scrubber = scrubber
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._accepting = True
        self._failure: StoreError | None = None
        self._in_job = False
        self._violation = False
        conn.set_authorizer(self._authorize)
        self._thread = threading.Thread(
            target=self._main, name="fangwire-store-writer", daemon=True
        )

    # -- event-loop side -------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: _Job) -> None:
        with self._lock:
            if self._failure is not None:
                raise StoreError(str(self._failure))
            if not self._accepting:
                raise StoreError("the store is closed")
            self._queue.put(job)

    def stop(self) -> None:
        """Accept no more jobs; the thread finishes the queued ones and exits."""
        with self._lock:
            if self._accepting:
                self._accepting = False
                self._queue.put(None)

    def join(self) -> None:
        self._thread.join()

    @property
    def failure(self) -> StoreError | None:
        return self._failure

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- writer thread ---------------------------------------------------------------------

    def _authorize(
        self,
        action: int,
        arg1: str | None,
        arg2: str | None,
        _db: str | None,
        _trigger: str | None,
    ) -> int:
        if self._in_job and (
            action == sqlite3.SQLITE_TRANSACTION
            or (action == sqlite3.SQLITE_SAVEPOINT and (arg2 or "").lower() == _SAVEPOINT_NAME)
        ):
            self._violation = True
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def _main(self) -> None:
        try:
            carry: _Job | None = None
            stopping = False
            while not stopping:
                job = carry if carry is not None else self._queue.get()
                carry = None
                if job is None:
                    break
                batch = [job]
                while not job.isolated and len(batch) < self._max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stopping = True
                        break
                    if nxt.isolated:
                        carry = nxt
                        break
                    batch.append(nxt)
                self._run_batch(batch)
        except BaseException as exc:  # pragma: no cover - defensive: never leave waiters hanging
            failure = self._scrubber.wrap(exc, "the store writer stopped: ")
            with self._lock:
                self._failure = failure
                self._accepting = False
        finally:
            self._fail_queued()
            self._conn.close()

    def _fail_queued(self) -> None:
        leftovers: list[_Job] = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.error = StoreError(str(self._failure or "the store is closed"))
                leftovers.append(job)
        self._notify(leftovers)

    def _run_batch(self, batch: list[_Job]) -> None:
        try:
            live = [job for job in batch if not job.cancelled]
            if live:
                self._transact(live)
        except BaseException as exc:  # pragma: no cover - defensive; the writer stops
            for job in batch:
                if job.error is None:
                    job.result = None
                    job.error = self._scrubber.wrap(exc, "the store writer failed: ")
            raise
        finally:
            self._notify(batch)

    def _notify(self, jobs: list[_Job]) -> None:
        groups: dict[_Schedule, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.schedule, []).append(job)
        for schedule, group in groups.items():
            # RuntimeError: the event loop is gone, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                schedule(_deliver, group)

    def _transact(self, jobs: list[_Job]) -> None:
        conn = self._conn
        stats = self._stats
        stats.batches += 1
        stats.jobs += len(jobs)
        stats.max_batch = max(stats.max_batch, len(jobs))
        try:
            conn.execute(_BEGIN_WRITE)
        except sqlite3.Error as exc:
            for job in jobs:
                job.error = self._scrubber.wrap(exc)
            stats.failed_jobs += len(jobs)
            return
        committed: list[_Job] = []
        try:
            if len(jobs) == 1:  # no savepoint needed: the transaction is the job's own
                if self._run_job(jobs[0]):
                    committed.append(jobs[0])
            else:
                for job in jobs:
                    conn.execute(_SAVEPOINT)
                    if self._run_job(job):
                        conn.execute(_RELEASE)
                        committed.append(job)
                    else:
                        conn.execute(_ROLLBACK_TO)
                        conn.execute(_RELEASE)
            if committed:
                conn.execute(_COMMIT)
                stats.commits += 1
            else:
                conn.execute(_ROLLBACK)
        except (sqlite3.Error, _TransactionLost) as exc:
            for job in jobs:
                if job.error is None:
                    job.result = None
                    job.error = self._scrubber.wrap(exc, "transaction failed: ")
            committed.clear()
            self._rollback()
        finally:
            stats.failed_jobs += len(jobs) - len(committed)

    def _run_job(self, job: _Job) -> bool:
        """Run one job; return whether it succeeded.  Raise if it broke the transaction."""
        self._violation = False
        self._in_job = True
        try:
            job.result = job.fn(self._conn)
            if isinstance(job.result, sqlite3.Cursor):
                # A cursor used from another thread corrupts the connection's state.
                job.result.close()
                job.result = None
                raise TypeError("write jobs must not return a cursor (return rows or None)")
        except BaseException as exc:
            if self._violation:
                err = StoreError("write jobs must not begin, commit or roll back transactions")
                err.__cause__ = exc
                job.error = err
            elif isinstance(exc, sqlite3.Error):
                job.error = self._scrubber.wrap(exc)
            else:
                job.error = exc
            ok = False
        else:
            ok = True
        finally:
            self._in_job = False
        if not self._conn.in_transaction:  # pragma: no cover - prevented by the authorizer
            job.error = job.error or StoreError("a write job ended the transaction")
            raise _TransactionLost("a write job ended the transaction")
        return ok

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute(_ROLLBACK)
        if self._conn.in_transaction:  # pragma: no cover - the connection is unusable
            raise StoreError("cannot roll back the write transaction")


class _ReaderPool:
    def __init__(self, conns: list[sqlite3.Connection]) -> None:
        self.conns = conns
        self.idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        for conn in conns:
            self.idle.put(conn)
        self.limiter = anyio.CapacityLimiter(len(conns))


class SQLiteStore:
    """The SQLite state store.  See the module docstring for the design.

    ``path`` is the database file; it is created with mode 0600 (its directory with 0700 if
    missing).  ``read_connections`` sizes the reader pool; ``max_batch`` bounds how many write
    jobs share one commit.  The store is also an async context manager (open/close).
    """

    def __init__(self, path: Path, *, read_connections: int = 4, max_batch: int = 256) -> None:
        if read_connections < 1:
            raise ValueError("read_connections must be at least 1")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._path = Path(path)
        self._read_connections = read_connections
        self._max_batch = max_batch
        self._scrubber = _Scrubber(self._path)
        self._writer: _Writer | None = None
        self._readers: _ReaderPool | None = None
        self._versions: dict[str, int] = {}
        self._lifecycle: anyio.Lock | None = None
        self.stats = StoreStats()

    # -- lifecycle -------------------------------------------------------------------------

    def _lifecycle_lock(self) -> anyio.Lock:
        if self._lifecycle is None:
            self._lifecycle = anyio.Lock()
        return self._lifecycle

    async def open(self) -> None:
        """Open (creating if needed) the database.  A no-op if already open."""
        async with self._lifecycle_lock():
            if self._writer is not None:
                return
            writer_conn, reader_conns, versions = await anyio.to_thread.run_sync(self._open_sync)
            self._versions = versions
            self._readers = _ReaderPool(reader_conns)
            self._writer = _Writer(writer_conn, self.stats, self._scrubber, self._max_batch)
            self._writer.start()

    def _open_sync(self) -> tuple[sqlite3.Connection, list[sqlite3.Connection], dict[str, int]]:
        try:
            if not self._path.parent.exists():
                self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                try:
                    os.fchmod(fd, 0o600)  # whatever the umask
                finally:
                    os.close(fd)
        except OSError as exc:
            raise self._scrubber.wrap(exc, "cannot create the database file: ") from exc
        conns: list[sqlite3.Connection] = []
        try:
            writer = self._connect(query_only=False)
            conns.append(writer)
            mode = writer.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode is None or str(mode["journal_mode"]).lower() != "wal":
                raise StoreError("the database does not support write-ahead logging")
            writer.execute(_SCHEMA_TABLE_DDL)
            versions = {
                row["component"]: row["version"]
                for row in writer.execute(_SCHEMA_VERSIONS_SQL).fetchall()
            }
            readers: list[sqlite3.Connection] = []
            for _ in range(self._read_connections):
                readers.append(self._connect(query_only=True))
                conns.append(readers[-1])
        except BaseException as exc:
            for conn in conns:
                conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._scrubber.wrap(exc, "cannot open the database: ") from exc
            raise
        return writer, readers, versions

    def _connect(self, *, query_only: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # the store issues BEGIN/COMMIT itself
            check_same_thread=False,  # each connection is used by one thread at a time
            cached_statements=256,
        )
        try:
            conn.row_factory = _dict_row
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            if query_only:
                conn.execute("PRAGMA query_only=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Finish the queued writes, then close every connection.  A no-op if not open."""
        async with self._lifecycle_lock():
            writer, readers = self._writer, self._readers
            if writer is None or readers is None:
                return
            with anyio.CancelScope(shield=True):
                self._readers = None
                writer.stop()
                await anyio.to_thread.run_sync(writer.join)
                self._writer = None
                # Wait for in-flight reads: hold every reader slot, then close the connections.
                borrowers = [object() for _ in readers.conns]
                for borrower in borrowers:
                    await readers.limiter.acquire_on_behalf_of(borrower)
                for conn in readers.conns:
                    conn.close()
                for borrower in borrowers:
                    readers.limiter.release_on_behalf_of(borrower)

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- reads -----------------------------------------------------------------------------

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` on a read-only connection, in one snapshot transaction, in a worker thread.

        ``fn`` must not keep the connection or unconsumed cursors beyond its return.
        """
        pool = self._readers
        if pool is None:
            raise StoreError("the store is not open")
        return await anyio.to_thread.run_sync(self._read_sync, pool, fn, limiter=pool.limiter)

    def _read_sync(self, pool: _ReaderPool, fn: Callable[[Connection], T]) -> T:
        conn = pool.idle.get_nowait()  # never empty: the limiter admits len(conns) threads
        try:
            conn.execute(_BEGIN_READ)
            try:
                return fn(conn)
            finally:
                if conn.in_transaction:
                    conn.execute(_ROLLBACK)
        except sqlite3.Error as exc:
            raise self._scrubber.wrap(exc) from exc
        finally:
            pool.idle.put(conn)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """Run one query and return all rows as dictionaries."""

        def run(conn: Connection) -> list[dict[str, Any]]:
            return cast(list[dict[str, Any]], conn.execute(sql, params).fetchall())

        return await self.read(run)

    async def fetch_one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        """Run one query and return its first row as a dictionary, or ``None``."""

        def run(conn: Connection) -> dict[str, Any] | None:
            return cast("dict[str, Any] | None", conn.execute(sql, params).fetchone())

        return await self.read(run)

    # -- writes ----------------------------------------------------------------------------

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a write transaction; return its result after a durable commit.

        ``fn`` runs in the writer thread, possibly in the same transaction as other jobs but
        isolated from their failures by a savepoint.  It must be quick (it holds up every other
        write) and must not begin, commit or roll back transactions (that fails the job with
        :class:`StoreError`); nested savepoints of its own are fine.  If the awaiting task is
        cancelled before the job started, the job is skipped; once started it completes.
        """
        return cast(T, await self._run(_Job(fn)))

    async def _run(self, job: _Job) -> object:
        writer = self._writer
        if writer is None:
            raise StoreError("the store is not open")
        writer.submit(job)
        return await job.wait()

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement durably; return its ``rowcount``."""

        def run(conn: Connection) -> int:
            return conn.execute(sql, params).rowcount

        return await self.write(run)

    # -- migrations ------------------------------------------------------------------------

    async def migrate(self, migrations: Sequence[Migration]) -> list[Migration]:
        """Apply pending migrations; return those applied by this call.

        Components are processed in order of first appearance in ``migrations``, each in
        version order.  Each migration is one transaction (the migration plus its
        ``fangwire_schema`` row).  SQL scripts run inside that transaction, so statements
        that cannot (``VACUUM``, ``PRAGMA foreign_keys``) must not be used.
        """
        plan = _plan(migrations)
        current = await self.read(_load_versions)
        for component, steps in plan.items():
            have = current.get(component, 0)
            if have > len(steps):
                raise StoreError(
                    f"the database schema of component {component!r} is at version {have}, "
                    f"newer than this code (up to version {len(steps)}); refusing to use it"
                )
        applied: list[Migration] = []
        for component, steps in plan.items():
            for migration in steps[current.get(component, 0) :]:
                job = _Job(functools.partial(_apply_migration, migration), isolated=True)
                try:
                    done = await self._run(job)
                except Exception as exc:
                    raise StoreError(
                        f"migration {component!r} version {migration.version} "
                        f"({migration.description}) failed: {exc}"
                    ) from exc
                if done:
                    applied.append(migration)
                self._versions[component] = max(self._versions.get(component, 0), migration.version)
        return applied

    @property
    def schema_versions(self) -> dict[str, int]:
        """Component to highest migration version known applied (a copy)."""
        return dict(self._versions)

    # -- health ----------------------------------------------------------------------------

    async def health(self) -> StoreHealth:
        """Check the writer thread and run a query on a reader; never raises."""
        writer = self._writer
        if writer is None:
            return StoreHealth(False, _BACKEND, self.schema_versions, "the store is not open")
        if writer.failure is not None or not writer.alive:
            detail = str(writer.failure or "the writer thread is not running")
            return StoreHealth(False, _BACKEND, self.schema_versions, detail)
        try:
            schema = await self.read(_load_versions)
        except StoreError as exc:
            return StoreHealth(False, _BACKEND, self.schema_versions, str(exc))
        detail = (
            f"open; journal_mode=wal; synchronous=full; readers={self._read_connections}; "
            f"commits={self.stats.commits}"
        )
        return StoreHealth(True, _BACKEND, schema, detail)


def _load_versions(conn: Connection) -> dict[str, int]:
    return {row["component"]: row["version"] for row in conn.execute(_SCHEMA_VERSIONS_SQL)}


def _plan(migrations: Sequence[Migration]) -> dict[str, list[Migration]]:
    """Group by component (first-appearance order), sort by version, check ``1..n``."""
    plan: dict[str, list[Migration]] = {}
    for migration in migrations:
        plan.setdefault(migration.component, []).append(migration)
    for component, steps in plan.items():
        steps.sort(key=lambda m: m.version)
        versions = [m.version for m in steps]
        if versions != list(range(1, len(steps) + 1)):
            raise StoreError(
                f"migrations of component {component!r} must be numbered 1..{len(steps)} "
                f"without gaps or duplicates, got {versions}"
            )
    return plan


def _apply_migration(migration: Migration, conn: Connection) -> bool:
    """Apply one migration in the writer's transaction; ``False`` if already applied."""
    row = conn.execute(
        "SELECT MAX(version) AS version FROM fangwire_schema WHERE component = ?",
        (migration.component,),
    ).fetchone()
    have = (row["version"] if row else None) or 0
    if have >= migration.version:  # applied meanwhile, e.g. by another process
        return False
    if have != migration.version - 1:
        raise StoreError(f"version {have + 1} is not applied yet")
    if isinstance(migration.apply, str):
        for statement in _split_sql(migration.apply):
            conn.execute(statement)
    else:
        migration.apply(conn)
    conn.execute(
        "INSERT INTO fangwire_schema (component, version, description, applied_at) "
        "VALUES (?, ?, ?, ?)",
        (
            migration.component,
            migration.version,
            migration.description,
            rfc3339(timespec="seconds"),
        ),
    )
    return True
