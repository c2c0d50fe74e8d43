"""The tamper-evident audit log: encoding, durability, proofs, checkpoints, tampering."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from typing import ClassVar

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fangwire.audit import AuditEntry, AuditSink
from fangwire.auditlog.checkpoint import Checkpoint, CheckpointSigner, verify_note
from fangwire.auditlog.encoding import canonical_json
from fangwire.auditlog.log import AuditError
from fangwire.auditlog.merkle import leaf_hash, verify_consistency, verify_inclusion
from fangwire.hookspecs import hookimpl
from fangwire.plugins import create_plugin_manager
from fangwire.testing.fixtures import serve_client

pytestmark = pytest.mark.anyio

GENESIS = "0" * 64
NO_AGENT = "[agents]\ndefault_agent = false\n"


@pytest.fixture
def runtime(make_runtime):
    """A runtime whose log starts empty (no default agent spawned and audited)."""
    return make_runtime(NO_AGENT)


async def fill(runtime, n: int) -> list[AuditEntry]:
    return [
        await runtime.audit.record("test_event", agent_id=f"agent-{i % 3}", details={"n": i})
        for i in range(n)
    ]


def db(runtime) -> sqlite3.Connection:
    conn = sqlite3.connect(runtime.home / "fangwire.db")
    conn.execute("DROP TRIGGER IF EXISTS audit_entries_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_entries_no_delete")
    return conn


async def test_first_entry_and_documented_hash(runtime):
    async with runtime.serving():
        entry = await runtime.audit.record(
            "agent_spawned", agent_id="a1", details={"name": "x", "ünï": 1}
        )
    assert (entry.id, entry.prev_hash, entry.outcome) == (1, GENESIS, "ok")
    body = canonical_json(
        {
            "agent_id": "a1",
            "details": {"name": "x", "ünï": 1},
            "event_type": "agent_spawned",
            "id": 1,
            "outcome": "ok",
            "timestamp": entry.timestamp,
        }
    )
    assert body.startswith(b'{"agent_id":"a1","details":{"name":"x","\xc3\xbcn\xc3\xaf":1}')
    assert entry.hash == hashlib.sha256(bytes(32) + body).hexdigest()
    assert entry.timestamp.endswith("Z")


async def test_entries_chain_and_survive_restart(make_runtime):
    runtime = make_runtime(NO_AGENT)
    async with runtime.serving():
        first = await fill(runtime, 5)
    again = make_runtime(NO_AGENT)
    async with again.serving():
        more = await fill(again, 2)
        entries, total = await again.audit.log.recent(10)
        report = await again.audit.verify(deep=True)
    assert more[0].prev_hash == first[-1].hash
    assert total == 7
    assert [e.id for e in entries] == [7, 6, 5, 4, 3, 2, 1]
    assert report.status == "valid"
    assert report.chain_length == 7


async def test_concurrent_appends_never_fork(runtime):
    async with runtime.serving():
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(lambda i=i: runtime.audit.record("burst", details={"i": i}))
        report = await runtime.audit.verify(deep=True)
        entries, total = await runtime.audit.log.recent(500)
    assert total == 200
    assert sorted(e.id for e in entries) == list(range(1, 201))
    assert report.status == "valid"


async def test_secrets_are_masked_in_details(runtime):
    runtime.redactor.add("sk-live-abcdef123456")
    async with runtime.serving():
        entry = await runtime.audit.record(
            "channel_configured", details={"note": "token sk-live-abcdef123456", "token": "x1"}
        )
    assert "sk-live-abcdef123456" not in json.dumps(entry.to_json())
    assert entry.details["token"] == "***"


async def test_a_failed_write_fails_the_call(runtime):
    async with runtime.serving():
        await runtime.audit.record("before")
        with pytest.raises(AuditError):
            await runtime.audit.record("bad", details={"x": float("nan")})
        entry = await runtime.audit.record("after")
    assert entry.id == 2


async def test_record_outside_serving_fails(runtime):
    with pytest.raises(AuditError, match="not open"):
        await runtime.audit.record("too_early")


async def test_proofs_verify_against_signed_checkpoints(runtime):
    async with runtime.serving():
        await fill(runtime, 13)
        first = await runtime.audit.checkpoints.checkpoint()
        await fill(runtime, 21)
        second = await runtime.audit.checkpoints.checkpoint()
        vkey = runtime.audit.checkpoints.verifier_key
        for entry_id in (1, 7, 13):
            proof = await runtime.audit.log.inclusion(entry_id, 13)
            assert proof["leaf_hash"] == leaf_hash(bytes.fromhex(proof["entry_hash"])).hex()
            assert verify_inclusion(
                entry_id - 1,
                13,
                leaf_hash(bytes.fromhex(proof["entry_hash"])),
                [bytes.fromhex(p) for p in proof["proof"]],
                bytes.fromhex(first["root"]),
            )
        consistency = await runtime.audit.log.consistency(13, 34)
    old = verify_note(first["note"], vkey)
    new = verify_note(second["note"], vkey)
    assert (old.size, new.size) == (13, 34)
    assert verify_consistency(
        13, 34, old.root, new.root, [bytes.fromhex(p) for p in consistency["proof"]]
    )
    assert not verify_consistency(
        13, 34, new.root, old.root, [bytes.fromhex(p) for p in consistency["proof"]]
    )


async def test_shutdown_signs_a_final_checkpoint_and_writes_the_anchor(runtime):
    async with runtime.serving():
        await fill(runtime, 3)
    anchor = (runtime.home / "audit.anchor").read_text()
    assert "\n3\n" in anchor
    assert oct((runtime.home / "audit-signing.key").stat().st_mode & 0o777) == "0o600"


async def test_checkpoints_follow_the_entry_count(make_runtime):
    runtime = make_runtime(
        NO_AGENT + "[audit]\ncheckpoint_every = 5\ncheckpoint_interval_seconds = 60\n"
    )
    async with runtime.serving():
        await fill(runtime, 12)
        with anyio.fail_after(10):
            while True:
                rows = await runtime.store.fetch_all("SELECT size FROM audit_checkpoints")
                if max((r["size"] for r in rows), default=0) >= 10:
                    break
                await anyio.sleep(0.02)


# -- tampering ------------------------------------------------------------------------------


async def tampered_report(make_runtime, tamper) -> dict:
    runtime = make_runtime(NO_AGENT)
    async with runtime.serving():
        await fill(runtime, 10)
        await runtime.audit.checkpoints.checkpoint()
        await fill(runtime, 2)  # two entries past the last checkpoint
    with db(runtime) as conn:
        tamper(conn, runtime)
    again = make_runtime(NO_AGENT)
    async with again.serving():
        return (await again.audit.verify()).to_json()


def rewrite_from(conn, runtime, start: int) -> None:
    rows = conn.execute(
        "SELECT id, body FROM audit_entries WHERE id >= ? ORDER BY id", (start,)
    ).fetchall()
    prev = conn.execute("SELECT hash FROM audit_entries WHERE id = ?", (start - 1,)).fetchone()[0]
    conn.execute("DELETE FROM audit_entries WHERE id >= ?", (start,))
    for entry_id, body in rows:
        fields = json.loads(body)
        if entry_id == start:
            fields["details"] = {"n": "forged"}
        body = canonical_json(fields)
        digest = hashlib.sha256(prev + body).digest()
        conn.execute(
            "INSERT INTO audit_entries (id, body, hash, prev_hash, event_type, agent_id, timestamp)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entry_id,
                body,
                digest,
                prev,
                fields["event_type"],
                fields["agent_id"],
                fields["timestamp"],
            ),
        )
        prev = digest


@pytest.mark.parametrize(
    ("name", "tamper", "broken_at", "reason"),
    [
        (
            "modified row",
            lambda c, r: c.execute(
                "UPDATE audit_entries"
                " SET body = CAST(replace(body, '\"n\":4', '\"n\":5') AS BLOB) WHERE id = 5"
            ),
            5,
            "hash does not match",
        ),
        (
            "column type changed",
            lambda c, r: c.execute("UPDATE audit_entries SET body = 'x' WHERE id = 2"),
            2,
            "wrong type",
        ),
        (
            "deleted middle row",
            lambda c, r: c.execute("DELETE FROM audit_entries WHERE id = 6"),
            6,
            "is missing",
        ),
        (
            "swapped pair",
            lambda c, r: (
                c.execute("UPDATE audit_entries SET id = -1 WHERE id = 3"),
                c.execute("UPDATE audit_entries SET id = 3 WHERE id = 4"),
                c.execute("UPDATE audit_entries SET id = 4 WHERE id = -1"),
            ),
            3,
            "prev_hash does not match",
        ),
        (
            "deleted tail behind the checkpoint",
            lambda c, r: c.execute("DELETE FROM audit_entries WHERE id > 7"),
            8,
            "signed checkpoint covers 12",
        ),
        (
            "rewritten chain",
            lambda c, r: rewrite_from(c, r, 4),
            10,
            "differs from the signed checkpoint",
        ),
    ],
)
async def test_verify_detects_tampering(make_runtime, name, tamper, broken_at, reason):
    report = await tampered_report(make_runtime, tamper)
    assert report["status"] == "broken", name
    assert report["broken_at"] == broken_at, report
    assert reason in report["reason"], report


async def test_verify_detects_a_resigned_anchor(make_runtime):
    def forge(conn, runtime):
        other = CheckpointSigner(Ed25519PrivateKey.generate(), "fangwire-audit")
        cp = Checkpoint(
            "fangwire.audit/x", 12, bytes(32), "2026-01-01T00:00:00Z", chain_tip=bytes(32)
        )
        (runtime.home / "audit.anchor").write_text(other.sign(cp))

    report = await tampered_report(make_runtime, forge)
    assert report["status"] == "broken"
    assert "anchored checkpoint does not verify" in report["reason"]


async def test_verify_detects_a_deleted_anchor(make_runtime):
    report = await tampered_report(make_runtime, lambda c, r: (r.home / "audit.anchor").unlink())
    assert report["status"] == "broken"
    assert "anchor file is missing" in report["reason"]


async def test_restored_old_database_is_caught_by_the_anchor(make_runtime):
    runtime = make_runtime(NO_AGENT)
    async with runtime.serving():
        await fill(runtime, 3)
    old = (runtime.home / "fangwire.db").read_bytes()
    again = make_runtime(NO_AGENT)
    async with again.serving():
        await fill(again, 5)
    for suffix in ("-wal", "-shm"):
        (runtime.home / f"fangwire.db{suffix}").unlink(missing_ok=True)
    (runtime.home / "fangwire.db").write_bytes(old)
    third = make_runtime(NO_AGENT)
    async with third.serving():
        report = await third.audit.verify()
    assert report.status == "broken"
    assert "older copy of the database" in (report.reason or "")


# -- HTTP -------------------------------------------------------------------------------------


async def test_recent_endpoint(runtime):
    async with serve_client(runtime) as http:
        await fill(runtime, 7)
        body = (await http.get("/api/audit/recent?limit=3")).json()
        assert body["total"] == 7
        assert [e["id"] for e in body["entries"]] == [7, 6, 5]
        assert set(body["entries"][0]) == {
            "id",
            "timestamp",
            "event_type",
            "agent_id",
            "details",
            "outcome",
            "prev_hash",
            "hash",
        }
        assert len((await http.get("/api/audit/recent?n=2")).json()["entries"]) == 2
        assert len((await http.get("/api/audit/recent")).json()["entries"]) == 7
        for bad in ("limit=0", "limit=501", "limit=abc", "n=-1", "limit=1.5"):
            response = await http.get(f"/api/audit/recent?{bad}")
            assert response.status_code == 400, bad
            assert bad.split("=")[0] in response.json()["error"]["message"]


async def test_verify_and_checkpoint_endpoints(runtime):
    async with serve_client(runtime) as http:
        await fill(runtime, 4)
        report = (await http.get("/api/audit/verify")).json()
        assert report["status"] == "valid"
        assert (report["chain_length"], report["first_entry"], report["last_entry"]) == (4, 1, 4)
        assert "/" not in json.dumps(report)  # no filesystem paths
        cp = (await http.get("/api/audit/checkpoint")).json()
        assert verify_note(cp["note"], cp["verifier_key"]).size == 4
        inclusion = await http.get("/api/audit/proof/inclusion?id=2")
        assert inclusion.status_code == 200
        assert (await http.get("/api/audit/proof/inclusion?id=99")).status_code == 404
        assert (await http.get("/api/audit/proof/inclusion")).status_code == 400
        assert (await http.get("/api/audit/proof/consistency?from=2&to=4")).status_code == 200
        assert (await http.get("/api/audit/proof/consistency?from=5&to=4")).status_code == 404


async def test_audit_needs_admin_and_denials_are_audited(make_runtime):
    from tests.core.test_auth import viewer_plugin

    pm = create_plugin_manager(environ={}, strict=True)
    pm.register_object(viewer_plugin, name="viewer_plugin")
    runtime = make_runtime('api_key = "audit-key-0123456789"\n' + NO_AGENT, pm=pm)
    async with serve_client(runtime, client=("203.0.113.9", 1)) as http:
        viewer = {"authorization": "Bearer viewer-token"}
        assert (await http.get("/api/audit/recent", headers=viewer)).status_code == 403
        assert (
            await http.get("/api/audit/recent", headers={"x-api-key": "wrong"})
        ).status_code == 401
        owner = {"x-api-key": "audit-key-0123456789"}
        entries = (await http.get("/api/audit/recent", headers=owner)).json()["entries"]
    kinds = [(e["event_type"], e["outcome"]) for e in entries]
    assert ("permission_denied", "denied") in kinds
    assert ("auth_failure", "denied") in kinds
    assert "wrong" not in json.dumps(entries)


# -- sinks ----------------------------------------------------------------------------------


class FlakySink(AuditSink):
    sink_id = "flaky"
    calls = 0
    received: ClassVar[list[int]] = []

    def is_enabled(self) -> bool:
        return True

    async def emit(self, entry: AuditEntry) -> None:
        type(self).calls += 1
        if type(self).calls % 2 == 1:
            raise OSError("sink unavailable")
        type(self).received.append(entry.id)


class flaky_plugin:
    @staticmethod
    @hookimpl
    def register_audit_sinks(register):
        register(FlakySink)


async def test_sinks_get_entries_and_failures_are_retried_and_reported(make_runtime):
    FlakySink.calls, FlakySink.received = 0, []
    pm = create_plugin_manager(environ={}, strict=True)
    pm.register_object(flaky_plugin, name="flaky_plugin")
    runtime = make_runtime(NO_AGENT + "[audit.sinks.jsonl]\nenabled = true\n", pm=pm)
    runtime.audit.sinks._backoff = (0.01,)
    async with runtime.serving():
        await fill(runtime, 3)
        with anyio.fail_after(10):
            while len(FlakySink.received) < 3:
                await anyio.sleep(0.01)
        status = runtime.audit.sinks.status()
        report = await runtime.audit.verify()
    assert FlakySink.received == [1, 2, 3]
    assert status["flaky"]["retries"] == 3
    assert status["flaky"]["last_error"] == "OSError: sink unavailable"
    assert report.status == "valid"
    lines = (runtime.home / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [1, 2, 3]


# -- crash safety ---------------------------------------------------------------------------

CHILD = r"""
import sys, anyio
from pathlib import Path
from fangwire.runtime import Runtime
from fangwire.secrets import MemoryKeyring

