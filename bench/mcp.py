"""``tools/call`` latency through fangwire's ``/mcp`` to a proxied stdio MCP server, against
calling the same server directly with the official ``mcp`` SDK.

    python bench/mcp.py [--calls 500] [--mode legacy|auto]

The proxied server is npm ``@modelcontextprotocol/server-everything`` (``echo``) when
``tests/mcp/peers`` is installed, else the small Python SDK server of the tests (``add``).
fangwire runs under uvicorn on 127.0.0.1 (a real socket, as an MCP client would see it), with
a fresh home; each proxied call is authenticated, checked, audited (a durable entry) and
forwarded over the sandboxed stdio connection. Calls are sequential: this measures latency,
not throughput. The overhead is the difference of the medians; the same call from a plain
``httpx2`` client (the SDK's HTTP library, without the SDK) shows how much of it is the SDK
client's own cost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# This folder holds bench/http.py, which would shadow the standard library's http package.
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]

import anyio  # noqa: E402
import httpx  # noqa: E402
import httpx2  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

from fangwire.app import create_app  # noqa: E402
from fangwire.runtime import Runtime  # noqa: E402
from fangwire.secrets import MemoryKeyring  # noqa: E402
from fangwire.testing.live import threaded_server  # noqa: E402

ROOT = Path(_HERE).parent
PEERS_BIN = ROOT / "tests" / "mcp" / "peers" / "node_modules" / ".bin"
EVERYTHING = PEERS_BIN / "mcp-server-everything"
PYTHON_PEER = ROOT / "tests" / "mcp" / "peers" / "python" / "described.py"


def peer(home: Path) -> tuple[str, list[str], dict[str, str], str, dict[str, Any]]:
    """command, args, extra env, tool, arguments."""
    if EVERYTHING.exists():
        return str(EVERYTHING), [], {}, "echo", {"message": "hi"}
    description = home / "description.txt"
    description.write_text("Look a key up.")
    env = {"DESCRIPTION_FILE": str(description)}
    return sys.executable, [str(PYTHON_PEER)], env, "add", {"a": 2, "b": 3}


def summary(label: str, samples: list[float]) -> float:
    ms = sorted(s * 1000 for s in samples)
    p50 = statistics.median(ms)
    p90 = ms[int(len(ms) * 0.9) - 1]
    p99 = ms[int(len(ms) * 0.99) - 1]
    print(f"{label:<34} p50 {p50:7.3f} ms   p90 {p90:7.3f} ms   p99 {p99:7.3f} ms")
    return p50


async def timed_calls(client: Client, tool: str, args: dict[str, Any], calls: int) -> list[float]:
    for _ in range(20):  # warm up
        await client.call_tool(tool, args)
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        result = await client.call_tool(tool, args)
        samples.append(time.perf_counter() - started)
        if result.is_error:
            raise SystemExit(f"{tool} failed: {result.content}")
    return samples


async def main(calls: int, mode: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        command, args, extra_env, tool, arguments = peer(home)
        env = {"PATH": f"{PEERS_BIN}:{os.environ.get('PATH', '')}", "HOME": tmp, **extra_env}
        direct_params = StdioServerParameters(command=command, args=args, env=env)
        async with Client(direct_params, mode=mode) as direct:
            direct_samples = await timed_calls(direct, tool, arguments, calls)
        result: dict[str, list[float]] = {}

        runtime = Runtime.build(home / "fw", environ=env, keyring_backend=MemoryKeyring())
        # The server runs on its own thread and event loop, as it would for a real client.
        with threaded_server(create_app(runtime)) as url:
            await proxy_calls(url, command, args, extra_env, tool, arguments, calls, mode, result)
    proxied_samples, local_samples = result["proxied"], result["local"]
    print(f"tools/call, {calls} sequential calls each, mode={mode}, peer tool {tool!r}")
    direct_p50 = summary("direct (SDK -> stdio server)", direct_samples)
    proxied_p50 = summary("through fangwire /mcp -> stdio", proxied_samples)
    summary("fangwire local tool (/mcp only)", local_samples)
    raw_p50 = summary("proxied, plain httpx2 client", result["raw"])
    print(f"overhead of the proxy at p50: {proxied_p50 - direct_p50:.3f} ms (target < 2 ms)")
    print(f"same, from a plain HTTP client: {raw_p50 - direct_p50:.3f} ms")


async def proxy_calls(
    url: str,
    command: str,
    args: list[str],
    extra_env: dict[str, str],
    tool: str,
    arguments: dict[str, Any],
    calls: int,
    mode: str,
    result: dict[str, list[float]],
) -> None:
    async with httpx.AsyncClient() as http:
        body = {
            "name": "peer",
            "transport": "stdio",
            "command": command,
            "args": args,
            "env": list(extra_env),
        }
        response = await http.post(f"{url}/api/mcp/servers", json=body)
        response.raise_for_status()
        with anyio.fail_after(60):
            while True:
                server = (await http.get(f"{url}/api/mcp/servers/peer")).json()
                if server["status"] == "ready":
                    break
                await anyio.sleep(0.05)
        exposed = f"mcp_peer_{tool}"
        async with Client(f"{url}/mcp", mode=mode) as proxied:
            result["proxied"] = await timed_calls(proxied, exposed, arguments, calls)
            result["local"] = await timed_calls(proxied, "fangwire_list_channels", {}, calls)
        async with httpx2.AsyncClient() as plain:
            result["raw"] = await raw_calls(plain, f"{url}/mcp", exposed, arguments, calls)


async def raw_calls(
    http: Any, url: str, tool: str, arguments: dict[str, Any], calls: int
) -> list[float]:
    """The same proxied call as plain JSON over HTTP: fangwire's cost without the SDK's."""
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"},
        },
    }
    session = (await http.post(url, json=init)).headers["mcp-session-id"]
    headers = {"mcp-session-id": session, "accept": "application/json, text/event-stream"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    body["params"] = {"name": tool, "arguments": arguments}
    samples = []
    for n in range(calls + 20):
        started = time.perf_counter()
        response = await http.post(url, json=body, headers=headers)
        if n >= 20:
            samples.append(time.perf_counter() - started)
        if response.json()["result"].get("isError"):
            raise SystemExit(f"{tool} failed: {response.text}")
    return samples


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--mode", choices=("legacy", "auto"), default="legacy")
    options = parser.parse_args()
    anyio.run(main, options.calls, options.mode)
