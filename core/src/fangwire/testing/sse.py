"""Reading server-sent events in tests."""

from __future__ import annotations

import json
from typing import Any

import httpx


async def read_events(
    response: httpx.Response, want: int, *, comments: list[str] | None = None
) -> list[dict[str, Any]]:
    """Collect ``want`` events (``{"id", "data"}``, data parsed as JSON) from a streaming SSE
    response. Comment lines (heartbeats) go to ``comments`` when given; with ``want == 0``
    the first comment ends the read."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            if comments is not None:
                comments.append(line)
                if want == 0:
                    return events
            continue
        if line.startswith("id:"):
            current["id"] = line[3:].strip()
        elif line.startswith("data:"):
            current["data"] = json.loads(line[5:].strip())
        elif line == "" and current:
            events.append(current)
            current = {}
            if len(events) >= want:
                return events
    return events
