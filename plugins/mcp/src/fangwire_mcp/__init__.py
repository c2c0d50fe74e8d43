"""fangwire's MCP client transports, server manager and ``/mcp`` server."""
