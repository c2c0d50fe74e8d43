"""Time from starting ``fangwire serve`` to its first answered ``GET /api/health``.

Runs the daemon several times in a fresh home on 127.0.0.1 and prints each time and the median,
plus how many plugins were discovered. Bounded: each start gets at most 30 seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

# This folder holds bench/http.py, which would shadow the standard library's http package
# (imported by httpx) when this file runs as a script.
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]

import httpx  # noqa: E402

RUNS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_start(home: str) -> tuple[float, int]:
    port = free_port()
    env = {**os.environ, "FANGWIRE_HOME": home}
    env.pop("FANGWIRE_API_KEY", None)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "fangwire", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with httpx.Client(timeout=1) as client:
            while time.perf_counter() - started < 30:
                try:
                    if client.get(f"http://127.0.0.1:{port}/api/health").status_code == 200:
                        elapsed = time.perf_counter() - started
                        plugins = client.get(f"http://127.0.0.1:{port}/-/plugins").json()
                        return elapsed, int(plugins["total"])
                except httpx.TransportError:
                    time.sleep(0.005)
        raise RuntimeError("fangwire did not answer within 30 s")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        results = [one_start(home) for _ in range(RUNS)]
    times = [t for t, _ in results]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {results[0][1]} plugins")
    print("start to first /api/health: " + ", ".join(f"{t * 1000:.0f} ms" for t in times))
    print(f"median {statistics.median(times) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
