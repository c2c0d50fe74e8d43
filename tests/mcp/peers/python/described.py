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


@server.tool()
def sandbox_probe(directory: str) -> dict[str, object]:
    """Report this process's pid and whether it may create a file in ``directory``."""
    try:
        Path(directory, f"probe-{os.getpid()}").write_text("x")
        writable = True
    except OSError:
        writable = False
    return {"pid": os.getpid(), "writable": writable}


if __name__ == "__main__":
    server.run("stdio")
