"""The channels API (``/api/channels...``) and the platform webhook route.

Shapes: the document's ``{"channels": [...], "total"}`` with each item's ``name``, ``enabled``
and ``has_token``, plus the reference's ``items``/``configured_count`` and per-item metadata
(``display_name``, ``category``, ``fields`` ...), status and message counters. Secret values
are never returned: a secret field shows only ``has_value``.

``/channels/{name}/webhook`` is public (each adapter verifies its platform's signature over the
raw body before parsing) and takes protocol-sized bodies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fangwire.channelkit import configure as channel_configure
from fangwire.channelkit import settings as channel_settings
from fangwire.channelkit.manager import ChannelNotConfigured, ChannelNotFound
from fangwire.channelkit.signatures import WebhookRejected
from fangwire.channels import ChannelAdapter, ChannelConfigError, ChannelError
from fangwire.hookspecs import hookimpl
from fangwire.http.context import actor_of, runtime_of
from fangwire.http.errors import ApiError
from fangwire.http.jsonbody import read_json
from fangwire.http.routes import RouteSpec
from fangwire.timeutil import rfc3339, utc_now

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

log = logging.getLogger("fangwire.channels")

_OBJECT: dict[str, Any] = {"type": "object"}


def _adapter(runtime: Runtime, name: str) -> type[ChannelAdapter]:
    try:
        return runtime.channels.adapter_class(name)
    except ChannelNotFound:
        raise ApiError(404, f"Unknown channel: {name}", code="not_found") from None


async def _fields(runtime: Runtime, name: str, adapter: type[ChannelAdapter]) -> list[Any]:
    section = runtime.channels.section(name) or {}
    out: list[dict[str, Any]] = []
    for field in adapter.config_fields:
        item: dict[str, Any] = {
            "key": field.key,
            "label": field.display_label,
            "type": "secret" if field.secret else field.type,
            "required": field.required,
            "env_var": field.env,
            "help": field.help,
            "placeholder": field.placeholder,
            "advanced": field.advanced,
            "options": list(field.options),
        }
        if field.secret:
            stored = await runtime.secrets.has(channel_settings.secret_name(name, field.key))
            var = section.get(f"{field.key}_env") or field.env
            item["has_value"] = stored or bool(var and runtime.environ.get(var))
            if isinstance(section.get(f"{field.key}_env"), str):
                item["env_var"] = section[f"{field.key}_env"]
        else:
            value = section.get(field.key, field.default)
            item["has_value"] = value not in (None, "", [])
            item["value"] = ", ".join(value) if isinstance(value, list) else value
        out.append(item)
    return out


async def _traffic(runtime: Runtime) -> dict[str, int]:
    """Messages per channel in the last 24 hours, from the persisted comms events."""
    since = rfc3339(utc_now() - timedelta(hours=24))
    try:
        rows = await runtime.store.fetch_all(
            "SELECT CASE WHEN kind = 'channel.inbound' THEN source_id ELSE target_id END AS ch,"
            " COUNT(*) AS n FROM comms_events"
            " WHERE kind IN ('channel.inbound', 'channel.outbound') AND timestamp >= ?"
            " GROUP BY ch",
            (since,),
        )
    except Exception:  # the comms component is disabled: no table, no history
        return {}
    return {str(r["ch"]).removeprefix("channel:"): int(r["n"]) for r in rows}


async def describe(
    runtime: Runtime, name: str, traffic: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """One channel as the API shows it."""
    manager = runtime.channels
    adapter = manager.adapter_class(name)
    section = manager.section(name)
    runner = manager.runners.get(name)
    fields = await _fields(runtime, name, adapter)
    has_token = all(f["has_value"] for f in fields if f["type"] == "secret" and f["required"])
    available = adapter.is_available()
    if not available:
        status = "unavailable"
    elif runner is not None:
        status = runner.status
    elif name in manager.problems:
        status = f"error: {manager.problems[name]}"
    else:
        status = "unconfigured" if section is None else "stopped"
    enabled = section is not None and section.get("enabled", True) is not False
    item: dict[str, Any] = {
        "name": name,
        "display_name": adapter.display_name or name,
        "description": adapter.description,
        "icon": adapter.icon,
        "category": adapter.category,
        "setup_type": "form",
        "enabled": enabled,
        "configured": section is not None,
        "instance_count": 0 if section is None else 1,
        "has_token": has_token,
        "available": available,
        "running": runner is not None,
        "status": status,
        "capabilities": sorted(adapter.capabilities),
        "max_message_length": adapter.max_message_length,
        "length_unit": adapter.length_unit.value,
        "fields": fields,
        "agent": (runner.policy.agent if runner else None)
        or (section or {}).get("agent")
        or (section or {}).get("default_agent"),
        "counters": runner.counters.to_json() if runner else None,
        "msgs_24h": (traffic or {}).get(name, 0),
    }
    if not available:
        item["install_hint"] = f"pip install 'fangwire-channels[{adapter.requires_extra}]'"
    if "webhook" in adapter.capabilities:
        item["webhook_endpoint"] = f"/channels/{name}/webhook"
    return item


async def list_channels(request: Request) -> Response:
    runtime = runtime_of(request)
    traffic = await _traffic(runtime)
    items = [await describe(runtime, name, traffic) for name in sorted(runtime.channels)]
    return JSONResponse(
        {
            "channels": items,
            "items": items,
            "total": len(items),
            "offset": 0,
            "limit": None,
            "configured_count": sum(1 for i in items if i["configured"]),
        }
    )


async def get_channel(request: Request) -> Response:
    runtime = runtime_of(request)
    name = request.path_params["name"]
    _adapter(runtime, name)
    return JSONResponse(await describe(runtime, name, await _traffic(runtime)))


async def configure_channel(request: Request) -> Response:
    runtime = runtime_of(request)
    name = request.path_params["name"]
    _adapter(runtime, name)
    data = await read_json(request)
    if not isinstance(data, Mapping):
        raise ApiError(400, "request body must be a JSON object", code="invalid_input")
    values: Mapping[str, Any] = data
    if "fields" in data:
        if not isinstance(data["fields"], Mapping):
            raise ApiError(400, "fields: expected an object", code="invalid_input")
        values = {**{k: v for k, v in data.items() if k != "fields"}, **data["fields"]}
    if not values:
        raise ApiError(400, "Missing 'fields' object", code="invalid_input")
    try:
        result = await channel_configure.configure(runtime, name, values, actor=actor_of(request))
    except ChannelConfigError as exc:
        raise ApiError(400, exc.reason, code="invalid_input") from None
    note = (
        f"channel {name} is running"
        if result.activated
        else f"channel {name} is configured but not running: {result.problem or 'disabled'}"
    )
    return JSONResponse(
        {
            "status": "configured",
            "channel": name,
            "activated": result.activated,
            "started_channels": list(result.started),
            "secrets_stored": list(result.secrets_stored),
            "settings_written": list(result.settings_written),
            "note": note,
        }
    )


async def remove_channel(request: Request) -> Response:
    runtime = runtime_of(request)
    name = request.path_params["name"]
    _adapter(runtime, name)
    existed, deleted = await channel_configure.remove(runtime, name, actor=actor_of(request))
    return JSONResponse(
        {"status": "removed", "channel": name, "removed": existed, "secrets_deleted": deleted}
    )


def _target(data: Any) -> str | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ApiError(400, "request body must be a JSON object", code="invalid_input")
    for key in ("target", "channel_id", "chat_id"):
        value = data.get(key)
        if value is not None:
            if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
                raise ApiError(400, f"{key}: expected a non-empty string", code="invalid_input")
            return str(value)
    return None


async def send_test_message(request: Request) -> Response:
    runtime = runtime_of(request)
    name = request.path_params["name"]
    _adapter(runtime, name)
    body = await request.body()
    target = _target(await read_json(request) if body.strip() else None)
    resolved = await runtime.channels.resolve(name) if runtime.channels.section(name) else None
    if resolved is None:
        raise ApiError(412, f"channel {name} is not configured", code="channel_not_configured")
    if resolved.missing:
        raise ApiError(
            412,
            f"Missing required settings: {', '.join(resolved.missing)}",
            code="channel_not_configured",
        )
    try:
        receipt = await runtime.channels.test(name, target)
    except ChannelNotConfigured as exc:
        raise ApiError(412, exc.reason, code="channel_not_configured") from None
    except ChannelError as exc:
        raise ApiError(502, exc.reason, code="channel_error") from None
    except TimeoutError:
        raise ApiError(502, "the platform did not answer in time", code="channel_error") from None
    return JSONResponse(
        {
            "status": "ok",
            "message": f"test message delivered to {receipt.target}",
            "target": receipt.target,
            "message_ids": list(receipt.message_ids),
        }
    )


async def reload_channels(request: Request) -> Response:
    runtime = runtime_of(request)
    result = await runtime.channels.reload()
    await runtime.audit.record(
        "channels_reloaded",
        details={
            "actor": actor_of(request),
            "started": list(result.started),
            "stopped": list(result.stopped),
            "restarted": list(result.restarted),
        },
    )
    return JSONResponse(
        {
            "status": "ok",
            "started": list(result.started),
            "stopped": list(result.stopped),
            "restarted": list(result.restarted),
            "unchanged": list(result.unchanged),
            "errors": dict(result.errors),
        }
    )


async def webhook(request: Request) -> Response:
    runtime = runtime_of(request)
    name = request.path_params["name"]
    adapter_class = _adapter(runtime, name)
    if "webhook" not in adapter_class.capabilities:
        raise ApiError(404, f"channel {name} does not receive webhooks", code="not_found")
    runner = runtime.channels.runners.get(name)
    if runner is None or not runner.started:
        raise ApiError(
            503,
            f"channel {name} is not running",
            code="channel_not_running",
            headers={"retry-after": "30"},
        )
    try:
        return await runner.adapter.handle_webhook(request)
    except WebhookRejected as exc:
        log.warning("channel %s: webhook rejected: %s", name, exc.reason)
        message = "signature verification failed" if exc.status == 401 else exc.reason
        raise ApiError(exc.status, message, code="webhook_rejected") from None
    except ChannelError as exc:
        raise ApiError(400, exc.reason, code="invalid_webhook") from None


_CONFIGURE_BODY = {
    "type": "object",
    "description": "Field values, flat ({key: value}) or as the reference's {fields: {...}}",
    "properties": {"fields": {"type": "object"}},
}
_TEST_BODY = {
    "type": "object",
    "properties": {
        "target": {"type": "string"},
        "channel_id": {"type": "string"},
        "chat_id": {"type": "string"},
    },
}


@hookimpl
def register_routes(register: Callable[[RouteSpec], None]) -> None:
    tags = ("channels",)
    register(
        RouteSpec(
            "/channels",
            list_channels,
            name="channels_list",
            summary="Every discovered channel adapter with its configuration and status",
            tags=tags,
            response_model=_OBJECT,
        )
    )
    register(
        RouteSpec(
            "/channels/reload",
            reload_channels,
            methods=("POST",),
            name="channels_reload",
            summary="Re-read config.toml and start, stop or restart only the changed channels",
            tags=tags,
            response_model=_OBJECT,
        )
    )
    register(
        RouteSpec(
            "/channels/{name}",
            get_channel,
            name="channel_get",
            summary="One channel: fields (secrets masked), status and counters",
            tags=tags,
            response_model=_OBJECT,
            responses={404: "Unknown channel"},
        )
    )
    register(
        RouteSpec(
            "/channels/{name}/configure",
            configure_channel,
            methods=("POST",),
            name="channel_configure",
            summary="Set a channel's settings (secrets to the keyring) and hot-start it",
            tags=tags,
            request_model=_CONFIGURE_BODY,
            response_model=_OBJECT,
            responses={400: "A field is missing or invalid", 404: "Unknown channel"},
        )
    )
    register(
        RouteSpec(
            "/channels/{name}/configure",
            remove_channel,
            methods=("DELETE",),
            name="channel_remove",
            summary="Stop a channel and delete its settings and secrets",
            tags=tags,
            response_model=_OBJECT,
            responses={404: "Unknown channel"},
        )
    )
    register(
        RouteSpec(
            "/channels/{name}/test",
            send_test_message,
            methods=("POST",),
            name="channel_test",
            summary="Send a real test message through the channel",
            tags=tags,
            request_model=_TEST_BODY,
            response_model=_OBJECT,
            responses={
                404: "Unknown channel",
                412: "The channel is not configured or not running",
                502: "The platform refused the message",
            },
        )
    )
    register(
        RouteSpec(
            "/channels/{name}/webhook",
            webhook,
            methods=("GET", "POST"),
            name="channel_webhook",
            summary="Platform pushes (each adapter verifies its platform's signature)",
            tags=tags,
            api=False,
            role=None,
            body="protocol",
            responses={
                401: "Signature verification failed",
                404: "Unknown channel or no webhook",
                503: "The channel is not running",
            },
        )
    )
