"""Agents: the default assistant, spawning, capability inheritance, messages, failures."""

from __future__ import annotations

import json

import anyio
import pytest

from fangwire.testing.fake_openai import create_fake_openai
from fangwire.testing.fixtures import serve_client
from fangwire.testing.live import live_server

pytestmark = pytest.mark.anyio


async def audit_kinds(runtime) -> list[tuple[str, str]]:
    entries, _ = await runtime.audit.log.recent(100)
    return [(e.event_type, e.outcome) for e in reversed(entries)]


async def test_a_fresh_home_has_the_assistant_and_it_survives_restart(make_runtime):
    async with serve_client(make_runtime()) as http:
        agents = (await http.get("/api/agents")).json()["agents"]
    assert [(a["name"], a["provider"], a["state"]) for a in agents] == [
        ("assistant", "echo", "running")
    ]
    async with serve_client(make_runtime()) as http:
        again = (await http.get("/api/agents")).json()["agents"]
    assert [a["id"] for a in again] == [agents[0]["id"]]


async def test_spawn_message_and_kill(runtime):
    async with serve_client(runtime) as http:
        created = await http.post(
            "/api/agents",
            json={"name": "helper", "provider": "echo", "model": "echo-1", "skills": ["math"]},
        )
        assert created.status_code == 201, created.text
        agent = created.json()
        assert (await http.get(f"/api/agents/{agent['id']}")).json()["skills"] == ["math"]
        reply = await http.post(f"/api/agents/{agent['id']}/message", json={"message": "hi there"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["response"] == "echo: hi there"
        assert body["input_tokens"] > 0 and body["output_tokens"] > 0
        assert body["cost_usd"] > 0  # echo is priced like any model missing from the catalog
        totals = await runtime.usage.totals("day")
        assert totals["request_count"] == 1
        history = await runtime.agents.history(agent["id"])
        assert [m.role for m in history] == ["user", "assistant"]
        killed = await http.delete(f"/api/agents/{agent['id']}")
        assert killed.json()["status"] == "terminated"
        gone = await http.post(f"/api/agents/{agent['id']}/message", json={"message": "hi"})
        assert gone.status_code == 404
        assert (await http.delete(f"/api/agents/{agent['id']}")).status_code == 404
        kinds = await audit_kinds(runtime)
    assert ("agent_spawned", "ok") in kinds and ("agent_terminated", "ok") in kinds


async def test_spawn_from_a_manifest(runtime):
    manifest = (
        'name = "writer"\nsystem_prompt = "Be brief."\n[model]\nprovider = "echo"\nmodel = "e"\n'
    )
    async with serve_client(runtime) as http:
        created = await http.post("/api/agents", json={"manifest_toml": manifest})
        assert created.status_code == 201, created.text
        assert created.json()["system_prompt"] == "Be brief."
        bad = await http.post("/api/agents", json={"manifest_toml": "name = "})
        assert bad.status_code == 400
        assert "manifest_toml" in bad.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"provider": "echo", "model": "m"}, "name: missing required key"),
        ({"name": "x", "provider": "nope", "model": "m"}, "provider: unknown provider 'nope'"),
        ({"name": "x", "provider": "echo", "model": "m", "tools": "all"}, "tools"),
        ({"name": "x", "provider": "echo", "model": "m", "limits": {"daily_limit_usd": -1}},
         "daily_limit_usd"),
        ({"name": " ", "provider": "echo", "model": "m"}, "name: must be 1-100 characters"),
    ],
)  # fmt: skip
async def test_bad_spawns_are_400(runtime, body, fragment):
    async with serve_client(runtime) as http:
        response = await http.post("/api/agents", json=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


async def test_children_never_exceed_their_parent(runtime):
    async with serve_client(runtime) as http:
        parent = (
            await http.post(
                "/api/agents",
                json={"name": "parent", "provider": "echo", "model": "m",
                      "tools": ["search", "read"], "limits": {"daily_limit_usd": 1.0}},
            )
        ).json()  # fmt: skip
        base = {"provider": "echo", "model": "m", "parent_id": parent["id"]}
        wider_tools = await http.post(
            "/api/agents", json={**base, "name": "c1", "tools": ["search", "shell"],
                                 "limits": {"daily_limit_usd": 0.5}}
        )  # fmt: skip
        assert wider_tools.status_code == 403
        assert "tool 'shell'" in wider_tools.json()["error"]["message"]
        unlimited = await http.post("/api/agents", json={**base, "name": "c2", "tools": ["read"]})
        assert unlimited.status_code == 403
        assert "daily_limit_usd" in unlimited.json()["error"]["message"]
        fine = await http.post(
            "/api/agents", json={**base, "name": "c3", "tools": ["read"],
                                 "limits": {"daily_limit_usd": 0.25}}
        )  # fmt: skip
        assert fine.status_code == 201
        orphan = await http.post("/api/agents", json={**base, "name": "c4", "parent_id": "nope"})
        assert orphan.status_code == 404
        report = (await http.get("/api/security")).json()
        assert ("capability_denied", "denied") in await audit_kinds(runtime)
    assert report["details"]["capability_inheritance_validation"]["denials"] == 2


async def test_bad_messages(runtime):
    async with serve_client(runtime) as http:
        agent = (await http.get("/api/agents")).json()["agents"][0]
        url = f"/api/agents/{agent['id']}/message"
        assert (await http.post(url, json={"message": ""})).status_code == 400
        assert (await http.post(url, json={"text": "hi"})).status_code == 400
        assert (
            await http.post("/api/agents/nope/message", json={"message": "x"})
        ).status_code == 404


async def test_a_failed_model_call_is_a_502_not_an_empty_success(make_runtime):
    runtime = make_runtime('[providers.openai]\nbase_url = "http://127.0.0.1:9/v1"\n')
    async with serve_client(runtime) as http:
        agent = (
            await http.post("/api/agents", json={"name": "o", "provider": "openai", "model": "m"})
        ).json()
        async with runtime.bus.subscribe("agent_message") as events:
            reply = await http.post(f"/api/agents/{agent['id']}/message", json={"message": "hi"})
            with anyio.fail_after(5):
                event = await events.receive()
        totals = await runtime.usage.totals("day")
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "model_error"
    assert "error" in event.payload
    assert totals["request_count"] == 0


async def test_an_openai_compatible_agent_through_the_documented_api(make_runtime):
    fake = create_fake_openai(api_key="sk-test-0123456789", models={"gpt-4o-mini"})
    async with live_server(fake) as base:
        runtime = make_runtime(
            f'[providers.openai]\nbase_url = "{base}/v1"\napi_key_env = "TEST_OPENAI_KEY"\n',
            environ={"TEST_OPENAI_KEY": "sk-test-0123456789"},
        )
        async with serve_client(runtime) as http:
            agent = (
                await http.post(
                    "/api/agents",
                    json={"name": "gpt", "provider": "openai", "model": "gpt-4o-mini",
                          "system_prompt": "You are terse."},
                )
            ).json()  # fmt: skip
            reply = await http.post(f"/api/agents/{agent['id']}/message", json={"message": "ping"})
            by_model = await runtime.usage.by_model()
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["response"].endswith("ping")
    sent = [r for r in fake.requests if r.get("path", "").endswith("/chat/completions")][-1]
    assert json.dumps(sent).count("You are terse.") == 1
    model = next(m for m in by_model["models"] if m["model"] == "gpt-4o-mini")
    assert model["provider"] == "openai"
    assert model["input_tokens"] == body["input_tokens"]


async def test_messages_are_refused_once_the_budget_is_spent(runtime):
    async with serve_client(runtime) as http:
        agent = (await http.get("/api/agents")).json()["agents"][0]
        url = f"/api/agents/{agent['id']}/message"
        assert (await http.put("/api/budget", json={"daily_limit_usd": 0.0})).status_code == 200
        refused = await http.post(url, json={"message": "hello"})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert (await runtime.usage.totals("day"))["request_count"] == 0
        kinds = await audit_kinds(runtime)
        assert ("budget_exceeded", "denied") in kinds
        assert (await http.put("/api/budget", json={"daily_limit_usd": None})).status_code == 200
        assert (await http.post(url, json={"message": "hello"})).status_code == 200
