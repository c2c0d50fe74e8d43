"""Channel settings: a ``[channels.<name>]`` table checked against the adapter's fields.

A section mixes three kinds of keys:

- the adapter's own fields (:attr:`ChannelAdapter.config_fields`), typed;
- for a secret field ``k``, ``k_env = "VAR"`` naming the environment variable holding it
  (LibreFang's form); the value itself lives in the keyring, never in the file;
- the routing policy keys every channel shares (:data:`POLICY_KEYS`, see
  :mod:`fangwire.channelkit.policy`).

Anything else is an error naming the key. Secrets resolve from the keyring first, then the
variable the file names, then the field's default variable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from fangwire.channels import ChannelAdapter, ChannelConfigError, ConfigField
from fangwire.redaction import Redactor
from fangwire.secrets import SecretStore
from fangwire.secrets.value import Secret

#: Keys every channel accepts besides its own fields.
POLICY_KEYS = frozenset(
    {
        "enabled",
        "agent",
        "default_agent",
        "chat_agents",
        "allowed_users",
        "allowed_chats",
        "allowed_rooms",
        "allowed_channels",
        "dm_policy",
        "group_policy",
        "rate_limit_per_user",
        "threading",
        "overrides",
    }
)


def secret_name(channel: str, key: str) -> str:
    """The keyring entry holding secret field ``key`` of ``channel``."""
    return f"channel:{channel}:{key}"


def field_map(adapter: type[ChannelAdapter]) -> dict[str, ConfigField]:
    return {f.key: f for f in adapter.config_fields}


def coerce(field: ConfigField, value: Any, *, path: str | None = None) -> Any:
    """Return ``value`` as ``field``'s type, or raise :class:`ChannelConfigError`.

    Strings are accepted for every type (the reference's forms send everything as text):
    ``"5"`` for a number, ``"a, b"`` for a list, ``"true"``/``"false"`` for a bool.
    """
    where = path or field.key
    match field.type:
        case "number":
            if isinstance(value, bool):
                raise ChannelConfigError(where, "expected a number, got a boolean")
            if isinstance(value, int):
                return value
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value.strip())
            raise ChannelConfigError(where, f"expected a whole number, got {_show(value)}")
        case "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true"
            raise ChannelConfigError(where, f"expected true or false, got {_show(value)}")
        case "list":
            if isinstance(value, str):
                return [part.strip() for part in value.split(",") if part.strip()]
            if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
                return list(value)
            raise ChannelConfigError(where, "expected a list of strings")
        case "select":
            if not isinstance(value, str) or value not in field.options:
                raise ChannelConfigError(where, f"expected one of {', '.join(field.options)}")
            return value
        case _:
            if not isinstance(value, str):
                raise ChannelConfigError(where, f"expected a string, got {_show(value)}")
            if "\n" in value or "\r" in value or "\x00" in value:
                raise ChannelConfigError(where, "must be a single line")
            return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@attrs.frozen
class SplitSection:
    """A section split into the adapter's fields, ``*_env`` names and policy keys."""

    fields: dict[str, Any]
    env_names: dict[str, str]
    policy: dict[str, Any]


def split_section(
    channel: str, adapter: type[ChannelAdapter], table: Mapping[str, Any]
) -> SplitSection:
    """Check every key of ``table``; raise :class:`ChannelConfigError` naming the first bad one."""
    fields = field_map(adapter)
    out = SplitSection(fields={}, env_names={}, policy={})
    for key, value in table.items():
        path = f"channels.{channel}.{key}"
        if key in fields:
            if fields[key].secret:
                raise ChannelConfigError(
                    path, f"is a secret: store it with the API or CLI, or set {key}_env"
                )
            out.fields[key] = coerce(fields[key], value, path=path)
        elif key.endswith("_env") and key.removesuffix("_env") in fields:
            base = key.removesuffix("_env")
            if not fields[base].secret:
                raise ChannelConfigError(path, f"{base} is not a secret field")
            if not isinstance(value, str) or not value.isidentifier():
                raise ChannelConfigError(path, "expected an environment variable name")
            out.env_names[base] = value
        elif key in POLICY_KEYS:
            out.policy[key] = value
        else:
            known = sorted([*fields, *POLICY_KEYS])
            raise ChannelConfigError(path, f"unknown key (known: {', '.join(known)})")
    return out


@attrs.frozen
class Resolved:
    """Typed settings ready for an adapter, and the required fields that have no value."""

    values: dict[str, Any] = attrs.field(repr=False)
    missing: tuple[str, ...]
    #: A stable digest of everything that affects a running adapter (for reload diffs).
    fingerprint: str = attrs.field(repr=False)


async def resolve(
    channel: str,
    adapter: type[ChannelAdapter],
    table: Mapping[str, Any],
    secrets: SecretStore,
    environ: Mapping[str, str],
    redactor: Redactor,
) -> Resolved:
    """Resolve a section into typed values, secrets included (as :class:`Secret`)."""
    section = split_section(channel, adapter, table)
    values: dict[str, Any] = {}
    missing: list[str] = []
    digest = hashlib.sha256()
    for field in adapter.config_fields:
        value: Any = None
        if field.secret:
            stored = await secrets.get(secret_name(channel, field.key))
            if stored is None:
                var = section.env_names.get(field.key) or field.env
                plain = environ.get(var, "") if var else ""
                stored = Secret(plain) if plain else None
                if stored is not None:
                    redactor.add(plain)
            value = stored
            if stored is not None:
                digest.update(f"{field.key}\0{stored.reveal()}\0".encode())
        else:
            value = section.fields.get(field.key, field.default)
            digest.update(f"{field.key}\0{json.dumps(value, default=str)}\0".encode())
        if (value is None or value == "" or value == []) and field.required:
            missing.append(field.key)
        values[field.key] = value
    digest.update(json.dumps(section.policy, sort_keys=True, default=str).encode())
    return Resolved(values=values, missing=tuple(missing), fingerprint=digest.hexdigest())


def required_secret_keys(adapter: type[ChannelAdapter]) -> Sequence[str]:
    return [f.key for f in adapter.config_fields if f.secret and f.required]
