"""Registers the legacy HTTP+SSE transport (implemented in :mod:`fangwire_mcp.http`)."""

from __future__ import annotations

from typing import Any

from fangwire.hookspecs import hookimpl
from fangwire_mcp.http import SseTransport

__all__ = ["SseTransport", "register_transports"]


@hookimpl
def register_transports(register: Any) -> None:
    register(SseTransport)
