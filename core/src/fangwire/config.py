"""fangwire's configuration: ``config.toml`` read into frozen attrs classes.

One cattrs converter, with ``forbid_extra_keys``, structures the file. A bad file fails at
start with :class:`ConfigError`, whose message names the key path and the problem, e.g.
``config.toml: rate_limit.api_requests_per_minute: expected an integer, got 'lots'``.

Sections owned by plugins (``[channels.<name>]``, ...) are kept as raw tables here and
validated by their owners.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import tomllib
import typing
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn

MiB = 1024 * 1024
DEFAULT_PORT = 4545


class FieldValueError(ValueError):
    """A validator's complaint about one field; carries the field's key for error paths."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise FieldValueError(attribute.name, f"must be a positive number, got {value}")


@attrs.frozen
class HttpConfig:
    """``[http]``: limits and browser-facing policy of the HTTP API."""

    max_request_body_bytes: int = attrs.field(default=8 * MiB, validator=_positive)
    max_protocol_body_bytes: int = attrs.field(default=1 * MiB, validator=_positive)
    max_hooks_body_bytes: int = attrs.field(default=64 * 1024, validator=_positive)
    max_json_depth: int = attrs.field(default=64, validator=_positive)
    #: Browser origins allowed to call the API (CORS and the Origin check). Empty: none.
    cors_origins: tuple[str, ...] = ()
    #: Extra Host header values accepted while the daemon runs without an API key.
    allowed_hosts: tuple[str, ...] = ()
    max_log_streams: int = attrs.field(default=8, validator=_positive)
    #: A request's headers must arrive within this many seconds of its first byte.
    header_timeout_seconds: float = attrs.field(default=10.0, validator=_positive)
    #: A request's body must arrive within this many seconds of its headers.
    body_timeout_seconds: float = attrs.field(default=60.0, validator=_positive)


@attrs.frozen
class RateLimitConfig:
    """``[rate_limit]``: GCRA per client, and the stricter limiter for failed logins."""

    api_requests_per_minute: int = attrs.field(default=500, validator=_positive)
    #: Cost units a client may spend back to back; defaults to one minute's worth.
    burst: int | None = None
    #: Turning this off removes the per-client limit (the failed-credential lockout stays).
    enabled: bool = True
    #: Also limit loopback callers when an API key is configured.
    apply_to_loopback: bool = True
    auth_failures_allowed: int = attrs.field(default=10, validator=_positive)
    auth_failure_window_seconds: int = attrs.field(default=900, validator=_positive)


@attrs.frozen
class LoggingConfig:
    """``[logging]``."""

    level: Literal["debug", "info", "warning", "error", "critical"] = "info"


@attrs.frozen
class AuditConfig:
    """``[audit]``: checkpoints of the tamper-evident log, and ``[audit.sinks.<id>]`` tables
    validated by each audit sink."""

    #: Sign a checkpoint after this many new entries...
    checkpoint_every: int = attrs.field(default=100, validator=_positive)
    #: ...or this many seconds after the first entry not yet covered, whichever comes first.
    checkpoint_interval_seconds: float = attrs.field(default=10.0, validator=_positive)
    sinks: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)


@attrs.frozen
class AgentsConfig:
    """``[agents]``."""

    #: Create the ``assistant`` agent (offline ``echo`` provider) in a home that has none.
    default_agent: bool = True


@attrs.frozen
class PluginsConfig:
    """``[plugins]``."""

    #: Plugin names (entry-point names, ``group:name`` or distributions) not to load.
    disabled: tuple[str, ...] = ()


@attrs.frozen
class SecretsConfig:
    """``[secrets]``: where secrets are kept."""

    backend: Literal["auto", "system", "file", "memory"] = "auto"


_SHA256_HASH = re.compile(r"^\$sha256\$[0-9a-fA-F]{64}$")


