"""One test per hookspec: a plugin implementing it has the documented effect."""

from __future__ import annotations

import enum

import attrs
import pytest
from starlette.responses import JSONResponse

from fangwire.audit import AuditEntry, AuditSink
from fangwire.auth import AuthProvider, Principal, Role
from fangwire.budget import BudgetAction, BudgetDecision, BudgetPolicy
from fangwire.channels import ChannelAdapter, DeliveryReceipt, OutboundMessage
from fangwire.hookspecs import hookimpl
from fangwire.http.jsonbody import read_model
from fangwire.http.routes import RouteSpec
from fangwire.plugins import create_plugin_manager
from fangwire.testing.fixtures import serve_client
from fangwire.transports import Transport

pytestmark = pytest.mark.anyio


def manager_with(plugin: object, name: str = "under_test"):
    pm = create_plugin_manager(load_entrypoints=False, environ={}, strict=True)
    pm.register_object(plugin, name=name)
    return pm


async def test_hook_register_channels(make_runtime):
    class Echo(ChannelAdapter):
        name = "echo"

        async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
            return DeliveryReceipt(channel=self.name, target=target, message_ids=("1",))

    class plugin:
        @staticmethod
        @hookimpl
        def register_channels(register):
            register(Echo)

    runtime = make_runtime("[channels.echo]\n", pm=manager_with(plugin))
    assert runtime.channels.adapter_class("echo") is Echo
    async with runtime.serving():
        receipt = await runtime.channels.send("echo", "x", OutboundMessage(text="hi"))
        assert receipt.message_ids == ("1",)
        assert runtime.channels.runners["echo"].adapter.ctx.name == "echo"


async def test_hook_register_transports(make_runtime):
    calls: list[str] = []

    async def ping(request):
        return JSONResponse({"pong": True})

    class Pinger(Transport):
        transport_id = "pinger"

        def routes(self):
            return [RouteSpec("/pinger/ping", ping, api=False, role=None)]

        async def start(self) -> None:
            calls.append("start")

        async def stop(self) -> None:
            calls.append("stop")

    class plugin:
        @staticmethod
        @hookimpl
        def register_transports(register):
            register(Pinger)

    runtime = make_runtime(pm=manager_with(plugin))
    async with serve_client(runtime) as http:
        assert calls == ["start"]
        assert (await http.get("/pinger/ping")).json() == {"pong": True}
    assert calls == ["start", "stop"]


async def test_hook_register_auth_providers(make_runtime):
    class Fixed(AuthProvider):
        provider_id = "fixed"

        def is_configured(self) -> bool:
            return True

        async def authenticate(self, credential, connection):
            if credential == "open-sesame":
                return Principal(subject="ali", role=Role.ADMIN, provider="fixed")
            return None

    class plugin:
        @staticmethod
        @hookimpl
        def register_auth_providers(register):
            register(Fixed)

    runtime = make_runtime(pm=manager_with(plugin))
    async with serve_client(runtime) as http:
        # A configured provider means loopback callers must authenticate too.
        assert (await http.get("/api/health/detail")).status_code == 401
        ok = await http.get("/api/health/detail", headers={"x-api-key": "open-sesame"})
        assert ok.status_code == 200


async def test_hook_register_budget_policies(make_runtime):
    class Frugal(BudgetPolicy):
        policy_id = "frugal"

        async def check(self, action: BudgetAction) -> BudgetDecision:
            allowed = action.estimated_cost_usd <= 1.0
            return BudgetDecision(allowed=allowed, policy=self.policy_id, reason="too dear")

    class plugin:
        @staticmethod
        @hookimpl
        def register_budget_policies(register):
            register(Frugal)

    policy = make_runtime(pm=manager_with(plugin)).budget_policies["frugal"]
    assert (await policy.check(BudgetAction(kind="call", estimated_cost_usd=0.5))).allowed
    denied = await policy.check(BudgetAction(kind="call", estimated_cost_usd=2.0))
    assert (denied.allowed, denied.reason) == (False, "too dear")


