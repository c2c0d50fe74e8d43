"""Messages per second through ``POST /api/comms/send`` to the ``echo`` agent, and the cost of
the budget check on each model call.

    python bench/comms.py [--seconds 5] [--concurrency 32]

The app runs in-process (``httpx.ASGITransport``: no sockets, so this measures fangwire, not
the HTTP server) with a fresh home; every message is a full model call: budget reservation,
the echo provider, durable usage record, history write and comms event.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# This folder holds bench/http.py, which would shadow the standard library's http package.
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]

import collections  # noqa: E402
import itertools  # noqa: E402

import anyio  # noqa: E402
import httpx  # noqa: E402

from fangwire.app import create_app  # noqa: E402
from fangwire.budget import BudgetAction  # noqa: E402
from fangwire.budgeting import gate_for  # noqa: E402
from fangwire.runtime import Runtime  # noqa: E402
from fangwire.secrets import MemoryKeyring  # noqa: E402

SERIAL = itertools.count()
FAILURES: collections.Counter[str] = collections.Counter()


async def sender(http: httpx.AsyncClient, to: str, deadline: float, counts: list[int]) -> None:
    while time.perf_counter() < deadline:
        # Distinct texts: the loop guard rightly stops the same message repeated.
        text = f"hello there {next(SERIAL)}"
        response = await http.post(
            "/api/comms/send", json={"to": to, "content": text, "from": "bench"}
        )
        if response.status_code == 200:
            counts[0] += 1
        else:
            counts[1] += 1
            FAILURES[f"{response.status_code} {response.json()['error']['code']}"] += 1


async def main(seconds: float, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        runtime = Runtime.build(Path(home), environ={}, keyring_backend=MemoryKeyring())
        app = create_app(runtime)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http,
        ):
            agent = (await http.get("/api/agents")).json()["agents"][0]
            counts = [0, 0]
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(sender, http, f"agent:{agent['id']}", started + seconds, counts)
            elapsed = time.perf_counter() - started
            print(
                f"comms/send to echo, {concurrency} concurrent: {counts[0] / elapsed:,.0f} "
                f"messages/s ({counts[0]:,} ok, {counts[1]:,} failed"
                + (f": {dict(FAILURES)}" if FAILURES else "")
                + ")"
            )
            gate = gate_for(runtime)
            action = BudgetAction(kind="model_call", agent_id=agent["id"], estimated_cost_usd=1e-6)
            rounds = 2000
            started = time.perf_counter()
            for _ in range(rounds):
                reservation = await gate.reserve(action)
                reservation.settle(1e-6, 10)
            per_call = (time.perf_counter() - started) / rounds * 1e6
            print(f"budget check (reserve + settle, unlimited budgets): {per_call:,.1f} us/call")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    anyio.run(main, args.seconds, args.concurrency)
