"""Audit entries and the audit sink interface.

The tamper-evident chain is kept by the core store; sinks registered through
``register_audit_sinks`` receive a copy of each committed entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    from fangwire.runtime import Runtime


@attrs.frozen
class AuditEntry:
    """One committed audit entry, as the API shows it.

    ``details`` never holds secret values: callers pass identifiers, and the core scrubs known
    secrets before an entry is committed.
    """

    id: int
    timestamp: str
    event_type: str
    agent_id: str | None
    details: Mapping[str, Any]
    outcome: str
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


class AuditSink:
    """Base class for sinks registered through ``register_audit_sinks``."""

    sink_id: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def is_enabled(self) -> bool:
        """Whether the operator turned this sink on (in ``[audit.sinks.<id>]``)."""
        return False

    async def emit(self, entry: AuditEntry) -> None:
        """Deliver one entry. Raise on failure; the core retries and reports, and the chain is
        never affected."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release resources; called once at shutdown."""
