"""fangwire as an A2A client, against real ``a2a-sdk`` servers on 127.0.0.1: discovery through the
outbound guard (loopback needs the allowlist entry), approval, version negotiation, send, poll,
audit."""

from __future__ import annotations

import anyio
import pytest

from fangwire.app import create_app
from fangwire.testing.live import live_server
from tests.a2a.legacy_peer import legacy_app
from tests.a2a.peers import LatePeer, PeerExecutor, running_peer

pytestmark = pytest.mark.anyio

LOOPBACK = '[a2a]\nallow_hosts = ["127.0.0.1"]\n'


async def discover(http, url, status=202):
    response = await http.post("/api/a2a/discover", json={"url": url})
    assert response.status_code == status, response.text
    return response.json()


async def approve(http, agent_id):
    response = await http.post(f"/api/a2a/agents/{agent_id}/approve")
    assert response.status_code == 200, response.text
    return response.json()


async def test_loopback_peers_are_refused_without_an_allowlist_entry(runtime, app_client):
    async with running_peer() as url:
        response = await app_client.post("/api/a2a/discover", json={"url": url})
    assert response.status_code == 400
    body = response.json()["error"]
    assert body["code"] == "a2a_ssrf_blocked" and "127.0.0.1" in body["message"]
    assert (await app_client.get("/api/a2a/agents")).json()["total"] == 0
    security = (await app_client.get("/api/security")).json()
    assert security["security_systems"]["ssrf_protection"] == "active"


@pytest.mark.parametrize(
    ("versions", "compat", "spoken"),
    [
        (("1.0",), False, "1.0"),
        (("1.0", "0.3"), True, "1.0"),
        (("0.3",), True, "0.3"),
    ],
    ids=["1.0-only", "1.0-with-0.3-compat", "0.3-only"],
)
async def test_discover_approve_send_poll(make_runtime, make_client, versions, compat, spoken):
    runtime = make_runtime(LOOPBACK)
    executor = PeerExecutor()
    async with (
        running_peer(versions=versions, compat=compat, executor=executor) as url,
        make_client(runtime) as http,
    ):
        found = await discover(http, url)
        assert found["status"] == "pending" and found["url"] == url
        assert found["protocol"] == spoken and found["name"] == "sdk peer"
        assert found["agent"]["endpoint"] == f"{url}/rpc"
        assert found["agent"]["skills"] == [{"id": "echo", "name": "echo", "description": "echoes"}]

        early = await http.post("/api/a2a/send", json={"agent_id": found["id"], "message": "hi"})
        assert early.status_code == 403
        assert early.json()["error"]["code"] == "a2a_agent_pending_approval"
        assert executor.inputs == []

        trusted = await approve(http, found["id"])
        assert trusted["status"] == "trusted"
        listed = (await http.get("/api/a2a/agents")).json()
        assert [(a["id"], a["status"]) for a in listed["agents"]] == [(found["id"], "trusted")]
        one = (await http.get(f"/api/a2a/agents/{found['id']}")).json()
        assert one["card"]["name"] == "sdk peer"

        sent = await http.post(
            "/api/a2a/send",
            json={"agent_id": found["id"], "message": {"role": "user", "parts": [{"text": "hi"}]}},
        )
        assert sent.status_code == 200, sent.text
        task = sent.json()
        assert task["status"] == "completed" and task["protocol"] == spoken
        assert task["result"] == {"role": "agent", "parts": [{"type": "text", "text": "peer: hi"}]}
        assert executor.inputs == ["hi"]

        polled = await http.get(f"/api/a2a/tasks/{task['task_id']}/status")
        assert polled.status_code == 200
        assert polled.json()["status"] == "completed"
        assert polled.json()["result"] == task["result"]

        by_url = await http.post("/api/a2a/send", json={"url": url, "message": "again"})
        assert by_url.json()["result"]["parts"][0]["text"] == "peer: again"

        audit = (await http.get("/api/audit/recent?limit=50")).json()["entries"]
        kinds = {e["event_type"] for e in audit}
        assert {"a2a_discovered", "a2a_trusted", "a2a_send", "a2a_poll"} <= kinds


async def test_an_http_json_only_agent_is_spoken_to_over_rest(make_runtime, make_client):
    runtime = make_runtime(LOOPBACK)
    async with running_peer(binding="HTTP+JSON") as url, make_client(runtime) as http:
        found = await discover(http, url)
        assert found["protocol"] == "1.0" and found["agent"]["endpoint"] == f"{url}/rest"
        await approve(http, found["id"])
        sent = (await http.post("/api/a2a/send", json={"url": url, "message": "rest"})).json()
        assert sent["result"]["parts"][0]["text"] == "peer: rest"
        polled = (await http.get(f"/api/a2a/tasks/{sent['task_id']}/status")).json()
        assert polled["status"] == "completed"


async def test_a_slow_task_is_polled_to_completion(make_runtime, make_client):
    runtime = make_runtime(LOOPBACK)
    async with (
        running_peer(executor=PeerExecutor(delay=0.5)) as url,
        make_client(runtime) as http,
    ):
        agent = await discover(http, url)
        await approve(http, agent["id"])
        sent = await http.post(
            "/api/a2a/send", json={"agent_id": agent["id"], "message": "later", "wait": False}
        )
        task = sent.json()
        assert task["status"] in ("submitted", "working"), task
        with anyio.fail_after(10):
            while True:
                polled = (await http.get(f"/api/a2a/tasks/{task['task_id']}/status")).json()
                if polled["status"] == "completed":
                    break
                await anyio.sleep(0.05)
        assert polled["result"]["parts"][0]["text"] == "peer: later"


