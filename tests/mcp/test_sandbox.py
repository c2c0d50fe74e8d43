"""stdio MCP servers under bubblewrap (``[mcp] bubblewrap``), seen from inside the server."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from fangwire.runtime import Runtime
from fangwire.testing.fixtures import MakeRuntime, serve_client
from fangwire_mcp.api import manager_of
from tests.mcp.conftest import peer_environ

TIMEOUT = 60
PEER = Path(__file__).parent / "peers" / "python" / "described.py"


def build(make_runtime: MakeRuntime, tmp_path: Path, mcp: str) -> Runtime:
    tmp_path.mkdir(exist_ok=True)
    description = tmp_path / "description.txt"
    description.write_text("Look a key up.")
    environ = {**peer_environ(tmp_path / "home"), "DESCRIPTION_FILE": str(description)}
    (tmp_path / "home").mkdir()
    return make_runtime(f"[mcp]\n{mcp}\n", environ=environ)


BODY = {
    "name": "boxed",
    "transport": "stdio",
    "command": sys.executable,
    "args": [str(PEER)],
    "env": ["DESCRIPTION_FILE"],
}


async def probe(runtime: Runtime, directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    async with serve_client(runtime) as http:
        with anyio.fail_after(TIMEOUT):
            assert (await http.post("/api/mcp/servers", json=BODY)).status_code == 201
            while True:
                server = (await http.get("/api/mcp/servers/boxed")).json()
                if server["status"] != "connecting":
                    break
                await anyio.sleep(0.05)
            assert server["status"] == "ready", server["status"]
            result = await manager_of(runtime).call(
                "mcp_boxed_sandbox_probe", {"directory": str(directory)}, actor="test"
            )
            security = (await http.get("/api/security")).json()
    assert result.structured_content is not None
    return result.structured_content, security["details"]["subprocess_sandbox"]


@pytest.fixture
def _bwrap_installed() -> None:
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is not installed: apt-get install bubblewrap (.ci/run does)")


needs_bwrap = pytest.mark.usefixtures("_bwrap_installed")


@needs_bwrap
@pytest.mark.anyio
async def test_server_runs_in_its_own_pid_namespace_with_a_read_only_system(
    make_runtime: MakeRuntime, tmp_path: Path
) -> None:
    runtime = build(make_runtime, tmp_path, 'bubblewrap = "on"')
    inside, details = await probe(runtime, Path("/usr"))
    assert inside["pid"] < 10  # a fresh PID namespace
    assert inside["writable"] is False
    assert details["bubblewrap"] == "in use"


@needs_bwrap
@pytest.mark.anyio
async def test_writable_paths_are_writable(make_runtime: MakeRuntime, tmp_path: Path) -> None:
    shared = tmp_path.parent / f"{tmp_path.name}-shared"
    shared.mkdir()
    config = f'bubblewrap = "on"\nwritable_paths = ["{shared}"]'
    runtime = build(make_runtime, tmp_path, config)
    inside, _ = await probe(runtime, shared)
    assert inside["writable"] is True


@pytest.mark.anyio
async def test_bubblewrap_off(make_runtime: MakeRuntime, tmp_path: Path) -> None:
    runtime = build(make_runtime, tmp_path, 'bubblewrap = "off"')
    inside, details = await probe(runtime, tmp_path)
    assert inside["pid"] > 10
    assert inside["writable"] is True
    assert details["bubblewrap"] == "off"


@pytest.mark.anyio
async def test_bad_setting_is_reported(make_runtime: MakeRuntime, tmp_path: Path) -> None:
    runtime = build(make_runtime, tmp_path, 'bubblewrap = "sometimes"')
    async with serve_client(runtime) as http:
        with anyio.fail_after(TIMEOUT):
            await http.post("/api/mcp/servers", json=BODY)
            while True:
                server = (await http.get("/api/mcp/servers/boxed")).json()
                if server["status"].startswith("error"):
                    break
                await anyio.sleep(0.05)
    assert "mcp.bubblewrap" in server["status"]
