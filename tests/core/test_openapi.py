"""The OpenAPI 3.1 document: generated from the routes, valid, complete, and fuzzed."""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error

from fangwire.app import create_app
from fangwire.plugins import create_plugin_manager
from fangwire.runtime import Runtime
from fangwire.secrets import MemoryKeyring
from fangwire.testing.live import threaded_server
from tests.core import routes_for_tests


@pytest.mark.anyio
async def test_document_is_valid_openapi_3_1(app_client):
    document = (await app_client.get("/api/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    validate(document)


@pytest.mark.anyio
async def test_every_served_route_is_documented(runtime, app_client):
    document = (await app_client.get("/api/openapi.json")).json()
    served = {
        (path, method.lower())
        for _, spec in runtime.routes
        for path in spec.mount_paths()
        for method in spec.methods
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == documented
    for path in ("/api/health", "/api/v1/health", "/-/plugins", "/api/logs/stream"):
        assert path in document["paths"]


@pytest.mark.anyio
async def test_public_routes_are_marked_public(app_client):
    document = (await app_client.get("/api/openapi.json")).json()
    assert document["paths"]["/api/health"]["get"]["security"] == []
    assert document["paths"]["/-/plugins"]["get"]["security"] == [{"bearer": []}, {"apiKey": []}]
    plugins = document["paths"]["/-/plugins"]["get"]["responses"]["200"]
    ref = plugins["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/PluginList"
    assert "PluginInfo" in document["components"]["schemas"]


@pytest.mark.anyio
async def test_request_models_are_documented(make_runtime, make_client):
    pm = create_plugin_manager(environ={}, strict=True)
    pm.register_object(routes_for_tests, name="routes_for_tests")
    async with make_client(make_runtime(pm=pm)) as http:
        document = (await http.get("/api/openapi.json")).json()
    body = document["paths"]["/api/test/echo"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Greeting"
    }
    greeting = document["components"]["schemas"]["Greeting"]
    assert greeting["required"] == ["name"]
    assert greeting["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}


@pytest.fixture(scope="module")
def live_api(tmp_path_factory):
    home = tmp_path_factory.mktemp("openapi-home")
    pm = create_plugin_manager(environ={}, strict=True)
    pm.register_object(routes_for_tests, name="routes_for_tests")
    runtime = Runtime.build(home, environ={}, pm=pm, keyring_backend=MemoryKeyring())
    with threaded_server(create_app(runtime)) as url:
        yield url


def test_no_generated_request_gets_a_server_error(live_api):
    schema = schemathesis.openapi.from_url(f"{live_api}/api/openapi.json")
    # Event streams never end, and /test/boom fails on purpose.
    skipped = re.compile(r"^/api(/v1)?/(logs/stream|comms/events/stream|test/boom)$")
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if skipped.match(operation.path):
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            response = case.call(base_url=live_api, timeout=10)
            case.validate_response(response, checks=[not_a_server_error])

        check()
        tested += 1
    assert tested >= 10
