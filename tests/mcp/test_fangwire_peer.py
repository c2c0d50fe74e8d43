"""One fangwire as the MCP client of another fangwire's ``/mcp`` (Streamable HTTP, the
2026-07-28 era), with the upstream's API key kept as a header secret."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from fangwire.app import create_app
from fangwire.runtime import Runtime
from fangwire.secrets import MemoryKeyring
from fangwire.testing.fixtures import MakeRuntime, serve_client
from fangwire.testing.live import live_server
from fangwire_mcp import connection
from fangwire_mcp.api import manager_of

TIMEOUT = 60
KEY = "upstream-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "BACKOFF_BASE", 0.05)
    monkeypatch.setattr(connection, "BACKOFF_CAP", 0.2)


@pytest.mark.anyio
async def test_fangwire_proxies_another_fangwire(make_runtime: MakeRuntime, tmp_path: Path) -> None:
    upstream_home = tmp_path / "upstream"
    upstream_home.mkdir()
    (upstream_home / "config.toml").write_text(f'api_key = "{KEY}"\n')
    upstream = Runtime.build(upstream_home, environ={}, keyring_backend=MemoryKeyring())
    downstream = make_runtime('[mcp]\nallow_hosts = ["127.0.0.1"]\n', environ={})
    with anyio.fail_after(TIMEOUT):
        async with live_server(create_app(upstream)) as url, serve_client(downstream) as http:
            body = {
                "name": "up",
                "transport": {"type": "http", "url": f"{url}/mcp"},
                "headers": [f"Authorization: Bearer {KEY}"],
            }
            assert (await http.post("/api/mcp/servers", json=body)).status_code == 201
            while True:
                server = (await http.get("/api/mcp/servers/up")).json()
                if server["status"] != "connecting":
                    break
                await anyio.sleep(0.05)
            assert server["status"] == "ready", server["status"]
            assert server["protocol_version"] == "2026-07-28"
            assert server["headers"] == ["Authorization"]
            assert KEY not in downstream.config_file.path.read_text()
            result = await manager_of(downstream).call(
                "mcp_up_fangwire_list_agents", {}, actor="test"
            )
            assert result.is_error is False
            assert result.structured_content is not None
            assert result.structured_content["total"] >= 1
            # Without the key the upstream refuses, and the status says so.
            unauthenticated = {"name": "nokey", "transport": "http", "url": f"{url}/mcp"}
            assert (await http.post("/api/mcp/servers", json=unauthenticated)).status_code == 201
            while True:
                refused = (await http.get("/api/mcp/servers/nokey")).json()
                if refused["status"].startswith("error"):
                    break
                await anyio.sleep(0.05)
    assert refused["connected"] is False
