"""The ``syslog`` audit sink: sends each committed entry as an RFC 5424 syslog message.

Enable it in ``config.toml``::

    [audit.sinks.syslog]
    enabled = true
    address = "udp://127.0.0.1:514"   # or "unix:///dev/log"
    facility = "auth"                 # any RFC 5424 facility name; default "auth"

The message is ``<PRI>1 TIMESTAMP HOSTNAME fangwire PROCID audit - <entry JSON>``; denied
outcomes are sent with severity *warning*, others with *info*. Datagrams are capped at
8 KiB (longer entries are sent with their ``details`` replaced by a note, so the chain's
record of them is never lost — only the copy is shortened).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio

from fangwire.audit import AuditEntry, AuditSink
from fangwire.config import AuditConfig
from fangwire.hookspecs import hookimpl

FACILITIES: Mapping[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "local0": 16, "local1": 17,
    "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip
SEVERITY_WARNING = 4
SEVERITY_INFO = 6
MAX_DATAGRAM = 8192


def _settings(audit_config: AuditConfig) -> Mapping[str, Any]:
    value = audit_config.sinks.get("syslog", {})
    return value if isinstance(value, Mapping) else {}


def format_message(entry: AuditEntry, *, facility: int, hostname: str) -> bytes:
    """The RFC 5424 message for ``entry``."""
    severity = SEVERITY_WARNING if entry.outcome in ("denied", "error") else SEVERITY_INFO
    priority = facility * 8 + severity
    header = f"<{priority}>1 {entry.timestamp} {hostname} fangwire {os.getpid()} audit - "
    payload = json.dumps(entry.to_json(), separators=(",", ":"), ensure_ascii=False)
    message = (header + payload).encode("utf-8")
    if len(message) > MAX_DATAGRAM:
        short = {**entry.to_json(), "details": {"truncated": "details too large for syslog"}}
        message = (header + json.dumps(short, separators=(",", ":"))).encode("utf-8")
    return message[:MAX_DATAGRAM]


class SyslogAuditSink(AuditSink):
    sink_id = "syslog"
    description = "Sends each audit entry to syslog (RFC 5424 over UDP or a Unix socket)."

    def is_enabled(self) -> bool:
        return bool(_settings(self.runtime.config.audit).get("enabled", False))

    def _target(self) -> tuple[str, str, int, int]:
        """``(kind, host or socket path, port, facility)``."""
        settings = _settings(self.runtime.config.audit)
        facility_name = str(settings.get("facility", "auth"))
        if facility_name not in FACILITIES:
            raise ValueError(f"audit.sinks.syslog.facility: unknown facility {facility_name!r}")
        address = str(settings.get("address", "unix:///dev/log"))
        parts = urlsplit(address)
        if parts.scheme == "udp" and parts.hostname and parts.port:
            return "udp", parts.hostname, parts.port, FACILITIES[facility_name]
        if parts.scheme == "unix" and parts.path:
            return "unix", parts.path, 0, FACILITIES[facility_name]
        raise ValueError(
            "audit.sinks.syslog.address must look like 'udp://host:port' or 'unix:///dev/log'"
        )

    async def emit(self, entry: AuditEntry) -> None:
        kind, host, port, facility = self._target()
        message = format_message(entry, facility=facility, hostname=socket.gethostname())
        if kind == "udp":
            async with await anyio.create_udp_socket(
                family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                local_host="::" if ":" in host else "0.0.0.0",  # noqa: S104 - ephemeral sender
            ) as udp:
                await udp.sendto(message, host, port)
        else:
            async with await anyio.create_connected_unix_datagram_socket(host) as unix:
                await unix.send(message)


@hookimpl
def register_audit_sinks(register: Callable[[type[AuditSink]], None]) -> None:
    register(SyslogAuditSink)
