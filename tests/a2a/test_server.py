"""fangwire as an A2A server, over raw HTTP: cards, the REST task routes, JSON-RPC 0.3 and 1.0
wire shapes, errors, persistence across restarts."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from fangwire.agents import AgentSpec
from fangwire.app import create_app
from fangwire.plugins import PluginLoadError
from fangwire.testing.live import live_server
from fangwire.testing.sse import read_events
from tests.a2a.helpers import SLOW_ENV, poll, slow_model, spawn_slow

pytestmark = pytest.mark.anyio

V1 = {"A2A-Version": "1.0"}


def rpc(method, params, id_=1):
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


def message_03(text, message_id="m-1"):
    return {
        "kind": "message",
        "messageId": message_id,
        "role": "user",
        "parts": [{"kind": "text", "text": text}],
    }


async def send(http, body, status=200):
    response = await http.post("/a2a/tasks/send", json=body)
    assert response.status_code == status, response.text
    return response.json()


# -- cards ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/.well-known/agent-card.json", "/.well-known/agent.json"])
async def test_the_card_carries_the_document_fields_and_what_0_3_and_1_0_clients_need(
    app_client, path
):
    response = await app_client.get(path)
    assert response.status_code == 200
    card = response.json()
    for key in ("name", "description", "url", "version", "skills"):
        assert key in card, key
    assert card["capabilities"] == {"streaming": True, "pushNotifications": False}
    assert card["protocolVersion"] == "0.3"
    assert card["preferredTransport"] == "JSONRPC"
    assert card["defaultInputModes"] == ["text/plain"]
    assert card["defaultOutputModes"] == ["text/plain"]
    assert card["url"] == "http://127.0.0.1:4545/a2a"
    assert [(i["protocolBinding"], i["protocolVersion"]) for i in card["supportedInterfaces"]] == [
        ("JSONRPC", "1.0"),
        ("JSONRPC", "0.3"),
    ]
    assert {s["id"] for s in card["skills"]} == {"assistant"}
    assert all({"id", "name", "description"} <= set(s) for s in card["skills"])
    assert "securitySchemes" not in card  # no key configured: loopback callers only


async def test_every_url_a_card_advertises_answers(app_client):
    card = (await app_client.get("/.well-known/agent-card.json")).json()
    listed = (await app_client.get("/a2a/agents")).json()
    cards = [card, *listed["items"]]
    urls = {card["url"]} | {i["url"] for c in cards for i in c["supportedInterfaces"]}
    assert len(urls) == 2  # /a2a and the assistant's own endpoint
    for url in urls:
        path = httpx.URL(url).path
        got = await app_client.get(path)
        assert got.status_code == 200 and got.json()["supportedInterfaces"], path
        sent = await app_client.post(
            path, json=rpc("message/send", {"message": message_03("ping")})
        )
        assert sent.json()["result"]["status"]["state"] == "completed", path


async def test_local_agents_are_listed_as_cards(runtime, app_client):
    helper = await runtime.agents.spawn(
        AgentSpec(name="helper", provider="echo", model="echo-1", skills=("math",)), actor="t"
    )
    body = (await app_client.get("/a2a/agents")).json()
    assert body["total"] == 2 and body["offset"] == 0
    by_name = {c["name"]: c for c in body["items"]}
    assert by_name["helper"]["id"] == helper.id
    assert by_name["helper"]["url"] == f"http://127.0.0.1:4545/a2a/agents/{helper.id}"
    assert by_name["helper"]["skills"][0]["tags"] == ["math"]
    missing = await app_client.get("/a2a/agents/nobody")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_the_card_and_agent_list_are_public_and_the_rest_needs_a_key(make_runtime):
    runtime = make_runtime('api_key = "secret-key-1"\n')
    async with live_server(create_app(runtime)) as url, httpx.AsyncClient(base_url=url) as http:
        card = await http.get("/.well-known/agent-card.json")
        assert card.status_code == 200
        assert set(card.json()["securitySchemes"]) == {"bearer", "apiKey"}
        assert (await http.get("/.well-known/agent.json")).status_code == 200
        assert (await http.get("/a2a/agents")).status_code == 200
        body = {"agent_id": "assistant", "message": {"parts": [{"text": "hi"}]}}
        assert (await http.post("/a2a/tasks/send", json=body)).status_code == 401
        assert (await http.post("/a2a", json=rpc("message/send", {}))).status_code == 401
        assert (await http.get("/a2a/tasks/x")).status_code == 401
        authed = await http.post(
            "/a2a/tasks/send", json=body, headers={"Authorization": "Bearer secret-key-1"}
        )
        assert authed.status_code == 200 and authed.json()["status"] == "completed"


# -- REST task routes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"agent_id": "assistant", "message": {"role": "user", "parts": [{"text": "hello"}]}},
        {"agent_id": "assistant", "message": {"parts": [{"type": "text", "text": "hello"}]}},
        {
            "params": {
                "agentId": "assistant",
                "message": {"parts": [{"type": "text", "text": "hello"}]},
            }
        },
        {"agent_id": "assistant", "message": "hello"},
    ],
    ids=["document", "typed-parts", "reference-params", "plain-string"],
)
async def test_send_answers_with_the_document_shape(app_client, body):
    task = await send(app_client, body)
    assert task["status"] == "completed"
    assert task["result"] == {"role": "agent", "parts": [{"type": "text", "text": "echo: hello"}]}
    assert task["error"] is None
    assert task["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    again = await app_client.get(f"/a2a/tasks/{task['task_id']}")
    assert again.status_code == 200
    assert again.json()["result"] == task["result"] and again.json()["agent_id"] == task["agent_id"]


async def test_send_by_agent_id_and_session(runtime, app_client):
    agent = await runtime.agents.find("assistant")
    first = await send(app_client, {"agent_id": agent.id, "session_id": "ctx-1", "message": "one"})
    assert first["agent_id"] == agent.id and first["context_id"] == "ctx-1"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"message": "hi"}, 400, "agent_id"),
        ({"agent_id": "assistant"}, 400, "message"),
        ({"agent_id": "assistant", "message": {"parts": []}}, 400, "message.parts"),
        ({"agent_id": "assistant", "message": {"parts": [{"text": "  "}]}}, 400, "empty"),
        ({"agent_id": "assistant", "message": {"parts": ["x"]}}, 400, "message.parts[0]"),
        (
            {"agent_id": "assistant", "message": {"parts": [{"type": "file", "file": {}}]}},
            400,
            "only text parts",
        ),
        (
            {"agent_id": "assistant", "message": {"role": "agent", "parts": [{"text": "x"}]}},
            400,
            "role",
        ),
        ({"agent_id": 7, "message": "x"}, 400, "agent_id"),
        ({"agent_id": "nobody", "message": "x"}, 404, "nobody"),
        ({"agent_id": "assistant", "message": "x", "wait_seconds": -1}, 400, "wait_seconds"),
        ({"params": [], "message": "x"}, 400, "params"),
    ],
)
async def test_send_rejects_bad_input_naming_the_field(app_client, body, status, needle):
    response = await app_client.post("/a2a/tasks/send", json=body)
    assert response.status_code == status
    assert needle in response.json()["error"]["message"]


async def test_send_rejects_non_json_bodies(app_client):
    response = await app_client.post("/a2a/tasks/send", content=b"{nope")
    assert response.status_code == 400
    response = await app_client.post("/a2a/tasks/send", content=b"[]")
    assert response.status_code == 400


async def test_unknown_task_is_404(app_client):
    assert (await app_client.get("/a2a/tasks/nope")).status_code == 404
    response = await app_client.post("/a2a/tasks/nope/cancel")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_a_finished_task_stays_finished(app_client):
    task = await send(app_client, {"agent_id": "assistant", "message": "done"})
    response = await app_client.post(f"/a2a/tasks/{task['task_id']}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "task_not_cancelable"
    again = await app_client.get(f"/a2a/tasks/{task['task_id']}")
    assert again.json()["status"] == "completed"


async def test_a_running_task_is_reported_working_and_can_be_cancelled(make_runtime, make_client):
    async with slow_model() as (fake, config):
        runtime = make_runtime(config, environ=SLOW_ENV)
        async with make_client(runtime) as http:
            await spawn_slow(runtime)
            task = await send(
                http, {"agent_id": "slow", "message": "take your time", "wait_seconds": 0.2}, 202
            )
            assert task["status"] in ("submitted", "working")
            assert task["result"] is None
            path = f"/a2a/tasks/{task['task_id']}"
            await poll(http, path, lambda b: b["status"] == "working")
            with anyio.fail_after(10):
                cancelled = await http.post(f"{path}/cancel")
            assert cancelled.status_code == 200
            assert cancelled.json()["status"] == "cancelled"
            assert cancelled.json()["task_id"] == task["task_id"]
            assert (await http.get(path)).json()["status"] == "cancelled"
            assert (await http.post(f"{path}/cancel")).status_code == 409
            assert len(fake.requests) == 1


async def test_a_model_failure_is_a_failed_task_with_its_reason(make_runtime, make_client):
    async with slow_model(delay=0) as (fake, config):
        runtime = make_runtime(config, environ=SLOW_ENV)
        async with make_client(runtime) as http:
            await spawn_slow(runtime, "flaky")
            fake.fail_next = [(500, {"error": {"message": "upstream exploded", "type": "server"}})]
            task = await send(http, {"agent_id": "flaky", "message": "hi"})
    assert task["status"] == "failed"
    assert task["result"] is None
    assert "500" in task["error"] or "exploded" in task["error"]
    assert task["task"]["status"]["state"] == "TASK_STATE_FAILED"


async def test_tasks_survive_a_restart_and_unfinished_ones_fail_honestly(make_runtime, make_client):
    async with slow_model() as (_, config):
        runtime = make_runtime(config, environ=SLOW_ENV)
        async with make_client(runtime) as http:
            await spawn_slow(runtime)
            done = await send(http, {"agent_id": "assistant", "message": "kept"})
            pending = await send(
                http, {"agent_id": "slow", "message": "lost", "wait_seconds": 0}, 202
            )
            await poll(http, f"/a2a/tasks/{pending['task_id']}", lambda b: b["status"] == "working")
        again = make_runtime(config, environ=SLOW_ENV)
        async with make_client(again) as http:
            kept = (await http.get(f"/a2a/tasks/{done['task_id']}")).json()
            lost = (await http.get(f"/a2a/tasks/{pending['task_id']}")).json()
    assert kept["status"] == "completed" and kept["result"] == done["result"]
    assert lost["status"] == "failed"
    assert "interrupted" in lost["error"]


async def test_retention_keeps_the_newest_finished_tasks(make_runtime, make_client):
    runtime = make_runtime("[a2a]\nmax_tasks = 3\n")
    async with make_client(runtime) as http:
        ids = [
            (await send(http, {"agent_id": "assistant", "message": f"n{i}"}))["task_id"]
            for i in range(5)
        ]
        transport = runtime.transports["a2a"]
        assert await transport.server.tasks.prune() == 2
        found = [(await http.get(f"/a2a/tasks/{i}")).status_code for i in ids]
    assert found == [404, 404, 200, 200, 200]


def test_a_bad_a2a_table_fails_the_plugin_naming_the_keys(make_runtime):
    with pytest.raises(PluginLoadError) as info:
        make_runtime('[a2a]\nmax_tasks = "many"\nsurprise = 1\n')
    assert "a2a.max_tasks: expected an integer, got 'many'" in str(info.value)
    assert "a2a.surprise: unknown key" in str(info.value)


# -- JSON-RPC on the wire ------------------------------------------------------------------------


async def test_0_3_methods_without_a_version_header(app_client):
    sent = await app_client.post("/a2a", json=rpc("message/send", {"message": message_03("hey")}))
    task = sent.json()["result"]
    assert task["kind"] == "task" and task["status"]["state"] == "completed"
    assert task["artifacts"][0]["parts"] == [{"kind": "text", "text": "echo: hey"}]
    got = await app_client.post("/a2a", json=rpc("tasks/get", {"id": task["id"]}))
    assert got.json()["result"]["id"] == task["id"]
    cancel = await app_client.post("/a2a", json=rpc("tasks/cancel", {"id": task["id"]}))
    assert cancel.json()["error"]["code"] == -32002
    missing = await app_client.post("/a2a", json=rpc("tasks/get", {"id": "nope"}))
    assert missing.json()["error"]["code"] == -32001
    rest = await app_client.get(f"/a2a/tasks/{task['id']}")
    assert rest.json()["status"] == "completed"


async def test_1_0_methods_need_the_version_header(app_client):
    params = {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]}}
    refused = await app_client.post("/a2a", json=rpc("SendMessage", params))
    assert refused.json()["error"]["code"] == -32009
    accepted = await app_client.post("/a2a", json=rpc("SendMessage", params), headers=V1)
    task = accepted.json()["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    future = await app_client.post(
        "/a2a", json=rpc("GetTask", {"id": task["id"]}), headers={"A2A-Version": "9.9"}
    )
    assert future.json()["error"]["code"] == -32009
    listed = await app_client.post("/a2a", json=rpc("ListTasks", {}), headers=V1)
    assert [t["id"] for t in listed.json()["result"]["tasks"]] == [task["id"]]
    missing = await app_client.post("/a2a", json=rpc("GetTask", {"id": "nope"}), headers=V1)
    error = missing.json()["error"]
    assert error["code"] == -32001 and error["data"][0]["reason"] == "TASK_NOT_FOUND"


async def test_json_rpc_protocol_errors(app_client):
    unknown = await app_client.post("/a2a", json=rpc("tasks/teleport", {}))
    assert unknown.json()["error"]["code"] == -32601
    bad = await app_client.post("/a2a", content=b"{not json")
    assert bad.status_code == 200 and bad.json()["error"]["code"] == -32700
    deep = await app_client.post("/a2a", content=b"[" * 200 + b"]" * 200)
    assert deep.json()["error"]["code"] == -32700
    invalid = await app_client.post("/a2a", json={"jsonrpc": "1.0", "id": 1, "method": "x"})
    assert invalid.json()["error"]["code"] == -32600
    huge = await app_client.post("/a2a", content=b'{"x":"' + b"a" * (2 * 1024 * 1024) + b'"}')
    assert huge.status_code == 413


async def test_0_3_stream_over_sse(make_runtime):
    runtime = make_runtime()
    async with live_server(create_app(runtime)) as url, httpx.AsyncClient(base_url=url) as http:
        body = rpc("message/stream", {"message": message_03("flow")})
        with anyio.fail_after(10):
            async with http.stream("POST", "/a2a", json=body) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                events = await read_events(response, 10)
    kinds = [e["data"]["result"]["kind"] for e in events]
    assert kinds[0] == "task" and kinds[-1] == "status-update"
    assert "artifact-update" in kinds
    last = events[-1]["data"]["result"]
    assert last["status"]["state"] == "completed" and last["final"] is True
    assert all(e["data"]["id"] == 1 for e in events)


async def test_tasks_are_scoped_to_the_caller_that_sent_them(make_runtime):
    runtime = make_runtime('api_key = """\nkey-alice-0001\nkey-bob-00002\n"""\n')
    alice = {"Authorization": "Bearer key-alice-0001"}
    bob = {"X-API-Key": "key-bob-00002"}
    async with live_server(create_app(runtime)) as url, httpx.AsyncClient(base_url=url) as http:
        sent = await http.post(
            "/a2a/tasks/send", json={"agent_id": "assistant", "message": "mine"}, headers=alice
        )
        task_id = sent.json()["task_id"]
        assert (await http.get(f"/a2a/tasks/{task_id}", headers=alice)).status_code == 200
        assert (await http.get(f"/a2a/tasks/{task_id}", headers=bob)).status_code == 404
        assert (await http.post(f"/a2a/tasks/{task_id}/cancel", headers=bob)).status_code == 404
        listed = await http.post("/a2a", json=rpc("ListTasks", {}), headers={**bob, **V1})
        assert listed.json()["result"]["tasks"] == []
        got = await http.post("/a2a", json=rpc("tasks/get", {"id": task_id}), headers=bob)
        assert got.json()["error"]["code"] == -32001


async def test_list_tasks_pages_newest_first(app_client):
    ids = []
    for n in range(3):
        ids.append(
            (await send(app_client, {"agent_id": "assistant", "message": f"n{n}"}))["task_id"]
        )
    first = (
        await app_client.post("/a2a", json=rpc("ListTasks", {"pageSize": 2}), headers=V1)
    ).json()
    page = first["result"]
    assert [t["id"] for t in page["tasks"]] == [ids[2], ids[1]]
    assert page["totalSize"] == 3 and page["nextPageToken"]
    params = {"pageSize": 2, "pageToken": page["nextPageToken"]}
    second = (await app_client.post("/a2a", json=rpc("ListTasks", params), headers=V1)).json()
    assert [t["id"] for t in second["result"]["tasks"]] == [ids[0]]
    assert not second["result"].get("nextPageToken")
    done = {"status": "TASK_STATE_COMPLETED"}
    filtered = (await app_client.post("/a2a", json=rpc("ListTasks", done), headers=V1)).json()
    assert len(filtered["result"]["tasks"]) == 3
    bad = {"pageToken": "not-a-token"}
    refused = (await app_client.post("/a2a", json=rpc("ListTasks", bad), headers=V1)).json()
    assert refused["error"]["code"] == -32602


async def test_a_message_without_text_is_rejected(app_client):
    params = {"message": {**message_03("x"), "parts": [{"kind": "data", "data": {"a": 1}}]}}
    task = (await app_client.post("/a2a", json=rpc("message/send", params))).json()["result"]
    assert task["status"]["state"] == "rejected"
    assert "text" in task["status"]["message"]["parts"][0]["text"]


async def test_streams_are_limited_and_released(make_runtime, monkeypatch):
    from fangwire_a2a import server as a2a_server

    monkeypatch.setattr(a2a_server, "MAX_STREAMS", 1)
    async with slow_model() as (_, config):
        runtime = make_runtime(config, environ=SLOW_ENV)
        app = create_app(runtime)
        async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
            slow = await spawn_slow(runtime)
            body = rpc("message/stream", {"message": message_03("long")})
            with anyio.fail_after(15):
                async with http.stream("POST", f"/a2a/agents/{slow.id}", json=body) as first:
                    # Keep the line iterator referenced: a collected one closes the stream.
                    lines = first.aiter_lines()
                    async for line in lines:
                        if line.startswith("data:"):
                            opened = json.loads(line[5:])["result"]
                            break
                    assert opened["kind"] == "task"
                    second = await http.post(
                        "/a2a", json=rpc("message/stream", {"message": message_03("x")})
                    )
                    assert second.status_code == 429
                    assert second.json()["error"]["code"] == "a2a_stream_limit"
                    plain = await http.post(
                        "/a2a", json=rpc("message/send", {"message": message_03("y")})
                    )
                    assert plain.json()["result"]["status"]["state"] == "completed"
                server = runtime.transports["a2a"].server
                while server.open_streams:
                    await anyio.sleep(0.02)
                async with http.stream(
                    "POST", "/a2a", json=rpc("message/stream", {"message": message_03("z")})
                ) as third:
                    assert third.status_code == 200
                    events = await read_events(third, 10)
    assert events[-1]["data"]["result"]["status"]["state"] == "completed"


async def test_0_3_resubscribe_follows_a_running_task_to_its_cancellation(make_runtime):
    async with slow_model() as (_, config):
        runtime = make_runtime(config, environ=SLOW_ENV)
        async with live_server(create_app(runtime)) as url, httpx.AsyncClient(base_url=url) as http:
            slow = await spawn_slow(runtime)
            endpoint = f"/a2a/agents/{slow.id}"
            params = {"message": message_03("wait"), "configuration": {"blocking": False}}
            started = (await http.post(endpoint, json=rpc("message/send", params))).json()
            task_id = started["result"]["id"]
            assert started["result"]["status"]["state"] in ("submitted", "working")
            body = rpc("tasks/resubscribe", {"id": task_id}, id_=7)
            with anyio.fail_after(15):
                async with http.stream("POST", endpoint, json=body) as stream:
                    lines = stream.aiter_lines()  # kept referenced: see the stream-limit test
                    events = []
                    async for line in lines:
                        if line.startswith("data:"):
                            events.append(json.loads(line[5:]))
                            if len(events) == 1:
                                cancel = rpc("tasks/cancel", {"id": task_id})
                                done = (await http.post(endpoint, json=cancel)).json()
                                assert done["result"]["status"]["state"] == "canceled"
                            if events[-1]["result"].get("final"):
                                break
    assert events[0]["id"] == 7 and events[0]["result"]["id"] == task_id
    assert events[-1]["result"]["status"]["state"] == "canceled"


async def test_configured_identity_public_url_and_default_agent(make_runtime, make_client):
    runtime = make_runtime(
        '[a2a]\nname = "edge"\ndescription = "the edge node"\n'
        'public_url = "https://agents.example/"\ndefault_agent = "helper"\n'
    )
    async with make_client(runtime) as http:
        unavailable = await http.post(
            "/a2a", json=rpc("message/send", {"message": message_03("x")})
        )
        assert unavailable.status_code == 503
        assert unavailable.json()["error"]["code"] == "a2a_no_agent"
        await runtime.agents.spawn(
            AgentSpec(name="helper", provider="echo", model="echo-1"), actor="t"
        )
        card = (await http.get("/.well-known/agent-card.json")).json()
        assert card["name"] == "edge" and card["description"] == "the edge node"
        assert card["url"] == "https://agents.example/a2a"
        listed = (await http.get("/a2a/agents")).json()["items"]
        assert all(c["url"].startswith("https://agents.example/a2a/agents/") for c in listed)
        sent = await http.post("/a2a", json=rpc("message/send", {"message": message_03("hi")}))
        task = sent.json()["result"]
        rest = (await http.get(f"/a2a/tasks/{task['id']}")).json()
        helper = await runtime.agents.find("helper")
        assert rest["agent_id"] == helper.id
