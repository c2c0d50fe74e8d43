"""How MCP tools are named for agents and for ``/mcp``: ``mcp_{server}_{tool}``."""

from __future__ import annotations

import re

PREFIX = "mcp_"
_NOT_NAME = re.compile(r"[^a-z0-9_]+")


def normalise(part: str) -> str:
    """Lower-case; every run of characters outside ``[a-z0-9_]`` becomes ``_``."""
    return _NOT_NAME.sub("_", part.lower())


def tool_name(server: str, tool: str) -> str:
    """The exposed name of ``tool`` on ``server``."""
    return f"{PREFIX}{normalise(server)}_{normalise(tool)}"