def _check_key_hash(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value and not _SHA256_HASH.match(value.strip()):
        raise FieldValueError(
            attribute.name, "must look like '$sha256$<64 hex digits>' (fangwire accepts SHA-256)"
        )


def _check_listen(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        parse_listen(value)
    except ValueError as exc:
        raise FieldValueError(attribute.name, str(exc)) from None


@attrs.frozen
class Config:
    """The whole ``config.toml``. Top-level keys follow LibreFang where they overlap."""

    api_listen: str = attrs.field(default=f"127.0.0.1:{DEFAULT_PORT}", validator=_check_listen)
    #: Master API key (or several, one per line). Kept out of ``repr``.
    api_key: str = attrs.field(default="", repr=False)
    #: ``$sha256$<hex>`` of the master API key, instead of ``api_key``.
    api_key_hash: str = attrs.field(default="", repr=False, validator=_check_key_hash)
    #: Ed25519 public keys (base64 of the 32 raw bytes) whose signed manifests are trusted.
    trusted_manifest_signers: tuple[str, ...] = ()
    http: HttpConfig = attrs.field(factory=HttpConfig)
    rate_limit: RateLimitConfig = attrs.field(factory=RateLimitConfig)
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)
    plugins: PluginsConfig = attrs.field(factory=PluginsConfig)
    secrets: SecretsConfig = attrs.field(factory=SecretsConfig)
    #: ``[usage_prices."<provider>/<model>"]``: price overrides for the model catalog.
    usage_prices: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: ``[providers.<id>]`` tables (base URLs, key names), validated by each model provider.
    providers: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: ``[channels.<name>]`` tables, validated by each channel adapter.
    channels: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: ``[mcp]`` (MCP client and server settings, ``[mcp.servers.<name>]`` connections),
    #: validated by the MCP plugin.
    mcp: Mapping[str, Any] = attrs.field(factory=dict)
    audit: AuditConfig = attrs.field(factory=AuditConfig)
    agents: AgentsConfig = attrs.field(factory=AgentsConfig)
    #: ``[a2a]`` table (card identity, outbound allowlist, task retention), validated by the
    #: A2A plugin.
    a2a: Mapping[str, Any] = attrs.field(factory=dict)


class ConfigError(Exception):
    """The configuration is invalid. The message names the key path and the problem."""


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) and check both parts."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected 'host:port', got {value!r}")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port must be a number, got {port_text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    return host, port


@functools.lru_cache(maxsize=1024)
def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_converter() -> cattrs.Converter:
    """The converter for configuration and JSON bodies: strict about unknown keys and types."""
    converter = cattrs.Converter(forbid_extra_keys=True)

    def structure_strict(expected: type[Any], name: str) -> Any:
        def hook(value: Any, _: type[Any]) -> Any:
            # bool is an int subclass; a quoted number is still text. Be exact.
            if type(value) is not expected and not (expected is float and type(value) is int):
                raise TypeError(f"expected {name}, got {_describe(value)}")
            return expected(value)

        return hook

    def attrs_factory(cls: type[Any]) -> Any:
        inner = make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True)

        def hook(value: Any, target: type[Any]) -> Any:
            if not isinstance(value, Mapping):
                raise TypeError(f"expected a table, got {_describe(value)}")
            return inner(value, target)

        return hook

    def literal_factory(tp: Any) -> Any:
        allowed = typing.get_args(tp)

        def hook(value: Any, _: Any) -> Any:
            if value not in allowed:
                choices = ", ".join(repr(a) for a in allowed)
                raise ValueError(f"expected one of {choices}, got {_describe(value)}")
            return value

        return hook

    def sequence_factory(tp: Any) -> Any:
        # cattrs would happily turn the string "abc" into ["a", "b", "c"]; JSON lists only.
        if typing.get_origin(tp) is list:
            inner_hook = list_structure_factory(tp, converter)
        else:
            inner_hook = homogenous_tuple_structure_factory(tp, converter)

        def hook(value: Any, target: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise TypeError(f"expected a list, got {_describe(value)}")
            return inner_hook(value, target)

        return hook

    converter.register_structure_hook_factory(attrs.has, attrs_factory)

    def is_homogeneous_sequence(tp: Any) -> bool:
        origin: Any = typing.get_origin(tp)
        args = typing.get_args(tp)
        return origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis)

    converter.register_structure_hook_factory(is_homogeneous_sequence, sequence_factory)
    converter.register_structure_hook_factory(
        lambda tp: typing.cast(Any, typing.get_origin(tp)) is Literal, literal_factory
    )
    converter.register_structure_hook(str, structure_strict(str, "a string"))
    converter.register_structure_hook(int, structure_strict(int, "an integer"))
    converter.register_structure_hook(float, structure_strict(float, "a number"))
    converter.register_structure_hook(bool, structure_strict(bool, "true or false"))
    return converter


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def format_structure_error(exc: Exception, *, root: str = "") -> str:
    """Render a cattrs error as ``path: problem`` lines, one per problem."""
    lines: list[str] = []

    def walk(error: BaseException, path: str) -> None:
        if isinstance(error, ForbiddenExtraKeysError):
            for key in sorted(error.extra_fields):
                lines.append(f"{_join(path, key)}: unknown key")
            return
        if isinstance(error, ClassValidationError | IterableValidationError):
            with_notes, without = error.group_exceptions()
            for sub, note in with_notes:
                name = getattr(note, "name", None)
                index = getattr(note, "index", None)
                step = str(name) if name is not None else f"[{index}]"
                walk(sub, _join(path, step) if name is not None else f"{path}{step}")
            for sub in without:
                walk(sub, path)
            return
        if isinstance(error, FieldValueError):
            lines.append(f"{_join(path, error.key)}: {error}")
            return
        if isinstance(error, KeyError):
            lines.append(f"{path or '(top)'}: missing required key")
            return
        lines.append(f"{path or '(top)'}: {error}")

    walk(exc, root)
    return "\n".join(lines) if lines else str(exc)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def structure_config(data: Mapping[str, Any], converter: cattrs.Converter, source: str) -> Config:
    """Turn parsed TOML into :class:`Config`, raising :class:`ConfigError` on any problem."""
    try:
        return converter.structure(dict(data), Config)
    except Exception as exc:
        problems = format_structure_error(exc).splitlines()
        raise ConfigError("\n".join(f"{source}: {line}" for line in problems)) from exc


def parse_config_text(text: str, converter: cattrs.Converter, source: str) -> Config:
    """Parse TOML text and structure it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    return structure_config(data, converter, source)
