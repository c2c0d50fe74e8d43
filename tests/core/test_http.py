"""The HTTP envelope: errors, request ids, security headers, body and depth limits."""

from __future__ import annotations

import json

import pytest

from fangwire.plugins import create_plugin_manager
from tests.core import routes_for_tests

pytestmark = pytest.mark.anyio

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@pytest.fixture
def test_runtime(make_runtime):
    def build(config_text: str = "", environ=None):
        pm = create_plugin_manager(environ={}, strict=True)
        pm.register_object(routes_for_tests, name="routes_for_tests")
        return make_runtime(config_text, pm=pm, environ=environ)

    return build


@pytest.fixture
async def client(test_runtime, make_client):
    async with make_client(test_runtime("[http]\nmax_hooks_body_bytes = 64\n")) as http:
        yield http


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    return body["error"]


async def test_success_has_request_id_and_security_headers(client):
    response = await client.get("/api/health")
    assert response.status_code == 200
    assert len(response.headers["x-request-id"]) >= 8
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_request_ids_are_unique(client):
    ids = {(await client.get("/api/health")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


async def test_sane_inbound_request_id_is_kept_and_junk_replaced(client):
    kept = await client.get("/api/health", headers={"x-request-id": "trace-12345678"})
    assert kept.headers["x-request-id"] == "trace-12345678"
    junk = await client.get("/api/health", headers={"x-request-id": "<script>"})
    assert junk.headers["x-request-id"] != "<script>"


async def test_unknown_route_is_404_envelope(client):
    error = assert_envelope(await client.get("/api/nope"), 404, "not_found")
    assert "/api/nope" in error["message"]


async def test_wrong_method_is_405_envelope(client):
    response = await client.delete("/api/health")
    error = assert_envelope(response, 405, "method_not_allowed")
    assert "DELETE" in error["message"]
    assert "GET" in response.headers["allow"]


async def test_api_routes_are_served_under_v1_too(client):
    assert (await client.get("/api/v1/health")).json()["status"] == "ok"
    assert (await client.post("/api/v1/test/echo", json={"name": "x"})).status_code == 200


async def test_valid_body_is_structured(client):
    response = await client.post("/api/test/echo", json={"name": "ada", "times": 2})
    assert response.json() == {"hello": "ada", "times": 2}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "malformed JSON"),
        (b"", "empty"),
        (b"\xff\xfe\x00", "UTF-8"),
        (b"1" * 5000, "malformed JSON"),
    ],
)
async def test_malformed_json_is_400(client, body, fragment):
    response = await client.post(
        "/api/test/echo", content=body, headers={"content-type": "application/json"}
    )
    error = assert_envelope(response, 400, "invalid_json")
    assert fragment in error["message"]


@pytest.mark.parametrize("depth", [65, 5000, 100_000])
async def test_deeply_nested_json_is_400_not_500(client, depth):
    body = "[" * depth + "]" * depth
    response = await client.post(
        "/api/test/echo", content=body, headers={"content-type": "application/json"}
    )
    error = assert_envelope(response, 400, "invalid_json")
    assert "nested too deeply" in error["message"]


async def test_nesting_within_limit_reaches_validation(client):
    nested: object = "x"
    for _ in range(60):
        nested = [nested]
    response = await client.post("/api/test/echo", json={"name": "a", "tags": nested})
    # Accepted by the depth check, refused by the model (tags are strings), naming the field.
    error = assert_envelope(response, 400, "invalid_input")
    assert "tags" in error["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"times": 1}, "name: missing required key"),
        ({"name": 5}, "name: expected a string, got 5"),
        ({"name": "a", "times": "2"}, "times: expected an integer"),
        ({"name": "a", "times": True}, "times: expected an integer"),
        ({"name": "a", "extra": 1}, "extra: unknown key"),
        ({"name": "a", "tags": ["ok", 3]}, "tags[1]: expected a string"),
    ],
)
async def test_wrong_types_are_400_naming_the_field(client, body, fragment):
    error = assert_envelope(await client.post("/api/test/echo", json=body), 400, "invalid_input")
    assert fragment in error["message"]


async def test_body_must_be_an_object(client):
    error = assert_envelope(await client.post("/api/test/echo", json=[1]), 400, "invalid_input")
    assert "object" in error["message"]


async def test_non_json_content_type_is_415(client):
    response = await client.post(
        "/api/test/echo", content=b"name=a", headers={"content-type": "text/plain"}
    )
    assert_envelope(response, 415, "unsupported_media_type")


async def test_body_over_route_limit_is_413(client):
    # /api/test/small uses the hooks limit, configured to 64 bytes for this test.
    body = json.dumps({"name": "x" * 100})
    response = await client.post(
        "/api/test/small", content=body, headers={"content-type": "application/json"}
    )
    assert_envelope(response, 413, "payload_too_large")


