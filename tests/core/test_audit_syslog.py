"""The syslog audit sink against a real datagram receiver on 127.0.0.1 and a Unix socket."""

from __future__ import annotations

import json
import socket

import anyio
import pytest

from fangwire.audit import AuditEntry
from fangwire.defaults.audit_syslog import MAX_DATAGRAM, format_message

pytestmark = pytest.mark.anyio


def entry(n: int, outcome: str = "ok", details: dict | None = None) -> AuditEntry:
    return AuditEntry(
        id=n,
        timestamp="2026-11-29T08:00:00.000001Z",
        event_type="auth_failure",
        agent_id=None,
        details=details or {"client": "203.0.113.9"},
        outcome=outcome,
        prev_hash="0" * 64,
        hash="a" * 64,
    )


async def test_udp_delivery_in_rfc5424(make_runtime):
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as receiver:
        port = receiver.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
        runtime = make_runtime(
            f'[audit.sinks.syslog]\nenabled = true\naddress = "udp://127.0.0.1:{port}"\n'
            'facility = "local3"\n'
        )
        sink = runtime.audit_sinks["syslog"]
        assert sink.is_enabled()
        await sink.emit(entry(7, outcome="denied"))
        with anyio.fail_after(5):
            data, _ = await receiver.receive()
    text = data.decode()
    header, _, payload = text.partition(" - ")
    assert header.startswith(f"<{19 * 8 + 4}>1 2026-11-29T08:00:00.000001Z ")
    assert " fangwire " in header and header.endswith(" audit")
    assert json.loads(payload)["id"] == 7


async def test_unix_datagram_delivery(make_runtime, tmp_path):
    path = str(tmp_path / "log.sock")
    async with await anyio.create_unix_datagram_socket(local_path=path) as receiver:
        runtime = make_runtime(f'[audit.sinks.syslog]\nenabled = true\naddress = "unix://{path}"\n')
        await runtime.audit_sinks["syslog"].emit(entry(3))
        with anyio.fail_after(5):
            data, _ = await receiver.receive()
    assert data.startswith(b"<38>1 ")  # auth (4) * 8 + info (6)


async def test_bad_settings_fail_the_delivery_with_a_clear_error(make_runtime):
    runtime = make_runtime('[audit.sinks.syslog]\nenabled = true\naddress = "tcp://x"\n')
    with pytest.raises(ValueError, match="udp://host:port"):
        await runtime.audit_sinks["syslog"].emit(entry(1))
    runtime = make_runtime('[audit.sinks.syslog]\nenabled = true\nfacility = "nope"\n')
    with pytest.raises(ValueError, match="unknown facility"):
        await runtime.audit_sinks["syslog"].emit(entry(1))


def test_oversized_entries_are_shortened_not_dropped():
    big = entry(9, details={"blob": "x" * 20_000})
    message = format_message(big, facility=4, hostname=socket.gethostname())
    assert len(message) <= MAX_DATAGRAM
    assert json.loads(message.decode().partition(" - ")[2])["details"] == {
        "truncated": "details too large for syslog"
    }


def test_disabled_by_default(runtime):
    assert not runtime.audit_sinks["syslog"].is_enabled()
