"""Tests of the state store (fangwire.store) and its SQLite backend."""

from __future__ import annotations

import random
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from anyio.abc import TaskGroup

from fangwire.store import Migration, SQLiteStore, StoreError, open_store
from fangwire.store.core_migrations import CORE_MIGRATIONS, kv_get, kv_set
from fangwire.store.sqlite import _split_sql

pytestmark = pytest.mark.anyio

ITEMS = Migration("items", 1, "items table", "CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with open_store(tmp_path) as s:
        await s.migrate([ITEMS])
        yield s


async def _tables(store: SQLiteStore) -> set[str]:
    rows = await store.fetch_all("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {r["name"] for r in rows}


# -- connection setup ----------------------------------------------------------------------


async def test_pragmas_on_writer_and_reader(store: SQLiteStore) -> None:
    def pragmas(conn: sqlite3.Connection) -> dict[str, object]:
        out: dict[str, object] = {}
        for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout"):
            row = conn.execute(f"PRAGMA {name}").fetchone()
            out[name] = next(iter(row.values()))
        return out

    expected = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 5000}
    assert await store.write(pragmas) == expected
    assert await store.read(pragmas) == expected


async def test_database_file_mode_is_0600(tmp_path: Path) -> None:
    async with open_store(tmp_path) as s:
        await s.execute("CREATE TABLE t (x)")  # forces the WAL file into existence
        for suffix in ("", "-wal"):
            mode = (tmp_path / f"fangwire.db{suffix}").stat().st_mode
            assert stat.S_IMODE(mode) == 0o600, suffix


async def test_open_creates_missing_directory(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "a" / "b" / "x.db") as s:
        await s.execute("CREATE TABLE t (x)")
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


# -- migrations ----------------------------------------------------------------------------


async def test_migrations_applied_once_and_idempotent(tmp_path: Path) -> None:
    async with open_store(tmp_path) as s:
        assert await s.migrate(CORE_MIGRATIONS) == list(CORE_MIGRATIONS)
        assert await s.migrate(CORE_MIGRATIONS) == []
        assert s.schema_versions == {"core": 1}
        assert await kv_get(s, "greeting") is None
        await kv_set(s, "greeting", "hello")
        await kv_set(s, "greeting", "bye")
        assert await kv_get(s, "greeting") == "bye"
        rows = await s.fetch_all("SELECT * FROM fangwire_schema")
        assert len(rows) == 1
        assert rows[0]["component"] == "core"
        assert rows[0]["applied_at"].endswith("Z")
    async with open_store(tmp_path) as s:
        assert s.schema_versions == {"core": 1}
        assert await s.migrate(CORE_MIGRATIONS) == []
        assert await kv_get(s, "greeting") == "bye"


async def test_per_component_versions(store: SQLiteStore) -> None:
    plug = [
        Migration("plug", 1, "a", "CREATE TABLE plug_a (x INTEGER);"),
        Migration("plug", 2, "b", "ALTER TABLE plug_a ADD COLUMN y TEXT"),
    ]

    def third(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE plug_c (z)")
        conn.execute("INSERT INTO plug_c VALUES ('a;b')")

    plug3 = [*plug, Migration("plug", 3, "c", third)]
    # order given does not matter within a component
    applied = await store.migrate([plug[1], *CORE_MIGRATIONS, plug[0]])
    assert [(m.component, m.version) for m in applied] == [("plug", 1), ("plug", 2), ("core", 1)]
    assert store.schema_versions == {"items": 1, "plug": 2, "core": 1}
    applied = await store.migrate(plug3)
    assert [(m.component, m.version) for m in applied] == [("plug", 3)]
    assert (await store.health()).schema == {"items": 1, "plug": 3, "core": 1}
    assert {"plug_a", "plug_c", "kv"} <= await _tables(store)


@pytest.mark.parametrize("versions", [[1, 3], [2], [1, 1], [1, 2, 4]])
async def test_non_contiguous_versions_rejected(store: SQLiteStore, versions: list[int]) -> None:
    migrations = [
        Migration("gap", v, f"v{v}", f"CREATE TABLE gap_{i} (x)") for i, v in enumerate(versions)
    ]
    with pytest.raises(StoreError, match="numbered 1"):
        await store.migrate(migrations)
    assert not any(t.startswith("gap_") for t in await _tables(store))


def test_migration_fields_validated() -> None:
    with pytest.raises(ValueError, match="version"):
        Migration("c", 0, "zero", "SELECT 1")
    with pytest.raises(ValueError, match="component"):
        Migration(" ", 1, "blank", "SELECT 1")


async def test_database_ahead_of_code_rejected(store: SQLiteStore) -> None:
    two = [
        Migration("plug", 1, "a", "CREATE TABLE plug_a (x)"),
        Migration("plug", 2, "b", "CREATE TABLE plug_b (x)"),
    ]
    await store.migrate(two)
    with pytest.raises(StoreError, match=r"'plug' is at version 2, newer than this code"):
        await store.migrate(two[:1])
    # a component the code does not mention at all is left alone
    assert await store.migrate([ITEMS]) == []


async def test_failing_migration_leaves_nothing_behind(store: SQLiteStore) -> None:
    ok = Migration("plug", 1, "ok", "CREATE TABLE plug_ok (x)")
    bad_sql = Migration("plug", 2, "bad", "CREATE TABLE plug_half (x); CREATE TABLE oops (;")
    with pytest.raises(StoreError, match=r"migration 'plug' version 2 \(bad\) failed") as info:
        await store.migrate([ok, bad_sql])
    assert isinstance(info.value.__cause__, StoreError)
    assert isinstance(info.value.__cause__.__cause__, sqlite3.OperationalError)

    def bad_fn(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE plug_half2 (x)")
        raise RuntimeError("boom")

    with pytest.raises(StoreError, match="boom"):
        await store.migrate([ok, Migration("plug", 2, "bad", bad_fn)])
    tables = await _tables(store)
    assert "plug_ok" in tables
    assert not {"plug_half", "plug_half2", "oops"} & tables
    rows = await store.fetch_all("SELECT version FROM fangwire_schema WHERE component = 'plug'")
    assert rows == [{"version": 1}]
    assert store.schema_versions["plug"] == 1


async def test_migration_may_not_control_transactions(store: SQLiteStore) -> None:
    sneaky = Migration("plug", 1, "sneaky", "CREATE TABLE plug_t (x); COMMIT; BEGIN;")
    with pytest.raises(StoreError, match="must not begin, commit or roll back"):
        await store.migrate([sneaky])
    assert "plug_t" not in await _tables(store)


def test_split_sql_respects_quotes_comments_and_triggers() -> None:
    script = """
    CREATE TABLE a (x TEXT DEFAULT 'semi;colon'); -- trailing; comment
    CREATE TRIGGER tr AFTER INSERT ON a BEGIN
        INSERT INTO a VALUES ('x;y');
        SELECT 1;
    END;
    /* block; comment */
    SELECT 2
    """
    parts = _split_sql(script)
    assert len(parts) == 3
    assert "semi;colon" in parts[0]
    assert parts[1].strip().startswith("-- trailing; comment\n    CREATE TRIGGER")
    assert parts[1].rstrip().endswith("END;")
    assert parts[2].strip().endswith("SELECT 2")
    conn = sqlite3.connect(":memory:")
    try:
        for part in parts:
            conn.execute(part)
    finally:
        conn.close()


# -- writes --------------------------------------------------------------------------------


async def test_concurrent_writes_land_with_group_commit(store: SQLiteStore) -> None:
    before = store.stats.commits
    counts: list[int] = []

    async def insert(i: int) -> None:
        counts.append(await store.execute("INSERT INTO items (id, v) VALUES (?, ?)", (i, str(i))))

    async with anyio.create_task_group() as tg:
        for i in range(500):
            tg.start_soon(insert, i)
    assert counts == [1] * 500
    row = await store.fetch_one("SELECT COUNT(*) AS n, SUM(id) AS s FROM items")
    assert row == {"n": 500, "s": sum(range(500))}
    commits = store.stats.commits - before
    assert 1 <= commits < 500
    assert store.stats.max_batch > 1


async def _hold_writer(store: SQLiteStore, tg: TaskGroup) -> threading.Event:
    """Occupy the writer thread with a job until the returned event is set."""
    started, gate = threading.Event(), threading.Event()

    def blocker(conn: sqlite3.Connection) -> None:
        started.set()
        assert gate.wait(10)

    tg.start_soon(store.write, blocker)
    assert await anyio.to_thread.run_sync(started.wait, 10)
    return gate


async def test_failing_job_in_batch_affects_only_itself(store: SQLiteStore) -> None:
    await store.execute("INSERT INTO items (id, v) VALUES (5, 'existing')")
    outcomes: dict[int, object] = {}

    async def insert(i: int) -> None:
        try:
            outcomes[i] = await store.execute("INSERT INTO items (id, v) VALUES (?, 'new')", (i,))
        except StoreError as exc:
            outcomes[i] = exc

    def python_failure(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO items (id, v) VALUES (100, 'rolled back')")
        raise KeyError("job bug")

    async def failing_fn() -> None:
        with pytest.raises(KeyError, match="job bug"):
            await store.write(python_failure)
        outcomes[100] = "raised"

    batches, commits = store.stats.batches, store.stats.commits
    async with anyio.create_task_group() as tg:
        gate = await _hold_writer(store, tg)
        for i in range(10):
            tg.start_soon(insert, i)
        tg.start_soon(failing_fn)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    # the blocker alone, then all eleven queued jobs in one transaction
    assert store.stats.batches - batches == 2
    assert store.stats.commits - commits == 2
    assert store.stats.max_batch >= 11
    err = outcomes.pop(5)
    assert isinstance(err, StoreError)
    assert "UNIQUE constraint failed" in str(err)
    assert isinstance(err.__cause__, sqlite3.IntegrityError)
    assert outcomes.pop(100) == "raised"
    assert outcomes == {i: 1 for i in range(10) if i != 5}
    rows = await store.fetch_all("SELECT id, v FROM items ORDER BY id")
    assert rows == [{"id": i, "v": "existing" if i == 5 else "new"} for i in range(10)]


async def test_job_may_not_commit_and_batch_survives(store: SQLiteStore) -> None:
    def commits(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO items (id) VALUES (1)")
        conn.commit()

    def rolls_back(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")

    def releases(conn: sqlite3.Connection) -> None:
        conn.execute("RELEASE fangwire_job")

    def own_savepoint(conn: sqlite3.Connection) -> int:
        conn.execute("SAVEPOINT mine")
        conn.execute("INSERT INTO items (id) VALUES (3)")
        conn.execute("ROLLBACK TO mine")
        conn.execute("RELEASE mine")
        return conn.execute("INSERT INTO items (id) VALUES (4)").rowcount

    results: list[object] = []

    async def run(fn: object) -> None:
        try:
            results.append(await store.write(fn))  # type: ignore[arg-type]
        except StoreError as exc:
            results.append(str(exc))

    async with anyio.create_task_group() as tg:
        gate = await _hold_writer(store, tg)
        for fn in (commits, rolls_back, releases, own_savepoint):
            tg.start_soon(run, fn)
        tg.start_soon(store.execute, "INSERT INTO items (id) VALUES (2)")
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert sorted(map(str, results)) == sorted(
        ["1"] + ["write jobs must not begin, commit or roll back transactions"] * 3
    )
    assert await store.fetch_all("SELECT id FROM items ORDER BY id") == [{"id": 2}, {"id": 4}]


async def test_cancelled_waiter_does_not_break_the_writer(store: SQLiteStore) -> None:
    async with anyio.create_task_group() as tg:
        gate = await _hold_writer(store, tg)
        with anyio.move_on_after(0.05) as scope:
            await store.execute("INSERT INTO items (id, v) VALUES (1, 'queued, then abandoned')")
        assert scope.cancelled_caught
        started = threading.Event()

        def running(conn: sqlite3.Connection) -> None:
            started.set()
            conn.execute("INSERT INTO items (id, v) VALUES (2, 'started, then abandoned')")

        gate.set()
        with anyio.move_on_after(5) as scope2:
            # cancel as soon as the job runs: it completes and commits nevertheless
            async with anyio.create_task_group() as inner:
                inner.start_soon(store.write, running)
                await anyio.to_thread.run_sync(started.wait, 5)
                inner.cancel_scope.cancel()
        assert not scope2.cancelled_caught
    assert await store.execute("INSERT INTO items (id, v) VALUES (3, 'after')") == 1
    rows = await store.fetch_all("SELECT id FROM items ORDER BY id")
    assert rows == [{"id": 2}, {"id": 3}]


async def test_sql_error_is_store_error_without_path(tmp_path: Path, store: SQLiteStore) -> None:
    with pytest.raises(StoreError, match="no such table: nope") as info:
        await store.execute("INSERT INTO nope VALUES (1)")
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    assert str(tmp_path) not in str(info.value)
    with pytest.raises(StoreError, match="syntax error"):
        await store.fetch_all("SELEC 1")


# -- reads, lifecycle ----------------------------------------------------------------------


async def test_reads_see_committed_writes_and_are_read_only(store: SQLiteStore) -> None:
    assert await store.fetch_one("SELECT v FROM items WHERE id = 1") is None
    await store.execute("INSERT INTO items (id, v) VALUES (1, 'a')")
    assert await store.fetch_one("SELECT v FROM items WHERE id = 1") == {"v": "a"}
    assert await store.execute("UPDATE items SET v = 'b' WHERE id = 1") == 1
    assert await store.fetch_all("SELECT * FROM items") == [{"id": 1, "v": "b"}]
    with pytest.raises(StoreError, match="readonly"):
        await store.read(lambda c: c.execute("DELETE FROM items"))
    results = await store.write(lambda c: c.execute("SELECT * FROM items").fetchall())
    assert results == [{"id": 1, "v": "b"}]


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    async with open_store(tmp_path) as s:
        await s.migrate([ITEMS])
        await s.execute("INSERT INTO items (id, v) VALUES (7, 'kept')")
    async with open_store(tmp_path) as s:
        assert s.schema_versions == {"items": 1}
        assert await s.fetch_all("SELECT * FROM items") == [{"id": 7, "v": "kept"}]


async def test_lifecycle(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    with pytest.raises(StoreError, match="not open"):
        await s.execute("SELECT 1")
    await s.open()
    await s.open()  # harmless
    await s.migrate([ITEMS])
    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(s.execute, "INSERT INTO items (id) VALUES (?)", (i,))
        await anyio.wait_all_tasks_blocked()
        await s.close()  # drains the queued writes first
    await s.close()  # harmless
    with pytest.raises(StoreError, match="not open"):
        await s.execute("INSERT INTO items (id) VALUES (9)")
    with pytest.raises(StoreError, match="not open"):
        await s.fetch_all("SELECT * FROM items")
    assert not (await s.health()).ok
    async with s:  # reopening a closed store works
        assert len(await s.fetch_all("SELECT * FROM items")) == 3


async def test_health_has_no_path(tmp_path: Path, store: SQLiteStore) -> None:
    health = await store.health()
    assert health.ok
    assert health.backend == "sqlite"
    assert health.schema == {"items": 1}
    assert str(tmp_path) not in repr(health)
    assert "fangwire.db" not in repr(health)


# -- crash safety --------------------------------------------------------------------------

CHILD = r"""
import sys
import anyio
from pathlib import Path
from fangwire.store import Migration, SQLiteStore

async def main() -> None:
    store = SQLiteStore(Path(sys.argv[1]))
    await store.open()
    await store.migrate([Migration("crash", 1, "t", "CREATE TABLE t (id INTEGER PRIMARY KEY)")])
    print("ready", flush=True)

    async def worker(i: int) -> None:
        while True:
            await store.execute("INSERT INTO t (id) VALUES (?)", (i,))
            print(i, flush=True)
            i += 16

    async with anyio.create_task_group() as tg:
        for w in range(16):
            tg.start_soon(worker, int(sys.argv[2]) + w)

anyio.run(main)
"""


async def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    acked: set[int] = set()
    started = time.monotonic()
    for iteration in range(3):
        if iteration and time.monotonic() - started > 3:  # keep the test short on slow hosts
            break
        cmd = [sys.executable, "-c", CHILD, str(db), str(iteration * 1_000_000)]
        errors = tmp_path / f"child-{iteration}.err"
        with (
            errors.open("wb") as err,
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err) as proc,
        ):
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            assert ready == b"ready\n", errors.read_text()
            first = proc.stdout.readline()  # at least one acknowledged write per run
            await anyio.sleep(random.uniform(0.0, 0.25))
            proc.kill()
            out = proc.stdout.read()  # through the same buffered reader, up to EOF
            proc.wait(timeout=10)
        assert proc.returncode == -9, errors.read_text()
        lines = (first + out).split(b"\n")[:-1]  # a trailing partial line was not acknowledged
        acked.update(int(line) for line in lines)
    async with SQLiteStore(db) as s:
        present = {r["id"] for r in await s.fetch_all("SELECT id FROM t")}
    assert acked
    assert acked <= present


@pytest.mark.anyio
async def test_a_write_job_returning_a_cursor_is_refused(tmp_path):
    async with SQLiteStore(tmp_path / "cursor.db") as store:
        await store.execute("CREATE TABLE t (x INTEGER)")
        with pytest.raises(TypeError, match="must not return a cursor"):
            await store.write(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
        assert await store.fetch_all("SELECT x FROM t") == []
