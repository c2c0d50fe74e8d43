"""fangwire's MCP plugin.

- client transports registered in ``fangwire.transports``: ``stdio`` (:mod:`.stdio`),
  ``http`` (Streamable HTTP) and ``sse`` (legacy HTTP+SSE) (:mod:`.http`), all driven by the
  official ``mcp`` SDK's client;
- the ``mcp`` transport (:mod:`.plugin`): the server manager (:mod:`.manager`,
  :mod:`.connection`), the catalog (:mod:`.catalog`), the ``/api/mcp`` routes (:mod:`.api`)
  and fangwire's own MCP endpoint ``/mcp`` (:mod:`.server`, :mod:`.tools`).
"""