async def test_chunked_body_over_limit_is_413(client):
    async def chunks():
        for _ in range(10):
            yield b'{"name":"' + b"x" * 20

    response = await client.post(
        "/api/test/small", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_envelope(response, 413, "payload_too_large")


async def test_default_body_limit_is_8_mib(test_runtime, make_client):
    async with make_client(test_runtime()) as http:
        big = json.dumps({"name": "x" * (8 * 1024 * 1024)})
        assert_envelope(
            await http.post(
                "/api/test/echo", content=big, headers={"content-type": "application/json"}
            ),
            413,
            "payload_too_large",
        )


async def test_unexpected_error_is_500_envelope_without_internals(client, caplog):
    response = await client.get("/api/test/boom")
    error = assert_envelope(response, 500, "internal_error")
    assert "secret internals" not in response.text
    assert "/etc/fangwire" not in response.text
    assert error["message"] == "internal server error"
    assert any("unhandled error" in r.getMessage() for r in caplog.records)


async def test_foreign_origin_cannot_change_state(client):
    response = await client.post(
        "/api/test/echo", json={"name": "a"}, headers={"origin": "https://evil.example"}
    )
    assert_envelope(response, 403, "forbidden_origin")


async def test_same_origin_may_change_state(client):
    response = await client.post(
        "/api/test/echo", json={"name": "a"}, headers={"origin": "http://127.0.0.1:4545"}
    )
    assert response.status_code == 200


async def test_dns_rebinding_host_is_refused_without_key(client):
    response = await client.get("/api/health", headers={"host": "attacker.example"})
    assert_envelope(response, 403, "forbidden_host")


async def test_configured_host_is_allowed(test_runtime, make_client):
    runtime = test_runtime('[http]\nallowed_hosts = ["fangwire.lan"]\n')
    async with make_client(runtime) as http:
        response = await http.get("/api/health", headers={"host": "fangwire.lan:4545"})
        assert response.status_code == 200


async def test_cors_is_off_by_default(client):
    response = await client.options(
        "/api/health",
        headers={"origin": "https://ui.example", "access-control-request-method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers


async def test_cors_allows_configured_origin_only(test_runtime, make_client):
    runtime = test_runtime('[http]\ncors_origins = ["https://ui.example"]\n')
    async with make_client(runtime) as http:
        ok = await http.get("/api/health", headers={"origin": "https://ui.example"})
        assert ok.headers["access-control-allow-origin"] == "https://ui.example"
        other = await http.get("/api/health", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_one_path_with_several_methods(make_runtime, make_client):
    from starlette.responses import JSONResponse

    from fangwire.hookspecs import hookimpl
    from fangwire.http.routes import RouteSpec

    async def read(request):
        return JSONResponse({"did": "read"})

    async def write(request):
        return JSONResponse({"did": "write"})

    class plugin:
        @staticmethod
        @hookimpl
        def register_routes(register):
            register(RouteSpec("/things", read, name="things_read"))
            register(RouteSpec("/things", write, methods=("POST",), name="things_write"))

    pm = create_plugin_manager(load_entrypoints=False, environ={}, strict=True)
    pm.register_object(plugin, name="things")
    async with make_client(make_runtime(pm=pm)) as http:
        assert (await http.get("/api/things")).json() == {"did": "read"}
        assert (await http.post("/api/things")).json() == {"did": "write"}
        refused = await http.delete("/api/things")
        assert refused.status_code == 405
        assert set(refused.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


async def test_jsonrpc_routes_get_jsonrpc_refusals(make_runtime, make_client):
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from fangwire.auth import Role
    from fangwire.hookspecs import hookimpl
    from fangwire.http.routes import RouteSpec

    async def rpc(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"jsonrpc": "2.0", "id": 1, "result": {}})

    class RpcPlugin:
        @hookimpl
        def register_routes(self, register):
            register(
                RouteSpec(
                    "/rpc", rpc, methods=("POST",), api=False, role=Role.USER,
                    body="protocol", errors="jsonrpc",
                )
            )  # fmt: skip

    pm = create_plugin_manager(environ={}, strict=True)
    pm.register_object(RpcPlugin(), name="rpc")
    runtime = make_runtime(
        'api_key = "k-0123456789abcdef"\n[http]\nmax_protocol_body_bytes = 64\n', pm=pm
    )
    async with make_client(runtime) as http:
        refused = await http.post("/rpc", json={"jsonrpc": "2.0", "id": 1, "method": "x"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        body = refused.json()
        assert body["jsonrpc"] == "2.0" and body["id"] is None
        assert body["error"]["code"] == -32000
        assert body["error"]["data"] == {
            "code": "unauthorized",
            "request_id": refused.headers["x-request-id"],
        }
        auth = {"authorization": "Bearer k-0123456789abcdef"}
        ok = await http.post("/rpc", json={"jsonrpc": "2.0", "id": 1, "method": "x"}, headers=auth)
        assert ok.json()["result"] == {}
        big = await http.post("/rpc", content=b"x" * 100, headers=auth)
        assert big.status_code == 413
        assert big.json()["error"]["data"]["code"] == "payload_too_large"
