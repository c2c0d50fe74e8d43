"""The ``jsonl`` audit sink: appends each committed entry to a JSON-lines file.

Enable it in ``config.toml``::

    [audit.sinks.jsonl]
    enabled = true
    file = "audit.jsonl"     # relative to the fangwire home; no path outside it

Each line is one entry as the API shows it. A line is written and fsynced before ``emit``
returns, so a sink that reported success holds the entry.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import anyio

from fangwire.audit import AuditEntry, AuditSink
from fangwire.config import AuditConfig
from fangwire.hookspecs import hookimpl
from fangwire.security.paths import UnsafePath, safe_join

DEFAULT_FILE = "audit.jsonl"


def _settings(audit_config: AuditConfig) -> Mapping[str, Any]:
    value = audit_config.sinks.get("jsonl", {})
    return value if isinstance(value, Mapping) else {}


def resolve_sink_path(home: Path, name: object) -> Path:
    """The sink file inside ``home``; refuses anything that would leave it."""
    if not isinstance(name, str) or not name:
        raise ValueError("audit.sinks.jsonl.file must be a non-empty string")
    try:
        return safe_join(home, *PurePosixPath(name).parts)
    except UnsafePath as exc:
        raise ValueError(
            f"audit.sinks.jsonl.file must stay inside the fangwire home: {exc}"
        ) from None


class JsonlAuditSink(AuditSink):
    sink_id = "jsonl"
    description = "Appends each audit entry to a JSON-lines file in the fangwire home."

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self._lock = threading.Lock()
        runtime.security.uses("path_traversal_prevention", "audit sink jsonl")

    def is_enabled(self) -> bool:
        return bool(_settings(self.runtime.config.audit).get("enabled", False))

    @property
    def path(self) -> Path:
        name = _settings(self.runtime.config.audit).get("file", DEFAULT_FILE)
        return resolve_sink_path(self.runtime.home, name)

    async def emit(self, entry: AuditEntry) -> None:
        line = json.dumps(entry.to_json(), separators=(",", ":"), sort_keys=True) + "\n"
        await anyio.to_thread.run_sync(self._append, self.path, line.encode("utf-8"))

    def _append(self, path: Path, data: bytes) -> None:
        with self._lock:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)


@hookimpl
def register_audit_sinks(register: Callable[[type[AuditSink]], None]) -> None:
    register(JsonlAuditSink)