async def main():
    runtime = Runtime.build(Path(sys.argv[1]), environ={}, keyring_backend=MemoryKeyring())
    async with runtime.serving():
        print("ready", flush=True)
        while True:
            entry = await runtime.audit.record("crash_test", details={"pid": 1})
            print(entry.id, flush=True)

anyio.run(main)
"""


async def test_kill_9_loses_no_acknowledged_entry(fangwire_home, memory_keyring):
    from fangwire.runtime import Runtime

    acknowledged = 0
    deadline = time.monotonic() + 20
    for _ in range(4):
        if time.monotonic() > deadline:
            break
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(fangwire_home)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            await anyio.sleep(random.uniform(0.05, 0.4))
            os.kill(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        ids = [int(line) for line in out.split() if line.isdigit()]
        if ids:
            acknowledged = max(acknowledged, ids[-1])
    assert acknowledged > 0
    runtime = Runtime.build(fangwire_home, environ={}, keyring_backend=memory_keyring)
    async with runtime.serving():
        report = await runtime.audit.verify(deep=True)
    assert report.status == "valid", report
    assert report.chain_length >= acknowledged


async def test_config_changes_are_audited_before_they_apply(runtime):
    from fangwire.config import ConfigError

    async with runtime.serving():
        config = await runtime.change_config(
            ["rate_limit", "api_requests_per_minute"], 120, actor="tester"
        )
        assert config.rate_limit.api_requests_per_minute == 120
        with pytest.raises(ConfigError):
            await runtime.change_config(["nonsense"], 1, actor="tester")
        entries, _ = await runtime.audit.log.recent(10)
    assert [(e.event_type, e.outcome) for e in reversed(entries)] == [
        ("config_change", "pending"),
        ("config_change", "ok"),
        ("config_change", "pending"),
        ("config_change", "error"),
    ]
    assert entries[-1].details["key"] == "rate_limit.api_requests_per_minute"
    assert all(120 not in e.details.values() for e in entries)  # the value is not logged


async def test_config_is_not_changed_when_it_cannot_be_audited(runtime):
    before = (runtime.home / "config.toml").read_text()
    with pytest.raises(AuditError):
        await runtime.change_config(["http", "max_json_depth"], 5, actor="tester")
    assert (runtime.home / "config.toml").read_text() == before
