"""Tests for the core's default plugins (unlimited budget, jsonl audit sink, API-key hashing)
and for the in-process comms bus."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import anyio
import pytest

from fangwire.audit import AuditEntry
from fangwire.auth import Role
from fangwire.budget import BudgetAction, BudgetDecision
from fangwire.bus import Bus, BusEvent
from fangwire.defaults.audit_jsonl import JsonlAuditSink
from fangwire.defaults.auth_api_key import hash_api_key
from fangwire.runtime import Runtime
from fangwire.testing.fixtures import MakeRuntime

TIMEOUT = 5
JSONL_ENABLED = '[audit.sinks.jsonl]\nenabled = true\nfile = "audit.jsonl"\n'
ENTRY_FIELDS = {
    "id",
    "timestamp",
    "event_type",
    "agent_id",
    "details",
    "outcome",
    "prev_hash",
    "hash",
}


def make_entry(n: int, **overrides: object) -> AuditEntry:
    fields: dict[str, object] = {
        "id": n,
        "timestamp": f"2025-01-01T00:00:{n % 60:02d}.000Z",
        "event_type": "message.sent",
        "agent_id": f"agent-{n}",
        "details": {"channel": "test", "n": n, "note": "padding " * 200},
        "outcome": "ok",
        "prev_hash": f"{n - 1:064x}",
        "hash": f"{n:064x}",
    }
    fields.update(overrides)
    return AuditEntry(**fields)  # type: ignore[arg-type]


def jsonl_sink(runtime: Runtime) -> JsonlAuditSink:
    sink = runtime.audit_sinks["jsonl"]
    assert isinstance(sink, JsonlAuditSink)
    return sink


# -- unlimited budget policy ----------------------------------------------------------------


@pytest.mark.anyio
async def test_unlimited_policy_allows_anything(runtime: Runtime) -> None:
    policy = runtime.budget_policies["unlimited"]
    for action in (
        BudgetAction(kind="model_call", estimated_cost_usd=1e9),
        BudgetAction(kind="tool_run", agent_id="a", estimated_tokens=10**12),
    ):
        decision = await policy.check(action)
        assert decision == BudgetDecision(allowed=True, policy="unlimited")


# -- jsonl audit sink -----------------------------------------------------------------------


def test_jsonl_sink_disabled_by_default(runtime: Runtime) -> None:
    assert jsonl_sink(runtime).is_enabled() is False


def test_jsonl_sink_disabled_explicitly(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime("[audit.sinks.jsonl]\nenabled = false\n")
    assert jsonl_sink(runtime).is_enabled() is False


@pytest.mark.anyio
async def test_jsonl_sink_appends_one_line_per_entry(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime(JSONL_ENABLED)
    sink = jsonl_sink(runtime)
    assert sink.is_enabled() is True
    path = runtime.home / "audit.jsonl"
    assert sink.path == path.resolve()
    entries = [make_entry(1), make_entry(2, agent_id=None, details={"ünï": ["c", 1]})]
    # With no umask the file mode is exactly what the sink asks for.
    old_umask = os.umask(0)
    try:
        with anyio.fail_after(TIMEOUT):
            await sink.emit(entries[0])
            assert path.read_text(encoding="utf-8").count("\n") == 1
            await sink.emit(entries[1])
    finally:
        os.umask(old_umask)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    for line, entry in zip(lines, entries, strict=True):
        decoded = json.loads(line)
        assert set(decoded) == ENTRY_FIELDS
        assert decoded == entry.to_json()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.anyio
async def test_jsonl_sink_lines_intact_under_concurrency(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime(JSONL_ENABLED)
    sink = jsonl_sink(runtime)
    with anyio.fail_after(TIMEOUT * 4):
        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(sink.emit, make_entry(n))
    lines = (runtime.home / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 50
    decoded = [json.loads(line) for line in lines]
    assert sorted(d["id"] for d in decoded) == list(range(50))
    for d in decoded:
        assert d == make_entry(d["id"]).to_json()


@pytest.mark.parametrize("name", ["../escape.jsonl", "logs/../../escape.jsonl", "ABSOLUTE"])
@pytest.mark.anyio
async def test_jsonl_sink_refuses_paths_outside_home(
    make_runtime: MakeRuntime, fangwire_home: Path, tmp_path: Path, name: str
) -> None:
    outside = tmp_path / "escape.jsonl"
    if name == "ABSOLUTE":
        name = str(outside)
    runtime = make_runtime(f"[audit.sinks.jsonl]\nenabled = true\nfile = {json.dumps(name)}\n")
    assert runtime.home == fangwire_home
    with pytest.raises(ValueError, match="inside the fangwire home"):
        await jsonl_sink(runtime).emit(make_entry(1))
    assert not outside.exists()


@pytest.mark.anyio
async def test_jsonl_sink_refuses_symlink_out_of_home(
    make_runtime: MakeRuntime, fangwire_home: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (fangwire_home / "link").symlink_to(elsewhere, target_is_directory=True)
    runtime = make_runtime('[audit.sinks.jsonl]\nenabled = true\nfile = "link/audit.jsonl"\n')
    with pytest.raises(ValueError, match="inside the fangwire home"):
        await jsonl_sink(runtime).emit(make_entry(1))
    assert not (elsewhere / "audit.jsonl").exists()


@pytest.mark.anyio
async def test_jsonl_sink_refuses_absolute_paths_even_inside_home(
    make_runtime: MakeRuntime, fangwire_home: Path
) -> None:
    # The file name is relative to the home by contract; an absolute one is refused outright.
    target = fangwire_home / "inside.jsonl"
    runtime = make_runtime(
        f"[audit.sinks.jsonl]\nenabled = true\nfile = {json.dumps(str(target))}\n"
    )
    with pytest.raises(ValueError, match="inside the fangwire home"):
        await jsonl_sink(runtime).emit(make_entry(3))
    assert not target.exists()


@pytest.mark.parametrize("value", ['""', "42"])
@pytest.mark.anyio
async def test_jsonl_sink_refuses_bad_file_values(make_runtime: MakeRuntime, value: str) -> None:
    runtime = make_runtime(f"[audit.sinks.jsonl]\nenabled = true\nfile = {value}\n")
    with pytest.raises(ValueError, match="non-empty string"):
        await jsonl_sink(runtime).emit(make_entry(1))


# -- api_key provider -----------------------------------------------------------------------


def test_hash_api_key_format() -> None:
    value = hash_api_key("my-master-key")
    assert re.fullmatch(r"\$sha256\$[0-9a-f]{64}", value)
    assert value == "$sha256$" + hashlib.sha256(b"my-master-key").hexdigest()
    assert hash_api_key("my-master-key") == value
    assert hash_api_key("my-master-kez") != value
    assert hash_api_key("ключ") == "$sha256$" + hashlib.sha256("ключ".encode()).hexdigest()


@pytest.mark.anyio
async def test_api_key_hash_authenticates_the_key(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime(f'api_key_hash = "{hash_api_key("the-real-key")}"\n')
    provider = next(p for p in runtime.auth_providers if p.provider_id == "api_key")
    assert provider.is_configured()
    principal = await provider.authenticate("the-real-key", None)  # type: ignore[arg-type]
    assert principal is not None
    assert principal.role == Role.OWNER
    assert await provider.authenticate("the-real-kez", None) is None  # type: ignore[arg-type]


# -- bus ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_bus_filters_by_kind() -> None:
    bus = Bus()
    with anyio.fail_after(TIMEOUT):
        async with (
            bus.subscribe("a") as only_a,
            bus.subscribe("a", "b") as a_and_b,
            bus.subscribe() as everything,
        ):
            events = [BusEvent(kind=k, payload={"i": i}) for i, k in enumerate("abca")]
            for event in events:
                bus.publish(event)
            got_a = [await only_a.receive() for _ in range(2)]
            got_ab = [await a_and_b.receive() for _ in range(3)]
            got_all = [await everything.receive() for _ in range(4)]
            # Nothing else is pending for the filtered subscribers.
            bus.publish(BusEvent(kind="a", payload={"last": True}))
            assert (await only_a.receive()).payload == {"last": True}
    assert got_a == [events[0], events[3]]
    assert got_ab == [events[0], events[1], events[3]]
    assert got_all == events


@pytest.mark.anyio
async def test_bus_receive_waits_for_publish() -> None:
    bus = Bus()
    received: list[BusEvent] = []
    event = BusEvent(kind="x", payload={})
    with anyio.fail_after(TIMEOUT):
        async with bus.subscribe("x") as sub, anyio.create_task_group() as tg:

            async def consume() -> None:
                received.append(await sub.receive())

            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            assert received == []
            bus.publish(event)
    assert received == [event]


@pytest.mark.anyio
async def test_slow_subscriber_drops_oldest_and_counts() -> None:
    bus = Bus(buffer_size=3)
    events = [BusEvent(kind="tick", payload={"n": n}) for n in range(5)]
    with anyio.fail_after(TIMEOUT):
        async with bus.subscribe() as slow:
            for event in events:
                bus.publish(event)  # never blocks, though nobody is reading
            assert slow.dropped == 2
            got = [await slow.receive() for _ in range(3)]
            assert slow.dropped == 2
            bus.publish(events[0])
            assert await slow.receive() is events[0]
    assert got == events[2:]


@pytest.mark.anyio
async def test_one_slow_subscriber_does_not_affect_another() -> None:
    bus = Bus(buffer_size=2)
    with anyio.fail_after(TIMEOUT):
        async with bus.subscribe() as slow, bus.subscribe() as fast:
            for n in range(4):
                bus.publish(BusEvent(kind="tick", payload={"n": n}))
                assert (await fast.receive()).payload == {"n": n}
            assert fast.dropped == 0
            assert slow.dropped == 2


@pytest.mark.anyio
async def test_subscription_ends_on_exit() -> None:
    bus = Bus()
    assert bus.subscriber_count == 0
    async with bus.subscribe("a"):
        assert bus.subscriber_count == 1
        async with bus.subscribe():
            assert bus.subscriber_count == 2
        assert bus.subscriber_count == 1
    assert bus.subscriber_count == 0
    with pytest.raises(RuntimeError, match="boom"):
        async with bus.subscribe():
            assert bus.subscriber_count == 1
            raise RuntimeError("boom")
    assert bus.subscriber_count == 0
    bus.publish(BusEvent(kind="a", payload={}))  # no subscribers: a no-op


def test_bus_event_defaults() -> None:
    first = BusEvent(kind="k", payload={})
    second = BusEvent(kind="k", payload={})
    assert re.fullmatch(r"[0-9a-f]{32}", first.id)
    assert first.id != second.id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.timestamp)
