"""Authentication, roles, the loopback rule, rate limits and lockout."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from fangwire.app import create_app
from fangwire.auth import AuthProvider, Principal, Role
from fangwire.defaults.auth_api_key import hash_api_key
from fangwire.hookspecs import hookimpl
from fangwire.plugins import create_plugin_manager
from fangwire.testing.fixtures import BASE_URL, serve_client
from tests.core import routes_for_tests

pytestmark = pytest.mark.anyio

KEY = "fw-test-key-0123456789abcdef"
REMOTE = ("203.0.113.7", 40000)


class ViewerTokens(AuthProvider):
    """Grants the viewer role to the token 'viewer-token' and user to 'user-token'."""

    provider_id = "viewer_tokens"
    order = 50

    def is_configured(self) -> bool:
        return True

    async def authenticate(self, credential, connection):
        roles = {"viewer-token": Role.VIEWER, "user-token": Role.USER}
        if credential in roles:
            return Principal(subject=credential, role=roles[credential], provider="viewer_tokens")
        return None


class viewer_plugin:
    @staticmethod
    @hookimpl
    def register_auth_providers(register: Callable[[type[AuthProvider]], None]) -> None:
        register(ViewerTokens)


@pytest.fixture
def build(make_runtime):
    def make(config_text: str = "", *, environ=None, extra=()):
        pm = create_plugin_manager(environ={}, strict=True)
        pm.register_object(routes_for_tests, name="routes_for_tests")
        for plugin in extra:
            pm.register_object(plugin, name=plugin.__name__)
        return make_runtime(config_text, pm=pm, environ=environ)

    return make


def bearer(key: str = KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_without_key_loopback_is_owner(build):
    async with serve_client(build()) as http:
        response = await http.get("/api/test/admin")
        assert response.json() == {"subject": "local", "role": "owner"}


async def test_without_key_remote_callers_are_refused(build):
    async with serve_client(build(), client=REMOTE) as http:
        response = await http.get("/api/test/whoami", headers={"host": "127.0.0.1"})
        assert response.status_code == 401
        assert "only loopback" in response.json()["error"]["message"]
        assert response.headers["www-authenticate"].startswith("Bearer")
        # Public routes still answer.
        assert (await http.get("/api/health", headers={"host": "127.0.0.1"})).status_code == 200


async def test_proxied_loopback_request_is_not_trusted(build):
    async with serve_client(build()) as http:
        response = await http.get("/api/test/whoami", headers={"x-forwarded-for": "198.51.100.1"})
        assert response.status_code == 401


@pytest.mark.parametrize(
    "headers",
    [bearer(), {"x-api-key": KEY}, {"authorization": f"bearer {KEY}"}],
)
async def test_configured_key_is_accepted(build, headers):
    async with serve_client(build(f'api_key = "{KEY}"\n'), client=REMOTE) as http:
        response = await http.get("/api/test/admin", headers=headers)
        assert response.status_code == 200
        assert response.json()["role"] == "owner"
        assert KEY not in response.text


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing credential"),
        (bearer("wrong"), "invalid credential"),
        ({"authorization": f"Basic {KEY}"}, "missing credential"),
        ({"x-api-key": ""}, "missing credential"),
        (bearer(KEY + "x"), "invalid credential"),
        (bearer(KEY[:-1]), "invalid credential"),
    ],
)
async def test_bad_credentials_are_401(build, headers, message):
    async with serve_client(build(f'api_key = "{KEY}"\n')) as http:
        response = await http.get("/api/test/whoami", headers=headers)
        assert response.status_code == 401
        assert message in response.json()["error"]["message"]


async def test_key_in_query_string_is_not_accepted(build):
    async with serve_client(build(f'api_key = "{KEY}"\n')) as http:
        assert (await http.get(f"/api/test/whoami?token={KEY}")).status_code == 401
        assert (await http.get(f"/api/test/whoami?api_key={KEY}")).status_code == 401


async def test_loopback_needs_the_key_once_one_is_configured(build):
    async with serve_client(build(f'api_key = "{KEY}"\n')) as http:
        assert (await http.get("/api/test/whoami")).status_code == 401
        assert (await http.get("/api/test/whoami", headers=bearer())).status_code == 200


async def test_key_from_environment(build):
    runtime = build(environ={"FANGWIRE_API_KEY": KEY})
    async with serve_client(runtime, client=REMOTE) as http:
        response = await http.get("/api/test/whoami", headers=bearer())
        assert response.status_code == 200


async def test_key_hash_in_config(build):
    runtime = build(f'api_key_hash = "{hash_api_key(KEY)}"\n')
    async with serve_client(runtime, client=REMOTE) as http:
        assert (await http.get("/api/test/whoami", headers=bearer())).status_code == 200
        assert (await http.get("/api/test/whoami", headers=bearer("x"))).status_code == 401


async def test_several_keys_one_per_line_for_rotation(build):
    runtime = build(f'api_key = """\n{KEY}\nsecond-key-abcdefgh\n"""\n')
    async with serve_client(runtime, client=REMOTE) as http:
        for key in (KEY, "second-key-abcdefgh"):
            assert (await http.get("/api/test/whoami", headers=bearer(key))).status_code == 200


async def test_public_routes_need_no_credential(build):
    async with serve_client(build(f'api_key = "{KEY}"\n'), client=REMOTE) as http:
        response = await http.get("/api/health")
        assert response.status_code == 200
        assert set(response.json()) == {"status", "version"}


async def test_health_detail_needs_a_credential(build):
    async with serve_client(build(f'api_key = "{KEY}"\n'), client=REMOTE) as http:
        assert (await http.get("/api/health/detail")).status_code == 401
        detail = await http.get("/api/health/detail", headers=bearer())
        assert detail.status_code == 200
        body = detail.json()
        assert body["store"]["ok"] is True
        assert body["plugins"]["failed"] == 0
        assert body["auth_configured"] is True
        assert "/" not in body["store"]["detail"]  # no filesystem paths


async def test_roles_are_enforced(build):
    runtime = build(f'api_key = "{KEY}"\n', extra=(viewer_plugin,))
    async with serve_client(runtime, client=REMOTE) as http:
        viewer = {"authorization": "Bearer viewer-token"}
        assert (await http.get("/api/test/whoami", headers=viewer)).json()["role"] == "viewer"
        denied = await http.get("/api/test/admin", headers=viewer)
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "forbidden"
        assert "admin" in denied.json()["error"]["message"]
        # POST /api/test/echo needs the user role.
        assert (
            await http.post("/api/test/echo", json={"name": "a"}, headers=viewer)
        ).status_code == 403
        user = {"authorization": "Bearer user-token"}
        assert (
            await http.post("/api/test/echo", json={"name": "a"}, headers=user)
        ).status_code == 200


async def test_rate_limit_429_with_retry_after_and_ratelimit_headers(build):
    runtime = build(f'api_key = "{KEY}"\n[rate_limit]\napi_requests_per_minute = 10\n')
    async with serve_client(runtime, client=REMOTE) as http:
        statuses = []
        for _ in range(8):
            response = await http.get("/api/test/whoami", headers=bearer())  # a read costs 2
            statuses.append(response.status_code)
        assert statuses[:5] == [200] * 5
        assert statuses[5] == 429
        assert response.json()["error"]["code"] == "rate_limited"
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["ratelimit-policy"] == '"default";q=10;w=60'
        assert response.headers["ratelimit"].startswith('"default";r=0;')


async def test_success_carries_ratelimit_headers(build):
    runtime = build(f'api_key = "{KEY}"\n')
    async with serve_client(runtime, client=REMOTE) as http:
        response = await http.get("/api/health")  # cost 1 of 500
        assert response.headers["ratelimit"].startswith('"default";r=499;')


@asynccontextmanager
async def two_clients(runtime):
    """Two callers with different addresses talking to one app."""
    app = create_app(runtime)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=REMOTE), base_url=BASE_URL
        ) as first,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("198.51.100.9", 1)),
            base_url=BASE_URL,
        ) as second,
    ):
        yield first, second


async def test_clients_are_limited_separately(build):
    runtime = build(f'api_key = "{KEY}"\n[rate_limit]\napi_requests_per_minute = 2\n')
    async with two_clients(runtime) as (first, second):
        assert (await first.get("/api/test/whoami", headers=bearer())).status_code == 200
        assert (await first.get("/api/test/whoami", headers=bearer())).status_code == 429
        assert (await second.get("/api/test/whoami", headers=bearer())).status_code == 200


async def test_loopback_is_limited_when_a_key_is_set(build):
    runtime = build(f'api_key = "{KEY}"\n[rate_limit]\napi_requests_per_minute = 2\n')
    async with serve_client(runtime) as http:
        assert (await http.get("/api/test/whoami", headers=bearer())).status_code == 200
        assert (await http.get("/api/test/whoami", headers=bearer())).status_code == 429


async def test_loopback_exemption_is_configurable(build):
    runtime = build(
        f'api_key = "{KEY}"\n[rate_limit]\napi_requests_per_minute = 2\napply_to_loopback = false\n'
    )
    async with serve_client(runtime) as http:
        for _ in range(5):
            assert (await http.get("/api/test/whoami", headers=bearer())).status_code == 200


async def test_loopback_without_key_is_not_limited(build):
    runtime = build("[rate_limit]\napi_requests_per_minute = 2\n")
    async with serve_client(runtime) as http:
        for _ in range(5):
            assert (await http.get("/api/test/whoami")).status_code == 200


async def test_repeated_failures_lock_the_client_out(build):
    runtime = build(f'api_key = "{KEY}"\n[rate_limit]\nauth_failures_allowed = 3\n')
    async with two_clients(runtime) as (http, other):
        for _ in range(3):
            assert (await http.get("/api/test/whoami", headers=bearer("nope"))).status_code == 401
        locked = await http.get("/api/test/whoami", headers=bearer())
        assert locked.status_code == 429
        assert locked.json()["error"]["code"] == "auth_locked_out"
        assert int(locked.headers["retry-after"]) > 0
        assert (await other.get("/api/test/whoami", headers=bearer())).status_code == 200


async def test_failed_credentials_are_logged_without_the_credential(build, caplog):
    runtime = build(f'api_key = "{KEY}"\n')
    async with serve_client(runtime, client=REMOTE) as http:
        await http.get("/api/test/whoami", headers=bearer("guess-AAAA-BBBB"))
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "authentication failed" in messages
    assert "guess-AAAA-BBBB" not in messages
    assert KEY not in messages
