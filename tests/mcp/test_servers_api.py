"""``/api/mcp/servers``: adding real MCP servers (npm server-everything and
server-filesystem over stdio), their tools, health, reconnect and removal."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from fangwire.runtime import Runtime
from fangwire.testing.fixtures import serve_client
from fangwire_mcp import connection
from fangwire_mcp.api import manager_of
from tests.mcp.conftest import EVERYTHING, FILESYSTEM, require_peers

TIMEOUT = 60


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


def everything_body(name: str = "everything") -> dict[str, Any]:
    return {"name": name, "transport": {"type": "stdio", "command": str(EVERYTHING), "args": []}}


@pytest.mark.anyio
async def test_add_stdio_server_lists_tools_and_persists(
    client: httpx.AsyncClient, mcp_runtime: Runtime
) -> None:
    require_peers()
    with anyio.fail_after(TIMEOUT):
        response = await client.post("/api/mcp/servers", json=everything_body())
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "added"
        server = await wait_status(client, "everything", "ready")
    names = {t["name"] for t in server["tools"]}
    assert {"echo", "get-sum", "get-env"} <= names
    assert server["connected"] is True
    assert server["protocol_version"] == "2025-11-25"
    assert {t["exposed_name"] for t in server["tools"]} >= {"mcp_everything_get_sum"}
    listing = (await client.get("/api/mcp/servers")).json()
    assert listing["total"] == 1
    assert listing["total_connected"] == 1
    assert [c["name"] for c in listing["connected"]] == ["everything"]
    assert listing["connected"][0]["tools_count"] == len(names)
    assert listing["servers"][0]["name"] == "everything"
    assert listing["servers"][0]["command"] == str(EVERYTHING)
    table = mcp_runtime.config_file.load().mcp["servers"]["everything"]
    assert table["transport"] == "stdio" and table["command"] == str(EVERYTHING)
    health = (await client.get("/api/mcp/health")).json()
    assert health["count"] == 1
    assert health["health"][0]["status"] == "ready"
    assert health["health"][0]["tool_count"] == len(names)


@pytest.mark.anyio
async def test_flat_body_duplicate_and_bad_bodies(client: httpx.AsyncClient) -> None:
    require_peers()
    flat = {"name": "ev", "transport": "stdio", "command": str(EVERYTHING), "args": []}
    with anyio.fail_after(TIMEOUT):
        assert (await client.post("/api/mcp/servers", json=flat)).status_code == 201
        again = await client.post("/api/mcp/servers", json=flat)
        assert again.status_code == 409
        cases: list[tuple[Any, str]] = [
            ({"transport": "stdio", "command": "x"}, "name"),
            ({"name": "a", "transport": "carrier-pigeon", "command": "x"}, "transport"),
            ({"name": "a", "transport": "stdio"}, "command"),
            ({"name": "a", "transport": "http"}, "url"),
            ({"name": "a", "transport": "http", "url": "ftp://x"}, "url"),
            ({"name": "bad name!", "transport": "stdio", "command": "x"}, "name"),
            ({"name": "a", "transport": "stdio", "command": "x", "surprise": 1}, "surprise"),
            ({"name": "a", "transport": {"type": "stdio", "command": 3}}, "transport.command"),
            ([1, 2], "JSON object"),
        ]
        for body, field in cases:
            response = await client.post("/api/mcp/servers", json=body)
            assert response.status_code == 400, (body, response.text)
            assert field in response.json()["error"]["message"], (body, response.text)
        bad_json = await client.post(
            "/api/mcp/servers", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert bad_json.status_code == 400


@pytest.mark.anyio
async def test_catalog_install_needs_credentials_and_stores_them_in_keyring(
    client: httpx.AsyncClient, mcp_runtime: Runtime
) -> None:
    with anyio.fail_after(TIMEOUT):
        unknown = await client.post("/api/mcp/servers", json={"template_id": "no-such"})
        assert unknown.status_code == 404
        missing = await client.post(
            "/api/mcp/servers", json={"template_id": "github", "credentials": {}}
        )
        assert missing.status_code == 400
        assert "GITHUB_PERSONAL_ACCESS_TOKEN" in missing.json()["error"]["message"]
        token = "ghp_secret-value-0123456789"
        added = await client.post(
            "/api/mcp/servers",
            json={
                "template_id": "github",
                "credentials": {"GITHUB_PERSONAL_ACCESS_TOKEN": token},
            },
        )
        assert added.status_code == 201, added.text
        assert added.json()["template_id"] == "github"
        server = (await client.get("/api/mcp/servers/github")).json()
        assert server["template_id"] == "github"
        assert server["env"] == ["GITHUB_PERSONAL_ACCESS_TOKEN"]
        secret = await mcp_runtime.secrets.get("mcp/github/env/GITHUB_PERSONAL_ACCESS_TOKEN")
        assert secret is not None and secret.reveal() == token
        assert token not in mcp_runtime.config_file.path.read_text()
        catalog = (await client.get("/api/mcp/catalog")).json()
        github = next(e for e in catalog["entries"] if e["id"] == "github")
        assert github["installed"] is True
        removed = await client.delete("/api/mcp/servers/github")
        assert removed.status_code == 200
        gone = await mcp_runtime.secrets.get("mcp/github/env/GITHUB_PERSONAL_ACCESS_TOKEN")
        assert gone is None
        assert (await client.get("/api/mcp/servers/github")).status_code == 404
        assert "github" not in mcp_runtime.config_file.load().mcp.get("servers", {})


@pytest.mark.anyio
async def test_catalog_has_the_33_templates(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/mcp/catalog")).json()
    assert body["count"] == 33
    ids = {e["id"] for e in body["entries"]}
    assert {"github", "filesystem", "slack", "time", "teams-mcp", "sqlite-mcp"} <= ids
    slack = (await client.get("/api/mcp/catalog/slack")).json()
    assert [e["name"] for e in slack["required_env"]] == ["SLACK_BOT_TOKEN", "SLACK_TEAM_ID"]
    assert slack["has_oauth"] is True
    assert slack["category"] == "Communication"
    assert slack["health_check"] == {"interval_secs": 60, "unhealthy_threshold": 3}
    assert (await client.get("/api/mcp/catalog/nope")).status_code == 404


@pytest.mark.anyio
async def test_killed_child_is_reported_and_reconnected(client: httpx.AsyncClient) -> None:
    require_peers()
    with anyio.fail_after(TIMEOUT):
        await client.post("/api/mcp/servers", json=everything_body())
        await wait_status(client, "everything", "ready")
        manager = manager_of(client._transport.app.state.runtime)  # type: ignore[attr-defined]
        transport = manager.connections["everything"].transport
        assert transport is not None
        stdio_transport: Any = transport
        (conn,) = stdio_transport._open
        first_pid = conn.pid
        os.killpg(first_pid, signal.SIGKILL)
        # The exit is noticed at once (no health-check wait), then a new child starts.
        while True:
            health = (await client.get("/api/mcp/health")).json()["health"][0]
            if health["reconnect_attempts"] >= 1 and health["status"] == "ready":
                break
            await anyio.sleep(0.05)
        assert health["consecutive_failures"] == 0
        assert health["last_error"].startswith(f"server exited with code {-signal.SIGKILL}")
        (new_conn,) = stdio_transport._open
        assert new_conn.pid != first_pid
        forced = await client.post("/api/mcp/servers/everything/reconnect")
        assert forced.status_code == 200, forced.text
        assert forced.json()["status"] == "connected"
        assert forced.json()["tool_count"] >= 13
        assert (await client.post("/api/mcp/servers/nope/reconnect")).status_code == 404


@pytest.mark.anyio
async def test_failing_command_reports_error_with_backoff(client: httpx.AsyncClient) -> None:
    body = {"name": "broken", "transport": "stdio", "command": "/nonexistent/mcp-server"}
    with anyio.fail_after(TIMEOUT):
        assert (await client.post("/api/mcp/servers", json=body)).status_code == 201
        server = await wait_status(client, "broken", "error")
        health = (await client.get("/api/mcp/health")).json()["health"][0]
        reconnect = await client.post("/api/mcp/servers/broken/reconnect")
    # Unhealthy only after unhealthy_threshold (3) consecutive failed attempts.
    assert health["consecutive_failures"] >= 3
    assert health["reconnecting"] is False
    assert "server exited with code" in health["last_error"]
    assert "nonexistent" in health["last_error"]
    assert server["connected"] is False
    assert reconnect.status_code == 502
    assert "broken" in reconnect.json()["error"]["message"]


@pytest.mark.anyio
async def test_filesystem_server_and_put_replace(client: httpx.AsyncClient, tmp_path: Path) -> None:
    require_peers()
    shared = tmp_path / "shared"
    shared.mkdir()
    body = {
        "name": "files",
        "transport": "stdio",
        "command": str(FILESYSTEM),
        "args": [str(shared)],
    }
    with anyio.fail_after(TIMEOUT):
        assert (await client.post("/api/mcp/servers", json=body)).status_code == 201
        server = await wait_status(client, "files", "ready")
        assert "list_allowed_directories" in {t["name"] for t in server["tools"]}
        replaced = await client.put(
            "/api/mcp/servers/files", json={**everything_body(), "name": "ignored"}
        )
        assert replaced.status_code == 200, replaced.text
        server = await wait_status(client, "files", "ready")
        while "echo" not in {t["name"] for t in server["tools"]}:
            await anyio.sleep(0.05)
            server = (await client.get("/api/mcp/servers/files")).json()
        assert server["name"] == "files"
        assert (
            await client.put("/api/mcp/servers/nope", json=everything_body())
        ).status_code == 404


@pytest.mark.anyio
async def test_call_in_flight_when_the_child_dies(
    client: httpx.AsyncClient, mcp_runtime: Runtime
) -> None:
    require_peers()
    with anyio.fail_after(TIMEOUT):
        await client.post("/api/mcp/servers", json=everything_body())
        await wait_status(client, "everything", "ready")
        manager = manager_of(mcp_runtime)
        stdio_transport: Any = manager.connections["everything"].transport
        (conn,) = stdio_transport._open
        outcome: list[object] = []

        async def slow_call() -> None:
            try:
                outcome.append(
                    await manager.call(
                        "mcp_everything_trigger_long_running_operation",
                        {"duration": 20, "steps": 2},
                        actor="test",
                    )
                )
            except Exception as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow_call)
            await anyio.sleep(0.5)
            os.killpg(conn.pid, signal.SIGKILL)
    (result,) = outcome
    assert isinstance(result, connection.ServerUnavailable), repr(result)
    assert "connection lost" in str(result)
    entries, _ = await mcp_runtime.audit.log.recent(50)
    calls = [e for e in entries if e.event_type == "mcp_tool_call"]
    assert calls[0].outcome == "error"
