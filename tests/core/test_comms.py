"""The comms API: persisted events, the event stream, topology, send, tasks and the loop guard."""

from __future__ import annotations

import anyio
import httpx
import pytest

from fangwire.agents import AgentSpec
from fangwire.app import create_app
from fangwire.bus import BusEvent
from fangwire.defaults import comms_routes
from fangwire.testing.live import live_server
from fangwire.testing.sse import read_events

pytestmark = pytest.mark.anyio

ECHO = {"provider": "echo", "model": "echo-1"}


@pytest.fixture
def runtime(make_runtime):
    """The loopback ``test`` channel is configured, refusing messages to ``nobody``."""
    return make_runtime('[channels.test]\nrefuse_targets = ["nobody"]\n')


async def spawn(runtime, name, **extra):
    return await runtime.agents.spawn(AgentSpec(name=name, **ECHO, **extra), actor="t")


async def wait_for(predicate, timeout=5.0):
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(0.02)


async def events_of(http, limit=100):
    response = await http.get(f"/api/comms/events?limit={limit}")
    assert response.status_code == 200
    return response.json()


async def test_events_are_persisted_newest_first_and_survive_a_restart(make_runtime, make_client):
    runtime = make_runtime()
    async with make_client(runtime) as http:
        alpha = await spawn(runtime, "alpha")
        await runtime.agents.kill(alpha.id, actor="t")

        async def two():
            kinds = [e["kind"] for e in (await events_of(http))["events"]]
            return kinds[:2] == ["agent_terminated", "agent_spawned"]

        await wait_for(two)
        body = await events_of(http)
        newest = body["events"][0]
        assert set(newest) == {
            "id", "timestamp", "kind", "source_id", "source_name", "target_id",
            "target_name", "detail",
        }  # fmt: skip
        assert newest["source_id"] == alpha.id and newest["source_name"] == "alpha"
        assert body["items"] == body["events"]
        assert body["total"] >= 2
        ids = [e["id"] for e in body["events"]]
        assert ids == sorted(ids, reverse=True)
        assert len((await events_of(http, limit=1))["events"]) == 1
    again = make_runtime()
    async with make_client(again) as http:
        body = await events_of(http)
        assert [e["source_name"] for e in body["events"][:2]] == ["alpha", "alpha"]


@pytest.mark.parametrize("limit", ["0", "501", "abc", "-1"])
async def test_limit_is_validated(app_client, limit):
    response = await app_client.get(f"/api/comms/events?limit={limit}")
    assert response.status_code == 400
    assert "limit" in response.json()["error"]["message"]


async def test_retention_trims_old_rows(runtime, app_client, monkeypatch):
    from fangwire.comms.events import CommsEvents

    monkeypatch.setattr(CommsEvents, "retention", 3)
    for n in range(6):
        runtime.bus.publish(BusEvent(kind="loop_detected", payload={"from": f"x{n}", "to": "y"}))

    async def trimmed():
        body = await events_of(app_client)
        return body["events"] and body["events"][0]["source_id"] == "x5"

    await wait_for(trimmed)
    body = await events_of(app_client)
    assert body["total"] == 3
    assert [e["source_id"] for e in body["events"]] == ["x5", "x4", "x3"]


