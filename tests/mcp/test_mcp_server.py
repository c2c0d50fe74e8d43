"""``/mcp``: fangwire as an MCP server, driven by the official Python ``mcp`` client in both
protocol eras, plus raw HTTP probes for what the SDK never sends."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client, MCPError
from mcp_types import PromptReference
from mcp_types.methods import validate_server_result

from fangwire.app import create_app
from fangwire.auth import Principal, Role
from fangwire.runtime import Runtime
from fangwire.testing.live import live_server
from fangwire_mcp.plugin import server_of
from tests.mcp.conftest import EVERYTHING, require_peers

TIMEOUT = 60
MODERN = "2026-07-28"
ACCEPT = {"accept": "application/json, text/event-stream"}


@pytest.fixture
async def base_url(mcp_runtime: Runtime) -> AsyncIterator[str]:
    async with live_server(create_app(mcp_runtime)) as url:
        yield url


async def add_everything(http: httpx.AsyncClient, base_url: str) -> None:
    require_peers()
    body = {"name": "everything", "transport": "stdio", "command": str(EVERYTHING)}
    assert (await http.post(f"{base_url}/api/mcp/servers", json=body)).status_code == 201
    while True:
        server = (await http.get(f"{base_url}/api/mcp/servers/everything")).json()
        if server["status"] == "ready":
            return
        await anyio.sleep(0.05)


@pytest.mark.parametrize(("mode", "version"), [("auto", MODERN), ("legacy", "2025-11-25")])
@pytest.mark.anyio
async def test_official_client_lists_and_calls_tools(
    base_url: str, mode: str, version: str
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            await add_everything(http, base_url)
        async with Client(f"{base_url}/mcp", mode=mode) as client:
            assert client.protocol_version == version
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert {"fangwire_list_agents", "fangwire_send_agent_message"} <= set(tools)
            assert "mcp_everything_echo" in tools
            assert tools["mcp_everything_get_sum"].input_schema["type"] == "object"
            echoed = await client.call_tool("mcp_everything_echo", {"message": "hi"})
            assert echoed.is_error is False
            assert echoed.content[0].text == "Echo: hi"  # type: ignore[union-attr]
            agents = await client.call_tool("fangwire_list_agents", {})
            assert agents.is_error is False
            assert agents.structured_content is not None
            assert "assistant" in {a["name"] for a in agents.structured_content["agents"]}
            reply = await client.call_tool(
                "fangwire_send_agent_message", {"agent": "assistant", "message": "ping"}
            )
            assert reply.is_error is False, reply
            bad_args = await client.call_tool("fangwire_send_agent_message", {"agent": "x"})
            assert bad_args.is_error is True
            assert "message" in bad_args.content[0].text  # type: ignore[union-attr]
            with pytest.raises(MCPError) as unknown:
                await client.call_tool("no_such_tool", {})
            assert unknown.value.code == -32602


async def post(
    http: httpx.AsyncClient, url: str, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await http.post(
        url,
        content=content,
        headers={**ACCEPT, "content-type": "application/json", **(headers or {})},
    )


def initialize(version: str = "2025-11-25") -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "probe", "version": "1"},
        },
    }


@pytest.mark.anyio
async def test_legacy_sessions_over_raw_http(base_url: str) -> None:
    url = f"{base_url}/mcp"
    with anyio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            init = await post(http, url, initialize())
            assert init.status_code == 200
            assert init.json()["result"]["protocolVersion"] == "2025-11-25"
            validate_server_result("initialize", "2025-11-25", init.json()["result"])
            session = init.headers["mcp-session-id"]
            assert len(session) >= 24
            old = await post(http, url, initialize("2024-11-05"))
            assert old.json()["result"]["protocolVersion"] == "2024-11-05"
            future = await post(http, url, initialize("2099-01-01"))
            assert future.json()["result"]["protocolVersion"] == "2025-11-25"
            headers = {"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            accepted = await post(http, url, note, headers)
            assert accepted.status_code == 202 and accepted.content == b""
            listed = await post(
                http, url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers
            )
            assert listed.status_code == 200
            assert listed.headers["content-type"].startswith("application/json")
            result = listed.json()["result"]
            validate_server_result("tools/list", "2025-11-25", result)
            ping = await post(http, url, {"jsonrpc": "2.0", "id": 3, "method": "ping"}, headers)
            assert ping.json() == {"jsonrpc": "2.0", "id": 3, "result": {}}
            unknown = await post(http, url, {"jsonrpc": "2.0", "id": 4, "method": "nope"}, headers)
            assert unknown.json()["error"]["code"] == -32601
            bad_params = await post(
                http,
                url,
                {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {}},
                headers,
            )
            assert bad_params.json()["error"]["code"] == -32602
            no_session = await post(http, url, {"jsonrpc": "2.0", "id": 6, "method": "tools/list"})
            assert no_session.status_code == 400
            wrong = await post(
                http,
                url,
                {"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
                {"mcp-session-id": "not-a-session"},
            )
            assert wrong.status_code == 404
            bad_version = await post(
                http,
                url,
                {"jsonrpc": "2.0", "id": 8, "method": "tools/list"},
                {"mcp-session-id": session, "mcp-protocol-version": "1999-01-01"},
            )
            assert bad_version.status_code == 400
            ended = await http.delete(url, headers={"mcp-session-id": session})
            assert ended.status_code == 204
            after = await post(
                http, url, {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, headers
            )
            assert after.status_code == 404
            assert (await http.delete(url, headers={"mcp-session-id": session})).status_code == 404
            assert (await http.get(url, headers=ACCEPT)).status_code == 405


@pytest.mark.anyio
async def test_json_rpc_errors(base_url: str) -> None:
    url = f"{base_url}/mcp"
    with anyio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            parse = await post(http, url, b"{not json")
            assert parse.status_code == 400
            assert parse.json() == {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32700, "message": "Parse error: the body is not valid JSON"},
            }
            batch = await post(http, url, [initialize()])
            assert batch.json()["error"]["code"] == -32600
            no_version = await post(http, url, {"id": 1, "method": "ping"})
            assert no_version.json()["error"]["code"] == -32600
            bad_id = await post(http, url, {"jsonrpc": "2.0", "id": None, "method": "ping"})
            assert bad_id.json()["error"]["code"] == -32600
            origin = await post(http, url, initialize(), {"origin": "https://evil.example"})
            assert origin.status_code == 403


def modern(method: str, params: dict[str, Any] | None = None, id_: int = 1) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    return {
        "jsonrpc": "2.0",
        "id": id_,
        "method": method,
        "params": {**(params or {}), "_meta": meta},
    }


def modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    headers = {"mcp-protocol-version": MODERN, "mcp-method": method}
    if name is not None:
        headers["mcp-name"] = name
    return headers


@pytest.mark.anyio
async def test_stateless_era_over_raw_http(base_url: str) -> None:
    url = f"{base_url}/mcp"
    with anyio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            discover = await post(
                http, url, modern("server/discover"), modern_headers("server/discover")
            )
            assert discover.status_code == 200
            result = discover.json()["result"]
            assert result["supportedVersions"] == [MODERN]
            assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "fangwire"
            validate_server_result("server/discover", MODERN, result)
            listed = await post(http, url, modern("tools/list"), modern_headers("tools/list"))
            validate_server_result("tools/list", MODERN, listed.json()["result"])
            call = modern("tools/call", {"name": "fangwire_list_channels", "arguments": {}})
            called = await post(
                http, url, call, modern_headers("tools/call", "fangwire_list_channels")
            )
            assert called.status_code == 200, called.text
            validate_server_result("tools/call", MODERN, called.json()["result"])
            mismatch = await post(http, url, call, modern_headers("tools/call", "other_tool"))
            assert mismatch.status_code == 400
            assert mismatch.json()["error"]["code"] == -32020
            wrong_method = await post(http, url, modern("tools/list"), modern_headers("tools/call"))
            assert wrong_method.json()["error"]["code"] == -32020
            future = modern("tools/list")
            future["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2099-01-01"
            unsupported = await post(
                http,
                url,
                future,
                {"mcp-protocol-version": "2099-01-01", "mcp-method": "tools/list"},
            )
            assert unsupported.status_code == 400
            error = unsupported.json()["error"]
            assert error["code"] == -32022
            assert error["data"] == {"supported": [MODERN], "requested": "2099-01-01"}
            unknown = await post(http, url, modern("nope/nope"), modern_headers("nope/nope"))
            assert unknown.status_code == 404
            assert unknown.json()["error"]["code"] == -32601
            note = {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": modern("x")["params"],
            }
            assert (
                await post(http, url, note, modern_headers("notifications/cancelled"))
            ).status_code == 202


@pytest.mark.anyio
async def test_tools_are_filtered_by_role(base_url: str, mcp_runtime: Runtime) -> None:
    with anyio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            await add_everything(http, base_url)
        server = server_of(mcp_runtime)
        viewer = {t["name"] for t in server.tool_definitions(Role.VIEWER)}
        user = {t["name"] for t in server.tool_definitions(Role.USER)}
        admin = {t["name"] for t in server.tool_definitions(Role.ADMIN)}
        assert "fangwire_list_agents" in viewer
        assert "fangwire_send_agent_message" not in viewer
        assert not any(name.startswith("mcp_") for name in viewer)
        assert "fangwire_send_agent_message" in user and "mcp_everything_echo" in user
        assert "fangwire_verify_audit" in admin and "fangwire_verify_audit" not in user
        assert server.prompt_definitions(Role.VIEWER) == []
        assert server.resource_definitions(Role.VIEWER) == []
        assert server.prompt_definitions(Role.USER) and server.resource_definitions(Role.USER)
        watcher = Principal(subject="watcher", role=Role.VIEWER, provider="test")
        from fangwire_mcp.server import RpcError

        with pytest.raises(RpcError) as hidden:
            await server.call_tool(
                {"name": "mcp_everything_echo", "arguments": {}}, watcher, modern=False
            )
        assert hidden.value.code == -32602
        owner = Principal(subject="boss", role=Role.OWNER, provider="test")
        verified = await server.call_tool({"name": "fangwire_verify_audit"}, owner, modern=False)
        assert verified["structuredContent"]["status"] == "valid"


@pytest.mark.anyio
async def test_credentials_are_required(make_runtime: Any, tmp_path: Any) -> None:
    runtime = make_runtime('api_key = "mcp-key-0123456789abcdef"\n')
    async with live_server(create_app(runtime)) as url, httpx.AsyncClient() as http:
        with anyio.fail_after(TIMEOUT):
            refused = await post(http, f"{url}/mcp", initialize())
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == -32000
            assert refused.json()["error"]["data"]["code"] == "unauthorized"
            headers = {"authorization": "Bearer mcp-key-0123456789abcdef"}
            accepted = await post(http, f"{url}/mcp", initialize(), headers)
            assert accepted.status_code == 200
            too_big = await post(
                http, f"{url}/mcp", b"[" + b" " * (2 * 1024 * 1024) + b"]", headers
            )
            assert too_big.status_code == 413
            assert too_big.json()["jsonrpc"] == "2.0"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.anyio
async def test_progress_of_a_proxied_tool_is_streamed(base_url: str, mode: str) -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    with anyio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            await add_everything(http, base_url)
        async with Client(f"{base_url}/mcp", mode=mode) as client:
            result = await client.call_tool(
                "mcp_everything_trigger_long_running_operation",
                {"duration": 0.3, "steps": 3},
                progress_callback=on_progress,
            )
    assert result.is_error is False
    assert [p for p, _ in seen] == [1, 2, 3]
    assert {t for _, t in seen} == {3}


@pytest.mark.anyio
async def test_log_notifications_follow_the_session_level(base_url: str) -> None:
    url = f"{base_url}/mcp"
    with anyio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            session = (await post(http, url, initialize())).headers["mcp-session-id"]
            headers = {"mcp-session-id": session}
            bad = await post(
                http,
                url,
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "logging/setLevel",
                    "params": {"level": "loud"},
                },
                headers,
            )
            assert bad.json()["error"]["code"] == -32602
            ok = await post(
                http,
                url,
                {
                    "jsonrpc": "2.0",
                    "id": 3,
                    "method": "logging/setLevel",
                    "params": {"level": "info"},
                },
                headers,
            )
            assert ok.json()["result"] == {}
            call = {
                "jsonrpc": "2.0",
                "id": 4,
                "method": "tools/call",
                "params": {"name": "fangwire_list_channels", "arguments": {}},
            }
            streamed = await post(http, url, call, headers)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[len("data: ") :])
        for line in streamed.text.splitlines()
        if line.startswith("data: ")
    ]
    assert events[-1]["id"] == 4 and events[-1]["result"]["isError"] is False


@pytest.mark.anyio
async def test_send_to_a_channel_and_unknown_channel(base_url: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(f"{base_url}/mcp", mode="auto") as client:
            sent = await client.call_tool(
                "fangwire_send_channel_message",
                {"channel": "test", "target": "room-1", "text": "hello from MCP"},
            )
            missing = await client.call_tool(
                "fangwire_send_channel_message",
                {"channel": "nope", "target": "room-1", "text": "x"},
            )
            channels = await client.call_tool("fangwire_list_channels", {})
            usage = await client.call_tool("fangwire_usage_summary", {})
    assert sent.is_error is False
    assert sent.structured_content is not None
    assert sent.structured_content["channel"] == "test"
    assert sent.structured_content["target"] == "room-1"
    assert len(sent.structured_content["message_ids"]) == 1
    assert missing.is_error is True
    assert "nope" in missing.content[0].text  # type: ignore[union-attr]
    assert channels.structured_content is not None
    assert "test" in {c["name"] for c in channels.structured_content["channels"]}
    assert usage.is_error is False


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.anyio
async def test_prompts_of_connected_servers_are_proxied(base_url: str, mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            await add_everything(http, base_url)
        async with Client(f"{base_url}/mcp", mode=mode) as client:
            prompts = {p.name: p for p in (await client.list_prompts()).prompts}
            assert "mcp_everything_simple_prompt" in prompts
            args_prompt = prompts["mcp_everything_args_prompt"]
            assert args_prompt.arguments is not None
            assert "city" in {a.name for a in args_prompt.arguments}
            simple = await client.get_prompt("mcp_everything_simple_prompt")
            assert simple.messages[0].role == "user"
            rendered = await client.get_prompt("mcp_everything_args_prompt", {"city": "Lyon"})
            assert "Lyon" in rendered.messages[0].content.text  # type: ignore[union-attr]
            with pytest.raises(MCPError) as unknown:
                await client.get_prompt("mcp_nope_nope")
            assert unknown.value.code == -32602


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.anyio
async def test_resources_of_connected_servers_are_proxied(base_url: str, mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            await add_everything(http, base_url)
        async with Client(f"{base_url}/mcp", mode=mode) as client:
            resources = (await client.list_resources()).resources
            assert resources, "server-everything lists resources"
            first = resources[0]
            read = await client.read_resource(str(first.uri))
            assert read.contents and str(read.contents[0].uri) == str(first.uri)
            templates = (await client.list_resource_templates()).resource_templates
            assert templates, "server-everything lists resource templates"
            concrete = re.sub(r"\{[^}]+\}", "1", templates[0].uri_template)
            from_template = await client.read_resource(concrete)
            assert from_template.contents
            with pytest.raises(MCPError) as missing:
                await client.read_resource("nowhere://nothing")
    assert missing.value.code == (-32002 if mode == "legacy" else -32602)


@pytest.mark.anyio
async def test_completions_are_proxied(base_url: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with httpx.AsyncClient() as http:
            await add_everything(http, base_url)
        async with Client(f"{base_url}/mcp", mode="legacy") as client:
            prompts = {p.name: p for p in (await client.list_prompts()).prompts}
            completable = prompts["mcp_everything_completable_prompt"]
            assert completable.arguments
            argument = completable.arguments[0].name
            ref = PromptReference(type="ref/prompt", name="mcp_everything_completable_prompt")
            result = await client.complete(ref, {"name": argument, "value": ""})
            assert result.completion.values, "server-everything completes this argument"
            with pytest.raises(MCPError) as unknown:
                await client.complete(
                    PromptReference(type="ref/prompt", name="mcp_nope"), {"name": "a", "value": ""}
                )
    assert unknown.value.code == -32602
