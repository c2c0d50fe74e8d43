"""Audit log figures: durable appends per second, and the time to verify a large log.

    python bench/audit.py [--entries 1000000] [--seconds 3] [--concurrency 256]

1. Appends: ``--concurrency`` tasks call ``AuditService.record`` for ``--seconds`` against a
   fresh store (WAL, ``synchronous=FULL``, group commit); prints appends/s and entries per
   commit. Then the same with one task at a time (every append its own durable commit).
2. Verification: fills a fresh log with ``--entries`` entries through the same append code
   (in large transactions, to build it quickly), signs a checkpoint, then times
   ``verify()`` (chain walk, checked against the signed checkpoint) and ``verify(deep=True)``
   (also Merkle roots and indexed columns).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

# This folder holds bench/http.py, which would shadow the standard library's http package.
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]

import anyio  # noqa: E402

from fangwire.auditlog.log import _Request  # noqa: E402
from fangwire.runtime import Runtime  # noqa: E402
from fangwire.secrets import MemoryKeyring  # noqa: E402


def build(home: Path) -> Runtime:
    return Runtime.build(home, environ={}, keyring_backend=MemoryKeyring())


async def worker(runtime: Runtime, deadline: float, counter: list[int]) -> None:
    while time.perf_counter() < deadline:
        await runtime.audit.record("bench", details={"n": counter[0]})
        counter[0] += 1


async def appends(seconds: float, concurrency: int) -> None:
    for tasks in (concurrency, 1):
        with tempfile.TemporaryDirectory() as home:
            runtime = build(Path(home))
            async with runtime.serving():
                counter = [0]
                started = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(tasks):
                        tg.start_soon(worker, runtime, started + seconds, counter)
                elapsed = time.perf_counter() - started
                count = counter[0]
                stats = getattr(runtime.store, "stats", None)
                commits = getattr(stats, "commits", 0) or 1
            print(
                f"appends, {tasks:4d} concurrent: {count / elapsed:10,.0f}/s "
                f"({count:,} entries, {count / commits:.1f} per commit)"
            )


async def verification(entries: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        runtime = build(Path(home))
        async with runtime.serving():
            log = runtime.audit.log
            started = time.perf_counter()
            batch = 50_000
            done = 0
            while done < entries:
                size = min(batch, entries - done)

                def fill(conn: sqlite3.Connection, size: int = size, base: int = done) -> None:
                    batch = [_Request("bench", None, {"n": base + i}, "ok") for i in range(size)]
                    log._append_batch(conn, batch)

                await runtime.store.write(fill)
                done += size
            print(f"filled {entries:,} entries in {time.perf_counter() - started:.1f} s")
            await runtime.audit.checkpoints.checkpoint()
            for deep in (False, True):
                started = time.perf_counter()
                report = await runtime.audit.verify(deep=deep)
                elapsed = time.perf_counter() - started
                kind = "deep verify " if deep else "verify      "
                print(
                    f"{kind}{report.chain_length:,} entries: {elapsed:.2f} s "
                    f"({report.status}, {report.chain_length / elapsed:,.0f} entries/s)"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    anyio.run(appends, args.seconds, args.concurrency)
    anyio.run(verification, args.entries)
    print("targets: >= 20,000 appends/s with group commit; verify 1,000,000 entries < 2 s")


if __name__ == "__main__":
    main()