async def test_the_legacy_card_path_is_tried_second(make_runtime, make_client):
    runtime = make_runtime(LOOPBACK)
    async with (
        running_peer(card_paths=("/.well-known/agent.json",)) as url,
        make_client(runtime) as http,
    ):
        found = await discover(http, url)
        assert found["protocol"] == "1.0"
        again = await discover(http, f"{url}/.well-known/agent.json", status=200)
        assert again["id"] == found["id"] and again["status"] == "pending"


async def test_fangwire_discovers_fangwire(make_runtime, make_client, tmp_path):
    peer_runtime = make_runtime()
    async with live_server(create_app(peer_runtime)) as url:
        runtime = make_runtime(LOOPBACK)
        async with make_client(runtime) as http:
            found = await discover(http, url)
            assert found["protocol"] == "1.0" and found["name"] == "fangwire"
            await approve(http, found["id"])
            sent = await http.post("/api/a2a/send", json={"url": url, "message": "hello peer"})
            assert sent.json()["result"]["parts"][0]["text"] == "echo: hello peer"


async def test_discovery_failures_are_named(make_runtime, make_client):
    runtime = make_runtime(LOOPBACK + "max_card_bytes = 600\n")
    async with make_client(runtime) as http:
        async with running_peer(description="x" * 2000) as big:
            response = await http.post("/api/a2a/discover", json={"url": big})
            assert response.status_code == 400
            assert (
                "exceeds" in response.json()["error"]["message"]
                or "declares" in (response.json()["error"]["message"])
            )
        async with running_peer(card_paths=()) as empty:
            response = await http.post("/api/a2a/discover", json={"url": empty})
            assert response.status_code == 502
            assert "HTTP 404" in response.json()["error"]["message"]
        for body, code in [
            ({}, "a2a_missing_url"),
            ({"url": "ftp://x"}, "a2a_invalid_url"),
            ({"url": 3}, "invalid_input"),
        ]:
            response = await http.post("/api/a2a/discover", json=body)
            assert response.status_code == 400 and response.json()["error"]["code"] == code
        blocked = await http.post("/api/a2a/discover", json={"url": "http://169.254.169.254/"})
        assert blocked.status_code == 400
        assert blocked.json()["error"]["code"] == "a2a_ssrf_blocked"


async def test_redirects_are_not_followed(make_runtime, make_client):
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Route

    async def moved(request):
        return RedirectResponse("http://169.254.169.254/latest/meta-data", status_code=302)

    app = Starlette(routes=[Route("/.well-known/{name}", moved)])
    runtime = make_runtime(LOOPBACK)
    async with live_server(app) as url, make_client(runtime) as http:
        response = await http.post("/api/a2a/discover", json={"url": url})
    assert response.status_code == 502
    assert "redirect (302) not followed" in response.json()["error"]["message"]


async def test_a_name_taken_by_another_url_conflicts(make_runtime, make_client):
    runtime = make_runtime(LOOPBACK)
    async with (
        running_peer() as first,
        running_peer() as second,
        make_client(runtime) as http,
    ):
        await discover(http, first)
        response = await http.post("/api/a2a/discover", json={"url": second})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "a2a_name_conflict"


async def test_send_and_poll_errors(make_runtime, make_client):
    runtime = make_runtime(LOOPBACK)
    async with make_client(runtime) as http:
        for body, status in [
            ({"message": "x"}, 400),
            ({"agent_id": "ghost", "message": "x"}, 404),
            ({"agent_id": "ghost"}, 400),
            ({"url": "not a url", "message": "x"}, 400),
            ({"agent_id": "ghost", "message": "x", "wait": "no"}, 400),
        ]:
            response = await http.post("/api/a2a/send", json=body)
            assert response.status_code == status, (body, response.text)
        missing = await http.get("/api/a2a/tasks/unknown/status")
        assert missing.status_code == 404
        assert (await http.get("/api/a2a/agents/ghost")).status_code == 404
        assert (await http.post("/api/a2a/agents/ghost/approve")).status_code == 404


async def test_a_0_1_agent_gets_tasks_send(make_runtime, make_client):
    holder = LatePeer()
    runtime = make_runtime(LOOPBACK)
    async with live_server(holder) as url, make_client(runtime) as http:
        holder.app = legacy = legacy_app(url)
        found = await discover(http, url)
        assert found["protocol"] == "0.1" and found["agent"]["endpoint"] == f"{url}/a2a"
        await approve(http, found["id"])
        sent = (await http.post("/api/a2a/send", json={"url": url, "message": "old"})).json()
        assert sent["status"] == "completed" and sent["protocol"] == "0.1"
        assert sent["result"]["parts"] == [{"type": "text", "text": "legacy: old"}]
        polled = (await http.get(f"/api/a2a/tasks/{sent['task_id']}/status")).json()
        assert polled["status"] == "completed"
        gone = await http.get(f"/api/a2a/tasks/unknown/status?url={url}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "a2a_remote_not_found"
    assert legacy.state.calls == ["tasks/send", "tasks/get", "tasks/get"]
