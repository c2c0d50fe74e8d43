"""Plugin discovery and loading.

Plugins are found through five entry-point groups. Entry points are scanned once per process
(listing them imports nothing); each plugin module is then imported and registered inside its
own guard, so a broken plugin is recorded as ``failed`` with its error and the daemon still
starts. There is no global plugin manager: :func:`create_plugin_manager` returns a fresh one.

Environment:

``FANGWIRE_DISABLE_PLUGINS``
    Comma-separated plugin names (entry-point names, ``group:name`` or distribution names)
    that are not loaded; they are listed as ``disabled``.
``FANGWIRE_STRICT_PLUGINS``
    When ``1``, a plugin that fails to load raises instead of being recorded.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import traceback
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Literal

import attrs
import pluggy

from fangwire import hookspecs
from fangwire.hooks import Hooks

GROUPS: tuple[str, ...] = (
    "fangwire.channels",
    "fangwire.transports",
    "fangwire.auth",
    "fangwire.policies",
    "fangwire.audit",
)

#: Plugins that are part of the core itself and always loaded (the HTTP routes of the core).
BUILTIN_PLUGINS: tuple[str, ...] = (
    "fangwire.defaults.core_routes",
    "fangwire.defaults.logs_routes",
    "fangwire.defaults.audit_routes",
    "fangwire.defaults.security_routes",
    "fangwire.defaults.agent_routes",
    "fangwire.defaults.provider_echo",
    "fangwire.defaults.provider_openai",
    "fangwire.defaults.usage_routes",
    "fangwire.defaults.comms_routes",
    "fangwire.defaults.channel_routes",
)

PluginStatus = Literal["loaded", "failed", "disabled"]


class PluginLoadError(Exception):
    """Raised in strict mode when a plugin fails to load."""


@attrs.frozen
class EntryPointInfo:
    """An installed entry point, known without importing it."""

    name: str
    group: str
    value: str
    distribution: str | None
    version: str | None

    @classmethod
    def from_entry_point(cls, ep: EntryPoint) -> EntryPointInfo:
        dist = ep.dist
        return cls(
            name=ep.name,
            group=ep.group,
            value=ep.value,
            distribution=dist.metadata["Name"] if dist is not None else None,
            version=dist.version if dist is not None else None,
        )


@attrs.define
class PluginRecord:
    """What ``/-/plugins`` shows for one plugin."""

    name: str
    group: str
    module: str
    distribution: str | None
    version: str | None
    status: PluginStatus
    error: str | None = None
    hooks: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "group": self.group,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "hooks": list(self.hooks),
        }


@functools.cache
def scan_entry_points() -> tuple[EntryPointInfo, ...]:
    """Every installed entry point in fangwire's groups, read once per process."""
    found: list[EntryPointInfo] = []
    for group in GROUPS:
        found.extend(EntryPointInfo.from_entry_point(ep) for ep in entry_points(group=group))
    return tuple(sorted(found, key=lambda e: (e.group, e.name)))


