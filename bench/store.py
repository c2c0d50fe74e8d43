"""Benchmark: durable single-row inserts per second through the state store.

Compares one writer awaiting each insert in turn (one commit per row) with 64 concurrent
writers (the writer thread group-commits them).  Every insert is acknowledged only after a
``synchronous=FULL`` commit, so the figures depend heavily on the disk's fsync latency.

    .venv/bin/python bench/store.py [--dir DIR] [--seconds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio

from fangwire.store import Migration, SQLiteStore

TABLE = Migration(
    "bench", 1, "events", "CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"
)
BODY = "x" * 100


async def sequential(store: SQLiteStore, seconds: float) -> tuple[int, float]:
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        await store.execute("INSERT INTO events (body) VALUES (?)", (BODY,))
        n += 1
    return n, time.perf_counter() - start


async def concurrent(store: SQLiteStore, seconds: float, writers: int) -> tuple[int, float]:
    counts = [0] * writers
    start = time.perf_counter()
    deadline = start + seconds

    async def writer(i: int) -> None:
        while time.perf_counter() < deadline:
            await store.execute("INSERT INTO events (body) VALUES (?)", (BODY,))
            counts[i] += 1

    async with anyio.create_task_group() as tg:
        for i in range(writers):
            tg.start_soon(writer, i)
    return sum(counts), time.perf_counter() - start


async def main(directory: Path, seconds: float, writers: int) -> None:
    async with SQLiteStore(directory / "bench.db") as store:
        await store.migrate([TABLE])

        commits = store.stats.commits
        n, elapsed = await sequential(store, seconds)
        print(
            f"sequential   : {n:8d} inserts in {elapsed:5.2f}s = {n / elapsed:9.0f}/s "
            f"({store.stats.commits - commits} commits)"
        )

        commits = store.stats.commits
        n, elapsed = await concurrent(store, seconds, writers)
        batches = store.stats.commits - commits
        print(
            f"{writers:2d} concurrent: {n:8d} inserts in {elapsed:5.2f}s = {n / elapsed:9.0f}/s "
            f"({batches} commits, {n / max(batches, 1):.1f} rows/commit, "
            f"max batch {store.stats.max_batch})"
        )
        total = await store.fetch_one("SELECT COUNT(*) AS n FROM events")
        assert total is not None
        print(f"rows in table: {total['n']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="directory for the database (default: a temp dir)")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each phase")
    parser.add_argument("--writers", type=int, default=64, help="concurrent writers")
    args = parser.parse_args()
    if args.dir is not None:
        anyio.run(main, args.dir, args.seconds, args.writers)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            anyio.run(main, Path(tmp), args.seconds, args.writers)
