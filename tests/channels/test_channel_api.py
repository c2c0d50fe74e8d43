"""The channels API: list, get, configure (secrets to keyring), test, remove, reload, webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import ClassVar

import anyio
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fangwire.channelkit.signatures import ReplayGuard, verify_hmac
from fangwire.channels import (
    ChannelAdapter,
    ChannelContext,
    ChannelError,
    ConfigField,
    DeliveryReceipt,
    InboundMessage,
    OutboundMessage,
)
from fangwire.hookspecs import hookimpl
from fangwire.plugins import create_plugin_manager

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-signing-key-value"
TOKEN = "tok-123456:ABCDEF-very-secret"


class Signed(ChannelAdapter):
    """A webhook platform: pushes signed with HMAC-SHA256, sends recorded."""

    name = "signed"
    display_name = "Signed pushes"
    category = "notifications"
    icon = "SG"
    capabilities = frozenset({"send", "webhook"})
    config_fields = (
        ConfigField("token", secret=True, required=True, env="SIGNED_TOKEN"),
        ConfigField("secret", secret=True, env="SIGNED_SECRET"),
        ConfigField("room", required=True),
        ConfigField("retries", type="number", default=1),
    )
    max_message_length = 100
    default_target_field = "room"
    sent: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        self.replays = ReplayGuard(300)

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        if target == "down":
            raise ChannelError("platform says: chat not found (400)")
        Signed.sent.append((target, message.text))
        return DeliveryReceipt(self.ctx.name, target, (str(len(Signed.sent)),))

    async def handle_webhook(self, request: Request) -> Response:
        body = await request.body()
        secret = self.settings["secret"]
        stamp = request.headers.get("x-timestamp", "")
        verify_hmac(
            secret.reveal().encode() if secret else b"",
            stamp.encode() + b"." + body,
            request.headers.get("x-signature"),
            prefix="sha256=",
        )
        self.replays.check(request.headers.get("x-id", ""), float(stamp or "nan"))
        data = json.loads(body)
        await self.ctx.deliver(
            InboundMessage(
                channel=self.ctx.name, sender=data["from"], chat=data["from"], text=data["text"]
            )
        )
        return JSONResponse({"ok": True})


class plugin:
    @staticmethod
    @hookimpl
    def register_channels(register):
        register(Signed)


@pytest.fixture(autouse=True)
def _clear_sent():
    Signed.sent.clear()


@pytest.fixture
def runtime(make_runtime):
    pm = create_plugin_manager(environ={}, strict=True)
    pm.register_object(plugin, name="signed-plugin")
    return make_runtime("", pm=pm)


def signed_headers(body: bytes, *, stamp: float | None = None, ident: str = "1") -> dict:
    ts = str(int(time.time() if stamp is None else stamp))
    mac = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"x-timestamp": ts, "x-signature": f"sha256={mac}", "x-id": ident}


async def test_list_has_the_document_and_reference_shapes(app_client):
    body = (await app_client.get("/api/channels")).json()
    assert body["total"] == len(body["channels"]) == len(body["items"])
    names = [c["name"] for c in body["channels"]]
    assert "test" in names and "signed" in names
    item = next(c for c in body["channels"] if c["name"] == "signed")
    assert item["enabled"] is False and item["has_token"] is False
    assert item["status"] == "unconfigured"
    assert item["webhook_endpoint"] == "/channels/signed/webhook"
    fields = {f["key"]: f for f in item["fields"]}
    assert fields["token"]["type"] == "secret" and fields["token"]["env_var"] == "SIGNED_TOKEN"
    assert fields["retries"]["type"] == "number" and fields["retries"]["value"] == 1


async def test_unknown_channel_is_404(app_client):
    response = await app_client.get("/api/channels/nope")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Unknown channel: nope"
    assert (await app_client.post("/api/channels/nope/configure", json={"a": 1})).status_code == 404


async def test_configure_stores_secrets_in_keyring_and_starts(app_client, runtime, caplog):
    response = await app_client.post(
        "/api/channels/signed/configure",
        json={"fields": {"token_env": TOKEN, "secret": SECRET, "room": "lobby", "retries": "3"}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "configured" and body["activated"] is True
    assert body["started_channels"] == ["signed"]
    config_text = runtime.config_file.path.read_text()
    assert TOKEN not in config_text and SECRET not in config_text
    assert 'room = "lobby"' in config_text and "retries = 3" in config_text
    assert (await runtime.secrets.get("channel:signed:token")).reveal() == TOKEN
    item = (await app_client.get("/api/channels/signed")).json()
    assert item["has_token"] is True and item["status"] == "running"
    everything = json.dumps(item) + response.text + caplog.text
    assert TOKEN not in everything and SECRET not in everything
    assert TOKEN not in repr(runtime.channels.runners["signed"].adapter)
    audit = (await app_client.get("/api/audit/recent?limit=20")).text
    assert TOKEN not in audit and "channel_configured" in audit


async def test_document_flat_form_with_token_alias(app_client, runtime):
    response = await app_client.post(
        "/api/channels/signed/configure",
        json={"token": TOKEN, "room": "lobby", "agent_name": "assistant"},
    )
    assert response.status_code == 200, response.text
    assert runtime.config.channels["signed"]["agent"] == "assistant"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"fields": {"token": TOKEN}}, "room: required"),
        ({"fields": {"room": "x"}}, "token: required"),
        ({"fields": {"token": TOKEN, "room": "x", "colour": "red"}}, "colour: unknown setting"),
        ({"fields": {"token": TOKEN, "room": "x", "retries": "many"}}, "retries: expected"),
        ({"fields": {"token": 5, "room": "x"}}, "token: expected a non-empty string"),
        ({"fields": {"token": TOKEN, "room": "x", "dm_policy": "maybe"}}, "dm_policy"),
        ({"fields": "no"}, "fields: expected an object"),
        ({}, "Missing 'fields' object"),
    ],
)
async def test_configure_errors_name_the_field(app_client, runtime, body, message):
    response = await app_client.post("/api/channels/signed/configure", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert "signed" not in runtime.config.channels
    assert await runtime.secrets.get("channel:signed:token") is None


async def test_env_var_satisfies_a_required_secret(make_runtime, make_client):
    pm = create_plugin_manager(environ={}, strict=True)
    pm.register_object(plugin, name="signed-plugin")
    runtime = make_runtime(
        '[channels.signed]\nroom = "r"\n', pm=pm, environ={"SIGNED_TOKEN": TOKEN}
    )
    async with make_client(runtime) as http:
        item = (await http.get("/api/channels/signed")).json()
        assert item["has_token"] is True and item["running"] is True


async def test_test_endpoint(app_client):
    response = await app_client.post("/api/channels/signed/test")
    assert response.status_code == 412
    await app_client.post("/api/channels/signed/configure", json={"token": TOKEN, "room": "lobby"})
    response = await app_client.post("/api/channels/signed/test")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok" and Signed.sent == [("lobby", "fangwire test message")]
    response = await app_client.post("/api/channels/signed/test", json={"chat_id": "down"})
    assert response.status_code == 502
    assert "chat not found" in response.json()["error"]["message"]


async def test_remove_deletes_section_and_secrets(app_client, runtime):
    await app_client.post("/api/channels/signed/configure", json={"token": TOKEN, "room": "r"})
    response = await app_client.delete("/api/channels/signed/configure")
    assert response.status_code == 200
    assert response.json()["secrets_deleted"] == 1
    assert "signed" not in runtime.config.channels and "signed" not in runtime.channels.runners
    assert await runtime.secrets.get("channel:signed:token") is None


async def test_reload_touches_only_what_changed(app_client, runtime):
    await app_client.post("/api/channels/signed/configure", json={"token": TOKEN, "room": "r"})
    await app_client.post("/api/channels/test/configure", json={"bot_name": "b"})
    signed_runner = runtime.channels.runners["signed"]
    text = runtime.config_file.path.read_text().replace('bot_name = "b"', 'bot_name = "c"')
    runtime.config_file.path.write_text(text)
    body = (await app_client.post("/api/channels/reload")).json()
    assert body["restarted"] == ["test"] and body["unchanged"] == ["signed"]
    assert runtime.channels.runners["signed"] is signed_runner
    text = runtime.config_file.path.read_text().replace(
        "[channels.test]", "[channels.test]\nenabled = false"
    )
    runtime.config_file.path.write_text(text)
    body = (await app_client.post("/api/channels/reload")).json()
    assert body["stopped"] == ["test"]


async def test_bad_section_is_reported_not_fatal(make_runtime, make_client):
    runtime = make_runtime('[channels.test]\ncolour = "red"\n')
    async with make_client(runtime) as http:
        item = (await http.get("/api/channels/test")).json()
        assert item["status"].startswith("error: channels.test.colour: unknown key")
        assert (await http.get("/api/health")).status_code == 200


async def test_webhook_verifies_signature_and_replay(app_client, runtime):
    await app_client.post(
        "/api/channels/signed/configure",
        json={
            "token": TOKEN,
            "secret": SECRET,
            "room": "r",
            "agent": "assistant",
            "dm_policy": "respond",
        },
    )
    body = json.dumps({"from": "zoe", "text": "hi"}).encode()
    url = "/channels/signed/webhook"
    bad = dict(signed_headers(body), **{"x-signature": "sha256=" + "0" * 64})
    assert (await app_client.post(url, content=body, headers=bad)).status_code == 401
    old = signed_headers(body, stamp=time.time() - 3600)
    assert (await app_client.post(url, content=body, headers=old)).status_code == 401
    good = signed_headers(body, ident="evt-1")
    response = await app_client.post(url, content=body, headers=good)
    assert response.status_code == 200, response.text
    assert (await app_client.post(url, content=body, headers=good)).status_code == 401
    with anyio.fail_after(10):
        while not Signed.sent:
            await anyio.sleep(0.01)
    assert Signed.sent == [("zoe", "echo: hi")]


async def test_webhook_route_errors(app_client):
    assert (await app_client.post("/channels/test/webhook", content=b"{}")).status_code == 404
    response = await app_client.post("/channels/signed/webhook", content=b"{}")
    assert response.status_code == 503 and response.headers["retry-after"] == "30"
    assert (await app_client.post("/channels/nope/webhook", content=b"{}")).status_code == 404


class NeedsSdk(ChannelAdapter):
    name = "needs_sdk"
    requires_extra = "needs-sdk"

    @classmethod
    def is_available(cls) -> bool:
        return False


async def test_missing_extra_shows_unavailable_with_the_install_hint(make_runtime, make_client):
    class sdk_plugin:
        @staticmethod
        @hookimpl
        def register_channels(register):
            register(NeedsSdk)

    pm = create_plugin_manager(environ={}, strict=True)
    pm.register_object(sdk_plugin, name="sdk-plugin")
    runtime = make_runtime("[channels.needs_sdk]\n", pm=pm)
    async with make_client(runtime) as http:
        item = (await http.get("/api/channels/needs_sdk")).json()
    assert item["status"] == "unavailable" and item["available"] is False
    assert item["install_hint"] == "pip install 'fangwire-channels[needs-sdk]'"
    assert "needs_sdk" not in runtime.channels.runners
