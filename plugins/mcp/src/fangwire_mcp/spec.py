"""What one configured MCP server is: its ``[mcp.servers.<name>]`` table and its API bodies.

A :class:`ServerSpec` holds no secret. Credentials (environment values for stdio servers,
header values for HTTP servers) live in the secret store under :func:`secret_name`; the
configuration only names them.

Three request-body shapes are accepted by :func:`spec_from_body`:

* raw: ``{"name", "transport": {"type": "stdio", "command", "args"}}`` (or ``{"type": "sse" |
  "http", "url"}``), with optional ``timeout_secs``, ``env``, ``headers``, ``template_id``;
* flat: ``{"name", "transport": "stdio", "command", "args"}`` (or ``"url"``);
* catalog: ``{"template_id", "credentials": {...}}``, handled by the routes with the catalog.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, cast

import attrs

TransportType = Literal["stdio", "sse", "http"]
TRANSPORT_TYPES: tuple[str, ...] = ("stdio", "sse", "http")
#: Aliases accepted on input for the transport type.
TRANSPORT_ALIASES = {"streamable_http": "http", "streamable-http": "http", "streamableHttp": "http"}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
DEFAULT_TIMEOUT_SECS = 30
MAX_TIMEOUT_SECS = 600
MAX_ARGS = 256
MAX_TEXT = 4096


class SpecError(ValueError):
    """A server description is invalid; the message names the field."""


@attrs.frozen
class ServerSpec:
    """One MCP server connection as configured. ``env`` and ``headers`` are names only."""

    name: str
    transport: TransportType
    command: str = ""
    args: tuple[str, ...] = ()
    url: str = ""
    env: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    timeout_secs: int = DEFAULT_TIMEOUT_SECS
    template_id: str | None = None
    enabled: bool = True
    health_interval_secs: int = 60
    unhealthy_threshold: int = 3

    def table(self) -> dict[str, Any]:
        """The ``[mcp.servers.<name>]`` table (the name is the key, not a field)."""
        table: dict[str, Any] = {"transport": self.transport}
        if self.transport == "stdio":
            table["command"] = self.command
            table["args"] = list(self.args)
        else:
            table["url"] = self.url
        if self.env:
            table["env"] = list(self.env)
        if self.headers:
            table["headers"] = list(self.headers)
        table["timeout_secs"] = self.timeout_secs
        if self.template_id:
            table["template_id"] = self.template_id
        if not self.enabled:
            table["enabled"] = False
        table["health_interval_secs"] = self.health_interval_secs
        table["unhealthy_threshold"] = self.unhealthy_threshold
        return table

    def transport_view(self) -> dict[str, Any]:
        """The tagged transport object of the reference API (no secrets)."""
        if self.transport == "stdio":
            return {"type": "stdio", "command": self.command, "args": list(self.args)}
        return {"type": self.transport, "url": self.url}


def secret_name(server: str, kind: Literal["env", "header"], key: str) -> str:
    """Where a server's credential is kept in the secret store."""
    return f"mcp/{server}/{kind}/{key}"


def check_name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{field}: required, a non-empty string")
    if not _NAME.match(value):
        raise SpecError(
            f"{field}: {value[:80]!r} is not a valid server name "
            "(1-64 letters, digits, '_' or '-', starting with a letter or digit)"
        )
    return value


def _string(data: Mapping[str, Any], key: str, *, required: bool = False, path: str = "") -> str:
    value = data.get(key)
    where = f"{path}{key}"
    if value is None:
        if required:
            raise SpecError(f"{where}: required")
        return ""
    if not isinstance(value, str):
        raise SpecError(f"{where}: expected a string")
    if required and not value.strip():
        raise SpecError(f"{where}: must not be empty")
    if len(value) > MAX_TEXT or "\x00" in value:
        raise SpecError(f"{where}: too long or contains a NUL character")
    return value


def _strings(data: Mapping[str, Any], key: str, path: str = "") -> tuple[str, ...]:
    value = data.get(key)
    where = f"{path}{key}"
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where}: expected a list of strings")
    if len(value) > MAX_ARGS:
        raise SpecError(f"{where}: at most {MAX_ARGS} entries")
    for item in value:
        if len(item) > MAX_TEXT or "\x00" in item:
            raise SpecError(f"{where}: an entry is too long or contains a NUL character")
    return tuple(value)


def _int(data: Mapping[str, Any], key: str, default: int, maximum: int) -> int:
    value = data.get(key, default)
    if type(value) is not int or not 0 < value <= maximum:
        raise SpecError(f"{key}: expected an integer from 1 to {maximum}")
    return value


def _transport_type(value: Any, where: str) -> TransportType:
    if not isinstance(value, str):
        raise SpecError(f"{where}: expected one of {', '.join(TRANSPORT_TYPES)}")
    value = TRANSPORT_ALIASES.get(value, value)
    if value not in TRANSPORT_TYPES:
        raise SpecError(
            f"{where}: unknown transport {value[:40]!r}; expected one of "
            + ", ".join(TRANSPORT_TYPES)
        )
    return cast(TransportType, value)


def _check_url(url: str, where: str) -> str:
    if not url.lower().startswith(("http://", "https://")):
        raise SpecError(f"{where}: expected an http:// or https:// URL")
    return url


