"""HTTP throughput benchmark: fangwire versus a bare Starlette app under the same uvicorn.

Run from the repository root (bounded: about ``2 endpoints x 2 targets x (warmup + duration)``
plus start-up)::

    .venv/bin/python bench/http.py                      # wrk if on PATH, else httpx
    .venv/bin/python bench/http.py --tool httpx --duration 5 --connections 16

Both servers run as separate processes on ``127.0.0.1`` with the uvicorn settings of
``fangwire serve`` (fangwire *is* started with ``fangwire serve``, on a fresh
``FANGWIRE_HOME`` with an API key, ``rate_limit.apply_to_loopback = false`` and
``logging.level = "warning"``). The bare app serves the very bodies fangwire returned for
``GET /api/health`` and ``GET /-/plugins`` as static bytes, without auth or middleware. The
targets are loaded one at a time, each after a short warm-up, and the script prints req/s,
p99 latency and the fangwire/bare ratio per endpoint against the target ratio of 0.8.

This file is named ``http.py``; run as a script its folder would shadow the standard library's
``http`` package, so :func:`main` drops that folder from ``sys.path`` before anything imports
``http``, and every child process is started with ``python -P``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
TARGET_RATIO = 0.8
ENDPOINTS: tuple[str, ...] = ("/api/health", "/-/plugins")
#: The endpoints that need ``Authorization: Bearer <key>`` on fangwire.
AUTHENTICATED: frozenset[str] = frozenset({"/-/plugins"})
STOP_GRACE_SECONDS = 5.0
#: Extra time a load run may take beyond its duration before it is killed.
LOAD_SLACK_SECONDS = 30.0


@dataclass(frozen=True)
class RunResult:
    """One load run against one endpoint of one target."""

    rps: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx responses plus socket/transport errors
    #: httpx only: CPU the busiest load generator process used, in cores (1.0 = saturated).
    gen_cpu: float | None = None


@dataclass(frozen=True)
class Target:
    """A running server under test."""

    name: str
    base_url: str
    proc: subprocess.Popen[bytes]
    log: Path


# -- process handling ----------------------------------------------------------------------


def _python(*args: str) -> list[str]:
    """A command running this interpreter with ``-P`` (no script folder on ``sys.path``)."""
    return [sys.executable, "-P", *args]


def _stop(proc: subprocess.Popen[Any]) -> None:
    """Terminate ``proc``'s whole process group: SIGTERM, then SIGKILL after a grace period."""
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, STOP_GRACE_SECONDS)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def _process_group(
    cmd: Sequence[str], *, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` in a new session (its own process group); always stop the group on exit."""
    with contextlib.ExitStack() as files:  # the child keeps its own copy of the log's fd
        out = files.enter_context(log.open("wb")) if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen(
            list(cmd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        _stop(proc)


def _run_bounded(cmd: Sequence[str], timeout: float) -> str:
    """Run ``cmd`` in its own process group and return its stdout; kill it after ``timeout``."""
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{cmd[0]} did not finish within {timeout:.0f} s") from exc
    finally:
        _stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return out.decode()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 2.0
) -> tuple[int, bytes]:
    """One GET without proxies; ``(status, body)``. ``urllib`` is imported only here, after
    :func:`main` has made sure the standard library's ``http`` is the one found."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (http://127.0.0.1)
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_ready(target: Target, timeout: float) -> None:
    """Poll ``/api/health`` until it answers 200, the process dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            raise RuntimeError(
                f"{target.name} exited with {target.proc.returncode} during start-up:\n"
                + _tail(target.log)
            )
        try:
            status, _ = _get(target.base_url + "/api/health", timeout=1.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(
        f"{target.name} not ready after {timeout:.0f} s ({last}):\n{_tail(target.log)}"
    )


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


# -- servers -------------------------------------------------------------------------------


def _fangwire_home(root: Path, api_key: str) -> Path:
    home = root / "fangwire-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'api_key = "{api_key}"\n\n'
        "[rate_limit]\napply_to_loopback = false\n\n"
        '[logging]\nlevel = "warning"\n'
    )
    return home


def _fangwire_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANGWIRE_")}
    env["FANGWIRE_HOME"] = str(home)
    return env


def serve_bare(port: int, bodies_file: str) -> None:
    """Child process: a bare Starlette app serving static JSON bodies, under the same uvicorn
    settings as ``fangwire serve``."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from fangwire.config import HttpConfig
    from fangwire.http.server import uvicorn_config

    bodies: dict[str, str] = json.loads(Path(bodies_file).read_text())

    def static(body: bytes) -> Any:
        async def endpoint(request: Request) -> Response:
            return Response(body, media_type="application/json")

        return endpoint

    app = Starlette(routes=[Route(path, static(body.encode())) for path, body in bodies.items()])
    # The very settings ``fangwire serve`` uses (request deadlines included); the access log
    # is off as it is for fangwire at the benchmark's "warning" level.
    config = uvicorn_config(app, HttpConfig(), host=HOST, port=port, access_log=False)
    uvicorn.Server(config).run()


# -- load generators -----------------------------------------------------------------------

_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _wrk_ms(value: str, unit: str) -> float:
    return float(value) * _WRK_UNITS[unit]


def parse_wrk(output: str) -> RunResult:
    """Requests/sec, the 99% latency, the request count and errors from ``wrk --latency``."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M)
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    if not (rps and p99 and total):
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(n) for n in sock.groups())
    return RunResult(float(rps.group(1)), _wrk_ms(*p99.groups()), int(total.group(1)), errors)


def run_wrk(
    url: str, headers: dict[str, str], duration: float, args: argparse.Namespace
) -> RunResult:
    threads = max(1, min(args.threads, args.connections))
    cmd = ["wrk", f"-t{threads}", f"-c{args.connections}", f"-d{max(1, round(duration))}s"]
    cmd += ["--latency", "--timeout", "5s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    return parse_wrk(_run_bounded([*cmd, url], duration + LOAD_SLACK_SECONDS))


def run_httpx(
    url: str, headers: dict[str, str], duration: float, args: argparse.Namespace
) -> RunResult:
    """Run the httpx load generator in ``args.load_procs`` child processes and merge them."""
    procs = max(1, min(args.load_procs, args.connections))
    shares = [args.connections // procs + (i < args.connections % procs) for i in range(procs)]
    script = str(Path(__file__).resolve())
    per_proc_cap = str(max(1, args.max_requests // procs))
    with contextlib.ExitStack() as stack:
        children = [
            stack.enter_context(
                _captured(
                    _python(
                        script,
                        "_load",
                        url,
                        json.dumps(headers),
                        str(duration),
                        str(share),
                        per_proc_cap,
                    ),
                    duration + LOAD_SLACK_SECONDS,
                )
            )
            for share in shares
        ]
        results = [json.loads(child.result()) for child in children]
    latencies = sorted(x for r in results for x in r["latencies_ms"])
    elapsed = max(r["elapsed"] for r in results)
    requests = sum(r["requests"] for r in results)
    errors = sum(r["errors"] for r in results)
    gen_cpu = max(r["cpu_seconds"] / r["elapsed"] for r in results if r["elapsed"])
    return RunResult(
        requests / elapsed if elapsed else 0.0,
        _percentile(latencies, 99),
        requests,
        errors,
        gen_cpu,
    )


class _Captured:
    """A running child whose stdout is collected by :meth:`result` within a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        self.proc = proc
        self.deadline = deadline

    def result(self) -> str:
        try:
            out, err = self.proc.communicate(timeout=max(0.1, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError("the httpx load generator did not finish in time") from exc
        if self.proc.returncode != 0:
            raise RuntimeError(f"httpx load generator failed: {err.decode()[-2000:]}")
        return out.decode()


@contextlib.contextmanager
def _captured(cmd: Sequence[str], timeout: float) -> Iterator[_Captured]:
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield _Captured(proc, time.monotonic() + timeout)
    finally:
        _stop(proc)


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return float(sorted_values[int(rank) - 1])


def load_child(
    url: str, headers_json: str, duration: str, connections: str, max_requests: str
) -> None:
    """Child process: ``connections`` keep-alive connections issuing GETs for ``duration``
    seconds (at most ``max_requests`` in all); prints a JSON result on stdout."""
    import asyncio

    result = asyncio.run(
        _load(url, json.loads(headers_json), float(duration), int(connections), int(max_requests))
    )
    print(json.dumps(result))


async def _load(
    url: str, headers: dict[str, str], duration: float, connections: int, max_requests: int
) -> dict[str, Any]:
    import asyncio
    import importlib.util
    import resource

    if importlib.util.find_spec("sniffio") is None:
        # httpcore tries ``import sniffio`` on every request; when it is not installed that is
        # a failed filesystem search each time (~30% of the client's CPU here). A ``None``
        # entry makes the import fail at once, and httpcore then assumes asyncio, as it does.
        sys.modules["sniffio"] = None  # type: ignore[assignment]

    import httpx

    latencies: list[float] = []
    counts = {"requests": 0, "errors": 0}
    # One single-connection client per worker: a shared pool costs more per request.
    clients = [
        httpx.AsyncClient(
            headers=headers, limits=httpx.Limits(max_connections=1), timeout=5.0, trust_env=False
        )
        for _ in range(connections)
    ]
    start = time.perf_counter()
    deadline = start + duration
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = usage.ru_utime + usage.ru_stime

    async def worker(client: httpx.AsyncClient) -> None:
        async with client:
            while time.perf_counter() < deadline and counts["requests"] < max_requests:
                counts["requests"] += 1
                sent = time.perf_counter()
                try:
                    response = await client.get(url)
                except httpx.HTTPError:
                    counts["errors"] += 1
                    await asyncio.sleep(0.01)
                    continue
                latencies.append((time.perf_counter() - sent) * 1e3)
                if response.status_code != 200:
                    counts["errors"] += 1

    await asyncio.gather(*(worker(client) for client in clients))
    elapsed = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = usage.ru_utime + usage.ru_stime - cpu_start
    return {"elapsed": elapsed, "cpu_seconds": cpu_seconds, **counts, "latencies_ms": latencies}


# -- the benchmark -------------------------------------------------------------------------


def _machine_info(tool: str) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    h11 = "httptools" if ver("httptools") != "-" else "h11"
    loop = "uvloop" if ver("uvloop") != "-" else "asyncio"
    tool_version = tool
    if tool == "wrk":
        proc = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
        tool_version = (proc.stdout + proc.stderr).splitlines()[0].split(" [")[0]
    elif tool == "httpx":
        tool_version = f"httpx {ver('httpx')} (async, python load generator)"
    return [
        f"machine:  {platform.machine()} {platform.system()} {platform.release()}, "
        f"nproc={usable} (cpu_count={os.cpu_count()})",
        f"python:   {platform.python_implementation()} {platform.python_version()}",
        f"servers:  uvicorn {ver('uvicorn')} (http={h11}, loop={loop}), "
        f"starlette {ver('starlette')}, fangwire {ver('fangwire')}",
        f"tool:     {tool_version}",
        f"load avg: {_loadavg()} before the run (other processes compete for the CPUs)",
    ]


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "-"


def _measure(
    target: Target, path: str, headers: dict[str, str], args: argparse.Namespace
) -> RunResult:
    runner = run_wrk if args.tool == "wrk" else run_httpx
    url = target.base_url + path
    if args.warmup > 0:
        runner(url, headers, args.warmup, args)
    rounds = [runner(url, headers, args.duration, args) for _ in range(args.rounds)]
    if target.proc.poll() is not None:
        raise RuntimeError(f"{target.name} died under load:\n{_tail(target.log)}")
    gen_cpus = [r.gen_cpu for r in rounds if r.gen_cpu is not None]
    return RunResult(
        statistics.median(r.rps for r in rounds),
        statistics.median(r.p99_ms for r in rounds),
        sum(r.requests for r in rounds),
        sum(r.errors for r in rounds),
        max(gen_cpus) if gen_cpus else None,
    )


#: Above this CPU use (cores) the httpx generator, not the server, probably sets the pace.
GENERATOR_SATURATED = 0.8


def _report(results: dict[tuple[str, str], RunResult]) -> None:
    gen = any(r.gen_cpu is not None for r in results.values())
    print()
    header = (
        f"{'endpoint':<13} {'target':<9} {'req/s':>10} {'p99 ms':>9} {'requests':>9} {'errors':>7}"
    )
    header += f" {'gen cpu':>7}" if gen else ""
    print(header)
    print("-" * len(header))
    ratios: dict[str, float] = {}
    for path in ENDPOINTS:
        for name in ("fangwire", "bare"):
            r = results[(path, name)]
            cells = f"{r.rps:>10.1f} {r.p99_ms:>9.2f} {r.requests:>9} {r.errors:>7}"
            cells += f" {r.gen_cpu:>7.2f}" if r.gen_cpu is not None else ""
            print(f"{path:<13} {name:<9} {cells}")
        bare = results[(path, "bare")].rps
        ratios[path] = results[(path, "fangwire")].rps / bare if bare else 0.0
        print(f"{path:<13} {'ratio':<9} {ratios[path]:>10.2f}   (fangwire/bare req/s)")
        print()
    gen_cpus = [r.gen_cpu for r in results.values() if r.gen_cpu is not None]
    busy = [cpu for cpu in gen_cpus if cpu >= GENERATOR_SATURATED]
    if busy:
        print(
            f"warning: the httpx load generator used up to {max(busy):.2f} CPU: it is likely the "
            "bottleneck, which pulls every ratio towards 1; prefer --tool wrk"
        )
    failing = {p: r for p, r in ratios.items() if r < TARGET_RATIO}
    errors = sum(r.errors for r in results.values())
    note = f"; {errors} error/non-2xx responses, check the figures" if errors else ""
    if failing:
        worst = ", ".join(f"{p} {r:.2f}" for p, r in failing.items())
        print(f"verdict: BELOW target ratio {TARGET_RATIO:.2f} on {worst}{note}")
    else:
        low = min(ratios.values())
        print(f"verdict: OK, every ratio >= {TARGET_RATIO:.2f} (lowest {low:.2f}){note}")


def benchmark(args: argparse.Namespace) -> int:
    """Start both servers, load each endpoint of each in turn, print the table."""
    import secrets

    api_key = f"bench-key-{secrets.token_hex(16)}"
    auth = {"Authorization": f"Bearer {api_key}"}
    runs = len(ENDPOINTS) * 2 * args.rounds
    bound = len(ENDPOINTS) * 2 * (args.warmup + args.duration * args.rounds)
    print("\n".join(_machine_info(args.tool)))
    print(
        f"load:     {args.connections} connections, {args.duration:g} s x {runs} runs "
        f"(+{args.warmup:g} s warm-up each), about {bound:.0f} s of load"
    )
    with (
        tempfile.TemporaryDirectory(prefix="fangwire-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        root = Path(tmp)
        home = _fangwire_home(root, api_key)
        port = _free_port()
        log = root / "fangwire.log"
        proc = stack.enter_context(
            _process_group(
                _python("-m", "fangwire.cli", "serve", "--host", HOST, "--port", str(port)),
                env=_fangwire_env(home),
                log=log,
            )
        )
        fangwire = Target("fangwire", f"http://{HOST}:{port}", proc, log)
        _wait_ready(fangwire, args.startup_timeout)

        bodies: dict[str, str] = {}
        for path in ENDPOINTS:
            status, body = _get(fangwire.base_url + path, auth if path in AUTHENTICATED else None)
            if status != 200:
                raise RuntimeError(f"fangwire {path} answered {status}: {body[:300]!r}")
            bodies[path] = body.decode()
        bodies_file = root / "bodies.json"
        bodies_file.write_text(json.dumps(bodies))

        port = _free_port()
        log = root / "bare.log"
        proc = stack.enter_context(
            _process_group(
                _python(str(Path(__file__).resolve()), "_bare", str(port), str(bodies_file)),
                log=log,
            )
        )
        bare = Target("bare", f"http://{HOST}:{port}", proc, log)
        _wait_ready(bare, args.startup_timeout)
        for path in ENDPOINTS:
            status, body = _get(bare.base_url + path, auth)
            if status != 200 or body.decode() != bodies[path]:
                raise RuntimeError(f"bare {path} does not serve fangwire's body")

        results: dict[tuple[str, str], RunResult] = {}
        for path in ENDPOINTS:
            headers = auth if path in AUTHENTICATED else {}
            for target in (fangwire, bare):
                print(f"running:  {target.name:<8} {path} ...", flush=True)
                results[(path, target.name)] = _measure(target, path, headers, args)
        _report(results)
        print(f"load avg: {_loadavg()} after the run")
        server_log = _tail(fangwire.log, 1000).strip()
        if server_log:
            print(f"\nfangwire log (tail):\n{server_log}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark fangwire against a bare Starlette app on the same uvicorn."
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (32)")
    parser.add_argument(
        "--tool",
        choices=("auto", "wrk", "httpx"),
        default="auto",
        help="load generator: wrk if on PATH (auto), or the httpx fallback",
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target (2)")
    parser.add_argument("--rounds", type=int, default=1, help="measured runs per cell; median (1)")
    parser.add_argument(
        "--load-procs", type=int, default=1, help="httpx load generator processes (1)"
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=2_000_000,
        help="httpx: cap on requests per run (2000000)",
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=30.0, help="seconds to wait for a server (30)"
    )
    return parser


def _drop_script_dir_from_path() -> None:
    """Keep this file's folder off ``sys.path`` so ``import http`` finds the standard library."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != here]


def _on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStack, which stops the servers


def main(argv: Sequence[str] | None = None) -> int:
    _drop_script_dir_from_path()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_bare"]:
        serve_bare(int(argv[1]), argv[2])
        return 0
    if argv[:1] == ["_load"]:
        load_child(*argv[1:6])
        return 0
    args = _parser().parse_args(argv)
    if args.duration <= 0 or args.connections <= 0 or args.rounds <= 0 or args.warmup < 0:
        print("--duration, --connections and --rounds must be positive", file=sys.stderr)
        return 2
    if args.tool == "auto":
        args.tool = "wrk" if shutil.which("wrk") else "httpx"
    elif args.tool == "wrk" and not shutil.which("wrk"):
        print("wrk is not on PATH; use --tool httpx", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    try:
        return benchmark(args)
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
