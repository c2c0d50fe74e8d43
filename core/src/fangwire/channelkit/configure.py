"""Configuring a channel from the API or CLI: validate, store secrets, write config, hot-start.

:func:`configure` takes the values an operator sends — the document's flat form
(``{"token": "...", "agent_name": "..."}``) or the reference's ``{"fields": {...}}`` — checks
every key against the adapter's fields and the shared policy keys, refuses the whole change if
anything is wrong (naming the key), then writes secret values to the keyring, the rest to
``[channels.<name>]`` in config.toml, and restarts only that channel. Secret values never reach
the file, the audit log or the response.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from fangwire.channelkit import settings as channel_settings
from fangwire.channelkit.policy import ChannelPolicy
from fangwire.channels import ChannelAdapter, ChannelConfigError

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

#: Keys of the document's flat form that name a shared setting.
ALIASES = {"agent_name": "agent", "default_agent": "agent"}


@attrs.frozen
class ConfigureResult:
    channel: str
    activated: bool
    started: tuple[str, ...]
    problem: str | None
    secrets_stored: tuple[str, ...]
    settings_written: tuple[str, ...]


def _token_field(adapter: type[ChannelAdapter]) -> str | None:
    secrets = [f for f in adapter.config_fields if f.secret]
    tokens = [f for f in secrets if "token" in f.key]
    if len(tokens) == 1:
        return tokens[0].key
    required = [f for f in secrets if f.required]
    return required[0].key if len(required) == 1 else None


def split_values(
    name: str, adapter: type[ChannelAdapter], values: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, Any]]:
    """Secrets to store, and config keys to write; :class:`ChannelConfigError` on a bad key."""
    fields = channel_settings.field_map(adapter)
    secrets: dict[str, str] = {}
    plain: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = ALIASES.get(raw_key, raw_key)
        if key == "token" and key not in fields:
            key = _token_field(adapter) or key
        base = key.removesuffix("_env")
        if (key in fields and fields[key].secret) or (
            key.endswith("_env") and base in fields and fields[base].secret
        ):
            field_key = key if key in fields else base
            if not isinstance(value, str) or not value.strip():
                raise ChannelConfigError(raw_key, "expected a non-empty string")
            if "\n" in value or "\x00" in value:
                raise ChannelConfigError(raw_key, "must be a single line")
            secrets[field_key] = value.strip()
        elif key in fields:
            if value == "" and not fields[key].required:
                plain[key] = None  # an empty form field clears the setting
            else:
                plain[key] = channel_settings.coerce(fields[key], value, path=raw_key)
        elif key in channel_settings.POLICY_KEYS:
            plain[key] = value
        else:
            known = sorted([*fields, *channel_settings.POLICY_KEYS])
            raise ChannelConfigError(raw_key, f"unknown setting (known: {', '.join(known)})")
    return secrets, plain


async def configure(
    runtime: Runtime, name: str, values: Mapping[str, Any], *, actor: str
) -> ConfigureResult:
    manager = runtime.channels
    adapter = manager.adapter_class(name)
    secrets, plain = split_values(name, adapter, values)
    section = dict(manager.section(name) or {})
    for key, value in plain.items():
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value
    for key in secrets:
        section.pop(f"{key}_env", None)  # the keyring value wins; drop a stale indirection
    split = channel_settings.split_section(name, adapter, section)
    ChannelPolicy.parse(name, split.policy)
    resolved = await channel_settings.resolve(
        name, adapter, section, runtime.secrets, runtime.environ, runtime.redactor
    )
    missing = [key for key in resolved.missing if key not in secrets]
    if missing:
        raise ChannelConfigError(missing[0], "required")
    for key, value in secrets.items():
        await runtime.secrets.set(channel_settings.secret_name(name, key), value)
    await runtime.change_config(["channels", name], section, actor=actor)
    await runtime.audit.record(
        "channel_configured",
        details={
            "channel": name,
            "actor": actor,
            "secrets": sorted(secrets),
            "keys": sorted(plain),
        },
    )
    reload = await manager.reload(reread=False)
    started = reload.started + reload.restarted
    return ConfigureResult(
        channel=name,
        activated=name in manager.runners,
        started=started,
        problem=manager.problems.get(name),
        secrets_stored=tuple(sorted(secrets)),
        settings_written=tuple(sorted(plain)),
    )


async def remove(runtime: Runtime, name: str, *, actor: str) -> tuple[bool, int]:
    """Stop the channel, delete its secrets and its section. Returns (section existed, secrets
    deleted)."""
    manager = runtime.channels
    adapter = manager.adapter_class(name)
    existed = manager.section(name) is not None
    if existed:
        await runtime.change_config(["channels", name], None, actor=actor, remove=True)
    deleted = 0
    for field in adapter.config_fields:
        if field.secret and await runtime.secrets.delete(
            channel_settings.secret_name(name, field.key)
        ):
            deleted += 1
    await runtime.audit.record(
        "channel_removed", details={"channel": name, "actor": actor, "secrets_deleted": deleted}
    )
    await manager.reload(reread=False)
    return existed, deleted
