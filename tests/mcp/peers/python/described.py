"""A tiny stdio MCP server built with the official Python SDK (a 2026-07-28-capable peer).

Its ``lookup`` tool takes its description from the file named in ``$DESCRIPTION_FILE`` when
the process starts, so a test can change a tool description between two runs.
"""

import os
from pathlib import Path

from mcp.server import MCPServer

server = MCPServer("described")
description = Path(os.environ["DESCRIPTION_FILE"]).read_text(encoding="utf-8").strip()


def lookup(key: str) -> str:
    return f"value of {key}"


lookup.__doc__ = description
server.add_tool(lookup, name="lookup", description=description)


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    server.run("stdio")