async def test_hook_register_audit_sinks(make_runtime):
    received: list[AuditEntry] = []

    class Memory(AuditSink):
        sink_id = "memory"

        def is_enabled(self) -> bool:
            return True

        async def emit(self, entry: AuditEntry) -> None:
            received.append(entry)

    class plugin:
        @staticmethod
        @hookimpl
        def register_audit_sinks(register):
            register(Memory)

    sink = make_runtime(pm=manager_with(plugin)).audit_sinks["memory"]
    entry = AuditEntry(
        id=1,
        timestamp="2026-01-01T00:00:00Z",
        event_type="test",
        agent_id=None,
        details={},
        outcome="ok",
        prev_hash="0" * 64,
        hash="1" * 64,
    )
    await sink.emit(entry)
    assert received == [entry]


async def test_hook_register_routes(make_runtime):
    async def hello(request):
        return JSONResponse({"hello": request.path_params["name"]})

    class plugin:
        @staticmethod
        @hookimpl
        def register_routes(register):
            register(RouteSpec("/hello/{name}", hello, name="hello"))

    async with serve_client(make_runtime(pm=manager_with(plugin))) as http:
        assert (await http.get("/api/hello/ada")).json() == {"hello": "ada"}
        assert (await http.get("/api/v1/hello/ada")).json() == {"hello": "ada"}
        paths = (await http.get("/api/openapi.json")).json()["paths"]
        assert "/api/hello/{name}" in paths


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Paint:
    colour: Colour


async def test_hook_configure_converter(make_runtime):
    async def paint(request):
        body = await read_model(request, Paint)
        return JSONResponse({"colour": body.colour.name})

    def structure_colour(value, _):
        if not isinstance(value, str):
            raise TypeError("colour must be a string")
        return Colour(value.lower())

    class plugin:
        @staticmethod
        @hookimpl
        def configure_converter(converter):
            converter.register_structure_hook(Colour, structure_colour)

        @staticmethod
        @hookimpl
        def register_routes(register):
            register(RouteSpec("/paint", paint, methods=("POST",), request_model=Paint))

    async with serve_client(make_runtime(pm=manager_with(plugin))) as http:
        assert (await http.post("/api/paint", json={"colour": "RED"})).json() == {"colour": "RED"}
        bad = await http.post("/api/paint", json={"colour": "green"})
        assert bad.status_code == 400
        assert "colour" in bad.json()["error"]["message"]


async def test_hook_startup(make_runtime):
    seen = []

    class plugin:
        @staticmethod
        @hookimpl
        def startup(runtime):
            seen.append(runtime.http is not None)

    async with serve_client(make_runtime(pm=manager_with(plugin))):
        assert seen == [True]


async def test_hook_shutdown(make_runtime):
    seen = []

    class plugin:
        @staticmethod
        @hookimpl
        async def shutdown(runtime):
            seen.append("stopped while the client still exists: %s" % (runtime.http is not None))

    async with serve_client(make_runtime(pm=manager_with(plugin))):
        assert seen == []
    assert seen == ["stopped while the client still exists: True"]


async def test_hook_register_model_providers(make_runtime):
    from fangwire.models import (
        ChatMessage,
        Completion,
        CompletionRequest,
        ModelProvider,
        Usage,
    )

    class Shouty(ModelProvider):
        provider_id = "shouty"

        async def complete(self, request: CompletionRequest) -> Completion:
            text = request.messages[-1].content.upper()
            return Completion(text=text, usage=Usage(1, 1), model=request.model, provider="shouty")

    class plugin:
        @staticmethod
        @hookimpl
        def register_model_providers(register):
            register(Shouty)

    provider = make_runtime(pm=manager_with(plugin)).model_providers["shouty"]
    request = CompletionRequest(model="m", messages=[ChatMessage("user", "hi")])
    assert (await provider.complete(request)).text == "HI"
    chunks = [chunk async for chunk in provider.stream(request)]
    assert [c.delta for c in chunks] == ["HI", ""]
    assert chunks[-1].usage == Usage(1, 1)
