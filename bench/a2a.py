"""Tasks per second through ``POST /a2a/tasks/send`` to the ``echo`` agent, and through the
JSON-RPC binding (``SendMessage``, A2A 1.0).

    python bench/a2a.py [--seconds 5] [--concurrency 32]

The app runs in-process (``httpx.ASGITransport``: no sockets, so this measures fangwire and
a2a-sdk, not the HTTP server) with a fresh home. Every task is complete: persisted as
submitted, working and completed (each a durable write), a full model call (budget reservation,
the echo provider, usage record, history write), and the answer read back from the store.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

# This folder holds bench/http.py, which would shadow the standard library's http package.
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]

import anyio  # noqa: E402
import httpx  # noqa: E402

from fangwire.app import create_app  # noqa: E402
from fangwire.runtime import Runtime  # noqa: E402
from fangwire.secrets import MemoryKeyring  # noqa: E402

SERIAL = itertools.count()
FAILURES: collections.Counter[str] = collections.Counter()


async def rest_sender(http: httpx.AsyncClient, deadline: float, counts: list[int]) -> None:
    while time.perf_counter() < deadline:
        body = {"agent_id": "assistant", "message": {"parts": [{"text": f"hi {next(SERIAL)}"}]}}
        response = await http.post("/a2a/tasks/send", json=body)
        if response.status_code == 200 and response.json()["status"] == "completed":
            counts[0] += 1
        else:
            counts[1] += 1
            FAILURES[f"rest {response.status_code}"] += 1


async def rpc_sender(http: httpx.AsyncClient, deadline: float, counts: list[int]) -> None:
    while time.perf_counter() < deadline:
        message = {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": "hi"}]}
        body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
        response = await http.post("/a2a", json=body, headers={"A2A-Version": "1.0"})
        result = response.json().get("result", {})
        if result.get("task", {}).get("status", {}).get("state") == "TASK_STATE_COMPLETED":
            counts[0] += 1
        else:
            counts[1] += 1
            FAILURES[f"rpc {response.status_code}"] += 1


async def measure(http: httpx.AsyncClient, sender, seconds: float, concurrency: int) -> tuple:
    counts = [0, 0]
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(sender, http, started + seconds, counts)
    return counts, time.perf_counter() - started


async def main(seconds: float, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        runtime = Runtime.build(Path(home), environ={}, keyring_backend=MemoryKeyring())
        app = create_app(runtime)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=60) as http,
        ):
            for label, sender in (
                ("POST /a2a/tasks/send", rest_sender),
                ("JSON-RPC SendMessage", rpc_sender),
            ):
                (ok, failed), elapsed = await measure(http, sender, seconds, concurrency)
                print(
                    f"{label} to echo, {concurrency} concurrent: {ok / elapsed:,.0f} tasks/s"
                    f" ({ok:,} completed, {failed:,} failed"
                    + (f": {dict(FAILURES)}" if FAILURES else "")
                    + ")"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    anyio.run(main, args.seconds, args.concurrency)
