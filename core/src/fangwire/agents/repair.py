"""Session repair: make a conversation history safe to send to a model.

Before each model call the history is normalised: tool results whose tool call is not in the
history are dropped (providers reject orphans), empty messages are removed, and consecutive
messages of the same role are merged (several providers require alternation). Every change is
counted, so ``/api/security`` can show the repairs actually made.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import attrs

from fangwire.models import ChatMessage


@attrs.define
class RepairStats:
    sessions: int = 0
    orphan_tool_results: int = 0
    empty_messages: int = 0
    merged_messages: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)

    def to_json(self) -> dict[str, int]:
        with self._lock:
            return {
                "sessions_checked": self.sessions,
                "orphan_tool_results_dropped": self.orphan_tool_results,
                "empty_messages_dropped": self.empty_messages,
                "messages_merged": self.merged_messages,
            }


def repair_history(
    messages: Sequence[ChatMessage], stats: RepairStats | None = None
) -> list[ChatMessage]:
    """The repaired history (the input is not changed)."""
    orphans = empties = merged = 0
    known_calls = {m.tool_call_id for m in messages if m.role == "assistant" and m.tool_call_id}
    repaired: list[ChatMessage] = []
    for message in messages:
        if message.role == "tool" and message.tool_call_id not in known_calls:
            orphans += 1
            continue
        if not message.content.strip():
            empties += 1
            continue
        previous = repaired[-1] if repaired else None
        if previous is not None and previous.role == message.role and message.role != "tool":
            repaired[-1] = attrs.evolve(
                previous, content=previous.content + "\n\n" + message.content
            )
            merged += 1
            continue
        repaired.append(message)
    if stats is not None:
        with stats._lock:
            stats.sessions += 1
            stats.orphan_tool_results += orphans
            stats.empty_messages += empties
            stats.merged_messages += merged
    return repaired