Credentials = dict[tuple[Literal["env", "header"], str], str]

_BODY_KEYS = frozenset(
    {
        "name",
        "transport",
        "command",
        "args",
        "url",
        "env",
        "headers",
        "timeout_secs",
        "template_id",
        "enabled",
        "credentials",
        "health_interval_secs",
        "unhealthy_threshold",
    }
)
_TRANSPORT_KEYS = frozenset({"type", "command", "args", "url"})


def _env(value: Any, credentials: Credentials) -> tuple[str, ...]:
    """``env`` as a list of names, or an object of name to value (values become secrets)."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        names = []
        for key, item in value.items():
            if not isinstance(item, str):
                raise SpecError(f"env.{key}: expected a string value")
            credentials[("env", _env_name(key, "env"))] = item
            names.append(key)
        return tuple(names)
    if isinstance(value, list):
        return tuple(_env_name(item, "env") for item in value)
    raise SpecError("env: expected a list of variable names or an object of name to value")


def _env_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise SpecError(f"{where}: {str(value)[:60]!r} is not a valid environment variable name")
    return value


def _headers(value: Any, credentials: Credentials) -> tuple[str, ...]:
    """``headers`` as ``["Name: value"]`` or ``{"Name": "value"}``; values become secrets.

    A bare ``"Name"`` (as stored in config.toml) names a header whose value is already kept.
    """
    if value is None:
        return ()
    pairs: list[tuple[str, str | None]] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(item, str):
                raise SpecError(f"headers.{key}: expected a string value")
            pairs.append((key, item))
    elif isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                raise SpecError("headers: expected strings like 'Name: value'")
            name, sep, rest = item.partition(":")
            pairs.append((name.strip(), rest.strip() if sep else None))
    else:
        raise SpecError("headers: expected a list of 'Name: value' or an object")
    names = []
    for name, item in pairs:
        if not _HEADER_NAME.match(name):
            raise SpecError(f"headers: {name[:60]!r} is not a valid header name")
        if item is not None:
            if "\r" in item or "\n" in item:
                raise SpecError(f"headers.{name}: value contains a line break")
            credentials[("header", name)] = item
        names.append(name)
    return tuple(names)


def spec_from_body(
    data: Mapping[str, Any], *, name: str | None = None
) -> tuple[ServerSpec, Credentials]:
    """A spec and its credentials from a raw or flat request body (or a config table).

    ``name`` (from the URL or the config key) wins over the body's ``name``. Unknown keys are
    refused, naming them.
    """
    unknown = sorted(set(data) - _BODY_KEYS)
    if unknown:
        raise SpecError(f"{unknown[0]}: unknown key")
    server = check_name(name if name is not None else data.get("name"))
    credentials: Credentials = {}
    transport = data.get("transport")
    source: Mapping[str, Any] = data
    path = ""
    if isinstance(transport, Mapping):
        extra = sorted(set(transport) - _TRANSPORT_KEYS)
        if extra:
            raise SpecError(f"transport.{extra[0]}: unknown key")
        kind = _transport_type(transport.get("type"), "transport.type")
        source, path = transport, "transport."
        for key in ("command", "args", "url"):
            if key in data:
                raise SpecError(f"{key}: belongs inside transport")
    elif transport is None:
        raise SpecError("transport: required (stdio, sse or http)")
    else:
        kind = _transport_type(transport, "transport")
    command = args = url = None
    if kind == "stdio":
        command = _string(source, "command", required=True, path=path)
        args = _strings(source, "args", path)
        if source.get("url") is not None:
            raise SpecError(f"{path}url: not used by the stdio transport")
    else:
        url = _check_url(_string(source, "url", required=True, path=path), f"{path}url")
        if source.get("command") is not None:
            raise SpecError(f"{path}command: not used by the {kind} transport")
    template_id = data.get("template_id")
    if template_id is not None and not isinstance(template_id, str):
        raise SpecError("template_id: expected a string")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SpecError("enabled: expected true or false")
    raw_credentials = data.get("credentials")
    if raw_credentials is not None:
        if not isinstance(raw_credentials, Mapping):
            raise SpecError("credentials: expected an object of name to value")
        for key, item in raw_credentials.items():
            if not isinstance(item, str):
                raise SpecError(f"credentials.{key}: expected a string")
            credentials[("env", _env_name(key, "credentials"))] = item
    env = _env(data.get("env"), credentials)
    env = tuple(dict.fromkeys(env + tuple(k for kind_, k in credentials if kind_ == "env")))
    headers = _headers(data.get("headers"), credentials)
    if headers and kind == "stdio":
        raise SpecError("headers: not used by the stdio transport")
    spec = ServerSpec(
        name=server,
        transport=kind,
        command=command or "",
        args=args or (),
        url=url or "",
        env=env,
        headers=headers,
        timeout_secs=_int(data, "timeout_secs", DEFAULT_TIMEOUT_SECS, MAX_TIMEOUT_SECS),
        template_id=template_id or None,
        enabled=enabled,
        health_interval_secs=_int(data, "health_interval_secs", 60, 86400),
        unhealthy_threshold=_int(data, "unhealthy_threshold", 3, 1000),
    )
    return spec, credentials
