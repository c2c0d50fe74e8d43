"""The audit service the runtime owns: the log, its checkpoints and its sinks together."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from fangwire.audit import AuditEntry, AuditSink
from fangwire.auditlog.checkpoints import CheckpointKeeper
from fangwire.auditlog.log import AuditError, AuditLog
from fangwire.auditlog.sinks import SinkDispatcher
from fangwire.auditlog.verify import VerifyReport, verify_log
from fangwire.config import AuditConfig
from fangwire.redaction import Redactor
from fangwire.security.registry import SystemState
from fangwire.store import Store

log = logging.getLogger("fangwire.audit")

#: Upper bound for copying queued entries to sinks at shutdown.
SINK_DRAIN_SECONDS = 5.0


class AuditService:
    """``record()`` is the one function every component calls to audit an action."""

    def __init__(
        self,
        *,
        store: Store,
        home: Path,
        redactor: Redactor,
        config: Callable[[], AuditConfig],
        sinks: Callable[[], Mapping[str, AuditSink]],
    ) -> None:
        self.log = AuditLog(store, redactor=redactor)
        self.checkpoints = CheckpointKeeper(self.log, home=home, config=config)
        self.sinks = SinkDispatcher(sinks, config=config)
        self.log.add_listener(self.checkpoints.on_entry)
        self.log.add_listener(self.sinks.submit)
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    async def record(
        self,
        event_type: str,
        *,
        agent_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        outcome: str = "ok",
    ) -> AuditEntry:
        """Append an entry and return it once durable; :class:`AuditError` if it was not."""
        if not self._open:
            raise AuditError("the audit log is not open")
        return await self.log.record(
            event_type, agent_id=agent_id, details=details, outcome=outcome
        )

    async def verify(self, *, deep: bool = False) -> VerifyReport:
        trusted, problem = await self.checkpoints.trusted()

        def walk(conn: sqlite3.Connection) -> VerifyReport:
            return verify_log(conn, trusted, deep=deep)

        report = await self.log.store.read(walk)
        if problem is not None and report.status == "valid":
            return VerifyReport(
                status="broken",
                chain_length=report.chain_length,
                first_entry=report.first_entry,
                last_entry=report.last_entry,
                tip_hash=report.tip_hash,
                checkpoint_size=report.checkpoint_size,
                broken_at=None,
                reason=problem,
            )
        return report

    @asynccontextmanager
    async def running(self) -> AsyncIterator[AuditService]:
        """Open the log, run checkpoints and sinks; on exit sign a final checkpoint."""
        await self.log.open()
        await self.checkpoints.open()
        self.sinks.open()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.log.run)
                tg.start_soon(self.checkpoints.run)
                tg.start_soon(self.sinks.run)
                self._open = True
                try:
                    yield self
                finally:
                    self._open = False
                    with anyio.CancelScope(shield=True):
                        await self._final_checkpoint()
                        self.sinks.close()
                        with anyio.move_on_after(SINK_DRAIN_SECONDS):
                            await self.sinks.drained.wait()
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Hand back the caller's own error rather than a group wrapping it.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _final_checkpoint(self) -> None:
        try:
            await self.checkpoints.checkpoint()
        except Exception:
            log.exception("could not sign the final audit checkpoint")

    def probe(self) -> SystemState:
        """State of ``merkle_audit_trail`` for the security report."""
        if not self._open:
            return SystemState("inactive", {"reason": "the audit log is not open"})
        details: dict[str, Any] = {
            "checkpoint_every": self.checkpoints.checkpoint_every,
            "sinks": self.sinks.status(),
        }
        if self.checkpoints.last_error:
            details["checkpoint_error"] = self.checkpoints.last_error
            return SystemState("inactive", details)
        return SystemState("active", details)
