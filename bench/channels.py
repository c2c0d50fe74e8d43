"""Round trips per second through the ``webhook`` channel: signed inbound POST -> policy ->
``echo`` agent -> signed outbound callback, with p50/p99 latency.

    python bench/channels.py [--seconds 5] [--concurrency 16]

fangwire runs on uvicorn on 127.0.0.1 (a real socket, fresh home), and so does a local
receiver for the callbacks, which verifies each callback's HMAC like a real receiver would.
``--concurrency`` senders each keep one round trip in flight: post a signed message, wait for
its answer to reach the receiver, repeat. Latency is from just before the inbound POST to the
moment the receiver has verified the answer. Senders, fangwire and the receiver share one
process and one event loop, so the figure is a floor for what fangwire alone can do.
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
import hashlib  # noqa: E402
import hmac  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402

import anyio  # noqa: E402
import httpx  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from fangwire.app import create_app  # noqa: E402
from fangwire.runtime import Runtime  # noqa: E402
from fangwire.secrets import MemoryKeyring  # noqa: E402
from fangwire.testing.live import live_server, threaded_server  # noqa: E402

SECRET = b"bench-webhook-secret-0123456789"
SERIAL = itertools.count()
FAILURES: collections.Counter[str] = collections.Counter()
#: message text -> (event set when its answer arrives, time the inbound POST started)
PENDING: dict[str, tuple[anyio.Event, float]] = {}
LATENCIES: list[float] = []


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()


async def callback(request: Request) -> JSONResponse:
    body = await request.body()
    if not hmac.compare_digest(sign(body), request.headers.get("x-webhook-signature", "")):
        FAILURES["callback signature"] += 1
        return JSONResponse({"error": "bad signature"}, status_code=401)
    text = json.loads(body)["message"].removeprefix("echo: ")
    pending = PENDING.pop(text, None)
    if pending is not None:
        LATENCIES.append(time.perf_counter() - pending[1])
        pending[0].set()
    return JSONResponse({"id": text})


async def sender(http: httpx.AsyncClient, deadline: float, counts: list[int]) -> None:
    while time.perf_counter() < deadline:
        n = next(SERIAL)
        text = f"round trip {n}"  # distinct texts: the loop guard rightly stops repeats
        body = json.dumps(
            {"sender_id": f"user-{n % 64}", "sender_name": "bench", "message": text}
        ).encode()
        done = anyio.Event()
        PENDING[text] = (done, time.perf_counter())
        response = await http.post(
            "/channels/webhook/webhook",
            content=body,
            headers={"x-webhook-signature": sign(body), "x-webhook-id": f"b{n}"},
        )
        if response.status_code != 200:
            PENDING.pop(text, None)
            counts[1] += 1
            FAILURES[f"inbound {response.status_code}"] += 1
            continue
        with anyio.move_on_after(10) as scope:
            await done.wait()
        if scope.cancelled_caught:
            PENDING.pop(text, None)
            counts[1] += 1
            FAILURES["no answer within 10 s"] += 1
        else:
            counts[0] += 1


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if values else 0.0


async def main(seconds: float, concurrency: int) -> None:
    logging.disable(logging.WARNING)
    receiver = Starlette(routes=[Route("/hook", callback, methods=["POST"])])
    with tempfile.TemporaryDirectory() as home:
        async with live_server(receiver) as receiver_url:
            (Path(home) / "config.toml").write_text(
                f'[channels.webhook]\ncallback_url = "{receiver_url}/hook"\nagent = "assistant"\n'
            )
            runtime = Runtime.build(
                Path(home),
                environ={"WEBHOOK_SECRET": SECRET.decode()},
                keyring_backend=MemoryKeyring(),
            )
            # fangwire on its own thread and loop, as in production: a client sharing the
            # server's event loop adds tens of milliseconds per request on loopback.
            with threaded_server(create_app(runtime)) as url:
                http = httpx.AsyncClient(base_url=url, timeout=30)
                counts = [0, 0]
                warmup = time.perf_counter() + 1
                async with anyio.create_task_group() as tg:
                    for _ in range(concurrency):
                        tg.start_soon(sender, http, warmup, [0, 0])
                LATENCIES.clear()
                started = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(concurrency):
                        tg.start_soon(sender, http, started + seconds, counts)
                elapsed = time.perf_counter() - started
                await http.aclose()
    print(
        f"webhook round trips (inbound -> echo agent -> signed callback), {concurrency} "
        f"concurrent: {counts[0] / elapsed:,.0f} round trips/s "
        f"({counts[0]:,} ok, {counts[1]:,} failed"
        + (f": {dict(FAILURES)}" if FAILURES else "")
        + ")"
    )
    print(
        f"latency: p50 {percentile(LATENCIES, 50) * 1000:.1f} ms, "
        f"p99 {percentile(LATENCIES, 99) * 1000:.1f} ms, "
        f"max {max(LATENCIES, default=0) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    anyio.run(main, args.seconds, args.concurrency)