async def test_stream_sends_new_events_and_resumes(make_runtime, monkeypatch):
    monkeypatch.setattr(comms_routes, "HEARTBEAT_SECONDS", 0.2)
    runtime = make_runtime()

    async def spawn_later(name):
        await anyio.sleep(0.3)
        await spawn(runtime, name)

    async with (
        live_server(create_app(runtime)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        with anyio.fail_after(10):
            async with http.stream("GET", "/api/comms/events/stream") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(spawn_later, "streamed")
                    first = (await read_events(response, 1))[0]
            assert first["data"]["kind"] == "agent_spawned"
            assert first["data"]["source_name"] == "streamed"
            assert first["id"] == str(first["data"]["id"])
            await spawn(runtime, "missed-1")
            await spawn(runtime, "missed-2")
            headers = {"Last-Event-ID": first["id"]}
            async with http.stream("GET", "/api/comms/events/stream", headers=headers) as resp:
                resumed = await read_events(resp, 2)
        assert [e["data"]["source_name"] for e in resumed] == ["missed-1", "missed-2"]
        bad = await http.get("/api/comms/events/stream", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400


async def test_stream_limit(make_runtime, monkeypatch):
    monkeypatch.setattr(comms_routes, "MAX_STREAMS", 1)
    runtime = make_runtime()
    async with (
        live_server(create_app(runtime)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        with anyio.fail_after(10):
            async with http.stream("GET", "/api/comms/events/stream") as response:
                assert response.status_code == 200
                second = await http.get("/api/comms/events/stream")
                assert second.status_code == 429
                assert second.json()["error"]["code"] == "comms_stream_limit"


async def test_topology_nodes_and_edges(runtime, app_client):
    parent = await spawn(runtime, "parent")
    child = await runtime.agents.spawn(
        AgentSpec(name="child", **ECHO), actor="t", parent_id=parent.id
    )
    sent = await app_client.post(
        "/api/comms/send", json={"to": f"agent:{child.id}", "content": "hi", "from": "parent"}
    )
    assert sent.status_code == 200

    async def has_message_edge():
        body = (await app_client.get("/api/comms/topology")).json()
        return any(e["kind"] == "message" for e in body["edges"])

    await wait_for(has_message_edge)
    body = (await app_client.get("/api/comms/topology")).json()
    nodes = {n["id"]: n for n in body["nodes"]}
    assert nodes[child.id] == {
        "id": child.id, "name": "child", "kind": "agent", "state": "running", "model": "echo-1",
    }  # fmt: skip
    assert nodes["channel:test"]["kind"] == "channel"
    edges = {(e["from"], e["to"], e["kind"]) for e in body["edges"]}
    assert (parent.id, child.id, "parent_child") in edges
    assert (parent.id, child.id, "message") in edges


async def test_send_to_an_agent_in_both_body_forms(runtime, app_client):
    bob = await spawn(runtime, "bob")
    by_id = await app_client.post(
        "/api/comms/send", json={"to": f"agent:{bob.id}", "content": "one"}
    )
    assert by_id.status_code == 200, by_id.text
    body = by_id.json()
    assert body["ok"] is True and body["response"] == "echo: one"
    assert body["input_tokens"] > 0 and body["output_tokens"] > 0
    assert "cost_usd" in body
    by_name = await app_client.post("/api/comms/send", json={"to": "agent:bob", "content": "two"})
    assert by_name.json()["response"] == "echo: two"
    reference = await app_client.post(
        "/api/comms/send",
        json={"from_agent_id": bob.id, "to_agent_id": "bob", "message": "three", "thread_id": "t1"},
    )
    assert reference.status_code == 200, reference.text
    assert reference.json()["response"] == "echo: three"
    assert reference.json()["thread_id"] == "t1"


async def test_send_through_a_channel(app_client):
    response = await app_client.post(
        "/api/comms/send", json={"to": "channel:test:room1", "content": "hello room"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True and body["channel"] == "test" and body["target"] == "room1"
    assert len(body["message_ids"]) == 1

    async def recorded():
        events = (await events_of(app_client))["events"]
        return any(e["kind"] == "channel.outbound" for e in events)

    await wait_for(recorded)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"to": "agent:nobody", "content": "x"}, 404, "to"),
        ({"to": "channel:nowhere:x", "content": "x"}, 404, "to"),
        ({"to_agent_id": "nobody", "message": "x"}, 404, "to_agent_id"),
        ({"content": "x"}, 400, "to"),
        ({"to": "agent:assistant"}, 400, "content"),
        ({"to": "agent:assistant", "content": 5}, 400, "content"),
        ({"to": "channel:test", "content": "x"}, 400, "to"),
        ({"to": "peer:x", "content": "x"}, 400, "to"),
        ({"to_agent_id": "assistant"}, 400, "message"),
    ],
)
async def test_send_errors(app_client, body, status, field):
    response = await app_client.post("/api/comms/send", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"].startswith(field)


async def test_send_rejects_a_non_object(app_client):
    response = await app_client.post("/api/comms/send", json=["x"])
    assert response.status_code == 400


async def test_channel_errors_are_502(app_client):
    response = await app_client.post(
        "/api/comms/send", json={"to": "channel:test:nobody", "content": "x"}
    )
    assert response.status_code == 502
    assert "refuses" in response.json()["error"]["message"]


async def test_unconfigured_channel_is_412(make_runtime, make_client):
    async with make_client(make_runtime()) as http:
        response = await http.post("/api/comms/send", json={"to": "channel:test:x", "content": "x"})
    assert response.status_code == 412
    assert "not configured" in response.json()["error"]["message"]


async def test_a_failing_agent_is_502(make_runtime, make_client):
    runtime = make_runtime('[providers.openai]\nbase_url = "http://127.0.0.1:9"\napi_key = "k"\n')
    async with make_client(runtime) as http:
        await runtime.agents.spawn(
            AgentSpec(name="remote", provider="openai", model="gpt-4o-mini"), actor="t"
        )
        with anyio.fail_after(30):
            response = await http.post(
                "/api/comms/send", json={"to": "agent:remote", "content": "hi"}
            )
    assert response.status_code == 502, response.text
    assert response.json()["error"]["message"]


async def task_of(http, task_id, status):
    async def done():
        body = (await http.get(f"/api/comms/tasks/{task_id}")).json()
        return body["status"] == status

    await wait_for(done)
    return (await http.get(f"/api/comms/tasks/{task_id}")).json()


async def test_tasks_are_routed_by_skills_and_complete(runtime, app_client):
    await spawn(runtime, "writer", skills=("writing", "poetry"))
    coder = await spawn(runtime, "coder", skills=("python", "code review"))
    with anyio.fail_after(10):
        async with runtime.bus.subscribe("task_posted", "task_claimed", "task_completed") as sub:
            response = await app_client.post(
                "/api/comms/task",
                json={"title": "Code review", "description": "check this Python module"},
            )
            assert response.status_code == 201, response.text
            body = response.json()
            assert body["ok"] is True and body["assigned_to"] == coder.id
            assert body["status"] == "posted"
            kinds = [(await sub.receive()).kind for _ in range(3)]
    assert kinds == ["task_posted", "task_claimed", "task_completed"]
    task = await task_of(app_client, body["task_id"], "completed")
    assert task["result"] == "echo: Code review\n\ncheck this Python module"

    async def lifecycle_recorded():
        events = (await events_of(app_client))["events"]
        return {"task_posted", "task_claimed", "task_completed"} <= {e["kind"] for e in events}

    await wait_for(lifecycle_recorded)


async def test_task_assignment_and_errors(runtime, app_client):
    bob = await spawn(runtime, "bob")
    response = await app_client.post("/api/comms/task", json={"title": "t", "assigned_to": "bob"})
    assert response.status_code == 201
    assert response.json()["assigned_to"] == bob.id
    missing = await app_client.post("/api/comms/task", json={"title": "t", "assigned_to": "x"})
    assert missing.status_code == 404
    empty = await app_client.post("/api/comms/task", json={"title": "  "})
    assert empty.status_code == 400
    assert empty.json()["error"]["message"].startswith("title")
    assert (await app_client.get("/api/comms/tasks/nope")).status_code == 404
    await task_of(app_client, response.json()["task_id"], "completed")


async def test_without_skills_the_least_busy_agent_gets_the_task(runtime, app_client):
    for agent in await runtime.agents.all():
        await runtime.agents.kill(agent.id, actor="t")
    first = await spawn(runtime, "first")
    second = await spawn(runtime, "second")
    await runtime.store.execute(
        "INSERT INTO comms_tasks (id, title, description, assigned_to, status, created_by,"
        " created_at, updated_at) VALUES ('busy', 't', '', ?, 'claimed', 't', 'x', 'x')",
        (first.id,),
    )
    response = await app_client.post("/api/comms/task", json={"title": "anything"})
    assert response.json()["assigned_to"] == second.id


async def test_a_failing_task_is_reported(make_runtime, make_client):
    runtime = make_runtime('[providers.openai]\nbase_url = "http://127.0.0.1:9"\napi_key = "k"\n')
    async with make_client(runtime) as http:
        remote = await runtime.agents.spawn(
            AgentSpec(name="remote", provider="openai", model="gpt-4o-mini"), actor="t"
        )
        response = await http.post(
            "/api/comms/task", json={"title": "do it", "assigned_to": remote.id}
        )
        assert response.status_code == 201
        with anyio.fail_after(30):
            task = await task_of(http, response.json()["task_id"], "failed")
    assert task["error"]


async def test_loop_guard_trips_on_the_fourth_identical_send(runtime, app_client):
    before = (await app_client.get("/api/security")).json()
    assert before["security_systems"]["loop_guard"] == "active"
    assert before["details"]["loop_guard"]["blocked"] == 0
    message = {"to": "agent:assistant", "content": "ping", "from": "system"}
    for _ in range(3):
        assert (await app_client.post("/api/comms/send", json=message)).status_code == 200
    refused = await app_client.post("/api/comms/send", json=message)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "loop_detected"
    other = await app_client.post("/api/comms/send", json={**message, "content": "pong"})
    assert other.status_code == 200
    report = (await app_client.get("/api/security")).json()
    assert report["security_systems"]["loop_guard"] == "active"
    assert report["details"]["loop_guard"]["blocked"] == 1

    async def recorded():
        events = (await events_of(app_client))["events"]
        return any(e["kind"] == "loop_detected" for e in events)

    await wait_for(recorded)


async def test_loop_guard_window_expires():
    from fangwire.bus import Bus
    from fangwire.comms import LoopDetected, LoopGuard

    now = [0.0]
    guard = LoopGuard(Bus(), clock=lambda: now[0])
    for _ in range(3):
        guard.check("a", "b", "x")
    with pytest.raises(LoopDetected):
        guard.check("a", "b", "x")
    now[0] = 61.0
    guard.check("a", "b", "x")
    assert guard.blocked == 1


async def test_the_probe_is_removed_at_shutdown(runtime, make_client):
    async with make_client(runtime):
        assert "loop_guard" in runtime.security._probes
    assert runtime.security.state("loop_guard").details["reason"].startswith("no component")
