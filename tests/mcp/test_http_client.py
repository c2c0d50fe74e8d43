"""fangwire's MCP client over Streamable HTTP and legacy HTTP+SSE, against npm
server-everything, and the outbound guard in front of those URLs."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest

from fangwire.runtime import Runtime
from fangwire.testing.fixtures import MakeRuntime, serve_client
from fangwire_mcp import connection
from tests.mcp.conftest import EVERYTHING, peer_environ, require_peers

TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def everything_http(mode: str) -> Iterator[int]:
    require_peers()
    port = free_port()
    env = {**peer_environ(EVERYTHING.parent), "PORT": str(port)}
    env["PATH"] = f"{EVERYTHING.parent}:{os.environ.get('PATH', '')}"
    process = subprocess.Popen(
        [str(EVERYTHING), mode],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"server-everything {mode} exited with {process.returncode}")

                time.sleep(0.05)
        else:
            pytest.fail(f"server-everything {mode} did not listen")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def http_port() -> Iterator[int]:
    yield from everything_http("streamableHttp")


@pytest.fixture
def sse_port() -> Iterator[int]:
    yield from everything_http("sse")


@pytest.fixture
async def client(mcp_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_client(mcp_runtime) as http:
        yield http


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "BACKOFF_BASE", 0.05)
    monkeypatch.setattr(connection, "BACKOFF_CAP", 0.2)


async def wait_status(http: httpx.AsyncClient, name: str, status: str) -> dict[str, Any]:
    while True:
        body = (await http.get(f"/api/mcp/servers/{name}")).json()
        if body["status"].startswith(status):
            return body
        await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_streamable_http_server(client: httpx.AsyncClient, http_port: int) -> None:
    url = f"http://127.0.0.1:{http_port}/mcp"
    body = {"name": "remote", "transport": {"type": "http", "url": url}}
    with anyio.fail_after(TIMEOUT):
        assert (await client.post("/api/mcp/servers", json=body)).status_code == 201
        server = await wait_status(client, "remote", "ready")
    assert server["transport"] == "http"
    assert server["transport_in_use"] == "http"
    assert server["url"] == url
    assert server["protocol_version"] == "2025-11-25"
    assert "echo" in {t["name"] for t in server["tools"]}


@pytest.mark.anyio
async def test_legacy_sse_server(client: httpx.AsyncClient, sse_port: int) -> None:
    url = f"http://127.0.0.1:{sse_port}/sse"
    body = {"name": "old", "transport": "sse", "url": url}
    with anyio.fail_after(TIMEOUT):
        assert (await client.post("/api/mcp/servers", json=body)).status_code == 201
        server = await wait_status(client, "old", "ready")
    assert "get-sum" in {t["name"] for t in server["tools"]}


@pytest.mark.anyio
async def test_http_url_of_a_legacy_sse_server_falls_back(
    client: httpx.AsyncClient, sse_port: int
) -> None:
    url = f"http://127.0.0.1:{sse_port}/sse"
    body = {"name": "compat", "transport": "http", "url": url}
    with anyio.fail_after(TIMEOUT):
        assert (await client.post("/api/mcp/servers", json=body)).status_code == 201
        server = await wait_status(client, "compat", "ready")
    assert server["transport"] == "http"
    assert server["transport_in_use"] == "sse"
    assert "echo" in {t["name"] for t in server["tools"]}


@pytest.mark.anyio
async def test_outbound_guard_refuses_loopback_unless_allowed(
    make_runtime: MakeRuntime, http_port: int, tmp_path: Any
) -> None:
    runtime = make_runtime("", environ=peer_environ(tmp_path))
    url = f"http://127.0.0.1:{http_port}/mcp"
    async with serve_client(runtime) as http:
        with anyio.fail_after(TIMEOUT):
            body = {"name": "sneaky", "transport": "http", "url": url}
            assert (await http.post("/api/mcp/servers", json=body)).status_code == 201
            server = await wait_status(http, "sneaky", "error")
            metadata = {"name": "meta", "transport": "http", "url": "http://169.254.169.254/mcp"}
            assert (await http.post("/api/mcp/servers", json=metadata)).status_code == 201
            meta = await wait_status(http, "meta", "error")
    assert "outbound guard" in server["status"] and "loopback" in server["status"]
    assert "outbound guard" in meta["status"] and "metadata" in meta["status"]
