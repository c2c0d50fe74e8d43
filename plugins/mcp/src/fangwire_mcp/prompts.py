"""Prompts offered at ``/mcp``: local ones registered by plugins, and proxied ones.

A connected server's prompts appear as ``mcp_{server}_{prompt}`` (like its tools) for callers
with the ``user`` role. A :class:`LocalPrompt` renders its messages from string arguments;
a missing required argument is a ``-32602`` error naming it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs

from fangwire.auth import Role

Render = Callable[[Mapping[str, str]], Awaitable[Sequence[Mapping[str, Any]]]]
#: ``complete(argument, value)``: suggestions for a partly typed argument value.
Complete = Callable[[str, str], Awaitable[Sequence[str]]]


@attrs.frozen
class PromptArgument:
    name: str
    description: str = ""
    required: bool = False


@attrs.frozen
class LocalPrompt:
    """A prompt fangwire (or a plugin) serves itself."""

    name: str
    description: str
    arguments: tuple[PromptArgument, ...]
    role: Role
    render: Render
    complete: Complete | None = None

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "arguments": [
                {"name": a.name, "description": a.description, "required": a.required}
                for a in self.arguments
            ],
        }

    def missing(self, arguments: Mapping[str, str]) -> list[str]:
        return [a.name for a in self.arguments if a.required and a.name not in arguments]