def parse_disabled(value: str | None) -> frozenset[str]:
    """Parse a comma-separated ``FANGWIRE_DISABLE_PLUGINS`` value."""
    if not value:
        return frozenset()
    return frozenset(part.strip() for part in value.split(",") if part.strip())


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus fangwire's own plugin records and a typed hook facade."""

    def __init__(self, *, strict: bool = False) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.strict = strict
        self.records: dict[str, PluginRecord] = {}
        #: Increases whenever a record is added or changes status (for caching listings).
        self.revision = 0
        self._listing: tuple[int, bytes] | None = None
        self.hooks = Hooks(self)

    def listing_json(self) -> bytes:
        """``{"plugins": [...], "total": n}`` as JSON, re-rendered only after a change."""
        if self._listing is None or self._listing[0] != self.revision:
            records = sorted(self.records.values(), key=lambda r: (r.group, r.name))
            body = json.dumps(
                {"plugins": [r.to_json() for r in records], "total": len(records)},
                separators=(",", ":"),
            ).encode("utf-8")
            self._listing = (self.revision, body)
        return self._listing[1]

    def load_plugin(
        self,
        *,
        name: str,
        group: str,
        module: str,
        distribution: str | None,
        version: str | None,
    ) -> PluginRecord:
        """Import ``module`` and register it under ``name``, recording the outcome."""
        record = PluginRecord(
            name=name,
            group=group,
            module=module,
            distribution=distribution,
            version=version,
            status="loaded",
        )
        self.records[name] = record
        self.revision += 1
        try:
            plugin = _import_target(module)
            self.register(plugin, name=name)
            try:
                self.check_pending()
            except pluggy.PluginValidationError:
                self.unregister(name=name)
                raise
        except Exception as exc:
            self.fail(name, exc)
        else:
            record.hooks = tuple(sorted(h.name for h in self.get_hookcallers(plugin) or ()))
        return record

    def register_object(self, plugin: object, *, name: str, group: str = "builtin") -> None:
        """Register an in-process plugin object (tests, embedding applications)."""
        self.register(plugin, name=name)
        self.check_pending()
        module = getattr(plugin, "__name__", type(plugin).__qualname__)
        self.revision += 1
        self.records[name] = PluginRecord(
            name=name,
            group=group,
            module=str(module),
            distribution=None,
            version=None,
            status="loaded",
            hooks=tuple(sorted(h.name for h in self.get_hookcallers(plugin) or ())),
        )

    def fail(self, name: str, exc: BaseException) -> None:
        """Mark plugin ``name`` as failed (unregistering it) or raise in strict mode."""
        if self.strict:
            raise PluginLoadError(f"plugin {name!r} failed: {exc}") from exc
        if self.has_plugin(name):
            self.unregister(name=name)
        record = self.records.get(name)
        self.revision += 1
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if record is not None:
            record.status = "failed"
            record.error = message

    def disable(self, info: EntryPointInfo) -> None:
        self.set_blocked(info.name)
        self.revision += 1
        self.records[info.name] = PluginRecord(
            name=info.name,
            group=info.group,
            module=info.value,
            distribution=info.distribution,
            version=info.version,
            status="disabled",
        )


def _import_target(value: str) -> ModuleType | object:
    module_name, _, attr = value.partition(":")
    module = importlib.import_module(module_name.strip())
    if not attr:
        return module
    target: object = module
    for part in attr.strip().split("."):
        target = getattr(target, part)
    return target


def _is_disabled(info: EntryPointInfo, disabled: frozenset[str]) -> bool:
    return bool({info.name, f"{info.group}:{info.name}", info.distribution or ""} & disabled)


def create_plugin_manager(
    *,
    load_entrypoints: bool = True,
    disabled: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    strict: bool | None = None,
) -> PluginManager:
    """Return a fresh plugin manager with the built-in plugins and, unless told otherwise, every
    installed entry-point plugin.

    ``disabled`` adds to ``FANGWIRE_DISABLE_PLUGINS``. ``strict`` defaults to
    ``FANGWIRE_STRICT_PLUGINS``.
    """
    env = os.environ if environ is None else environ
    if strict is None:
        strict = env.get("FANGWIRE_STRICT_PLUGINS", "") == "1"
    pm = PluginManager(strict=strict)
    blocked = parse_disabled(env.get("FANGWIRE_DISABLE_PLUGINS")) | frozenset(disabled)
    for module in BUILTIN_PLUGINS:
        pm.load_plugin(
            name=module.rsplit(".", 1)[-1],
            group="builtin",
            module=module,
            distribution="fangwire",
            version=_core_version(),
        )
    if load_entrypoints:
        for info in scan_entry_points():
            if info.name in pm.records:
                pm.records[f"{info.group}:{info.name}"] = PluginRecord(
                    name=f"{info.group}:{info.name}",
                    group=info.group,
                    module=info.value,
                    distribution=info.distribution,
                    version=info.version,
                    status="failed",
                    error=f"plugin name {info.name!r} is already taken by "
                    f"{pm.records[info.name].distribution or 'another plugin'}",
                )
                continue
            if _is_disabled(info, blocked):
                pm.disable(info)
                continue
            pm.load_plugin(
                name=info.name,
                group=info.group,
                module=info.value,
                distribution=info.distribution,
                version=info.version,
            )
    return pm


def _core_version() -> str:
    from fangwire import __version__

    return __version__
