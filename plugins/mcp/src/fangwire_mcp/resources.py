"""Resources offered at ``/mcp``: local ones registered by plugins, and proxied ones.

A connected server's resources keep their URIs (a URI names a resource wherever it is
listed); a read goes to the first connected server, in name order, that lists the URI or has
a template matching it. Templates are matched at RFC 6570 level 1 (``{name}`` stands for one
non-empty path segment). Subscriptions are not offered: ``/mcp`` has no server-to-client
stream to deliver updates on.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import attrs

from fangwire.auth import Role

Contents = Sequence[Mapping[str, Any]]
ReadStatic = Callable[[], Awaitable[Contents]]
ReadTemplate = Callable[[str, Mapping[str, str]], Awaitable[Contents]]

_VARIABLE = re.compile(r"\{([A-Za-z0-9_]+)\}")


@lru_cache(maxsize=1024)
def template_pattern(template: str) -> re.Pattern[str]:
    """A regex for URIs matching ``template`` (level-1 expressions only)."""
    parts = []
    position = 0
    for match in _VARIABLE.finditer(template):
        parts.append(re.escape(template[position : match.start()]))
        parts.append(f"(?P<{match.group(1)}>[^/?#]+)")
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts))


def match_template(template: str, uri: str) -> dict[str, str] | None:
    """The variables of ``uri`` under ``template``, or ``None`` if it does not match."""
    try:
        found = template_pattern(template).fullmatch(uri)
    except re.error:
        return None
    return found.groupdict() if found else None


@attrs.frozen
class LocalResource:
    uri: str
    name: str
    description: str
    mime_type: str
    role: Role
    read: ReadStatic

    def definition(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "name": self.name,
            "description": self.description,
            "mimeType": self.mime_type,
        }


@attrs.frozen
class LocalResourceTemplate:
    uri_template: str
    name: str
    description: str
    mime_type: str
    role: Role
    read: ReadTemplate

    def definition(self) -> dict[str, Any]:
        return {
            "uriTemplate": self.uri_template,
            "name": self.name,
            "description": self.description,
            "mimeType": self.mime_type,
        }
