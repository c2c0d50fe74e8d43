"""The runtime: everything a running fangwire holds, built from the plugin registry.

A :class:`Runtime` is built synchronously (configuration, plugins, registered objects) and
then served inside :meth:`Runtime.serving`, an async context that opens the store, creates the
shared HTTP client, starts transports and runs the plugins' ``startup`` hooks, and undoes all
of it in reverse order on exit.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import cattrs
import httpx

from fangwire import __version__
from fangwire.agents import AgentRegistry
from fangwire.audit import AuditSink
from fangwire.auditlog.service import AuditService
from fangwire.auth import AuthProvider
from fangwire.budget import BudgetPolicy
from fangwire.budgeting.gate import BudgetGate
from fangwire.bus import Bus
from fangwire.channelkit.manager import ChannelManager
from fangwire.channels import ChannelAdapter
from fangwire.config import Config, ConfigError, make_converter
from fangwire.configfile import ConfigFile
from fangwire.home import CONFIG_FILE_NAME, ensure_home, resolve_home
from fangwire.logs import LogHub
from fangwire.models import ModelProvider
from fangwire.plugins import PluginManager, create_plugin_manager
from fangwire.redaction import Redactor
from fangwire.secrets import ChosenBackend, SecretStore, SecretStoreError, choose_backend
from fangwire.security.probes import register_core_probes
from fangwire.security.registry import SecurityRegistry
from fangwire.store import Store, open_store
from fangwire.store.core_migrations import CORE_MIGRATIONS
from fangwire.transports import Transport
from fangwire.usage import USAGE_MIGRATIONS, ModelCatalog, UsageMeter

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

    from fangwire.http.routes import RouteSpec

log = logging.getLogger("fangwire.runtime")

T = TypeVar("T")

#: Timeout for the shared outbound HTTP client (connect, read, write, pool), in seconds.
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class RegistryError(Exception):
    """Two plugins registered the same name."""


class Runtime:
    """A configured fangwire instance: configuration, plugins, store, secrets and services."""

    def __init__(
        self,
        *,
        home: Path,
        config_file: ConfigFile,
        config: Config,
        converter: cattrs.Converter,
        pm: PluginManager,
        secrets: SecretStore,
        secrets_backend: ChosenBackend,
        store: Store,
        redactor: Redactor,
        environ: Mapping[str, str],
        log_hub: LogHub,
    ) -> None:
        self.home = home
        self.config_file = config_file
        self.config = config
        self.converter = converter
        self.pm = pm
        self.secrets = secrets
        self.secrets_backend = secrets_backend
        self.store = store
        self.redactor = redactor
        self.environ = environ
        self.log_hub = log_hub
        self.bus = Bus()
        self.security = SecurityRegistry()
        try:
            self.catalog = ModelCatalog(config.usage_prices, source="usage_prices")
        except ValueError as exc:
            raise ConfigError(f"config.toml: {exc}") from exc
        self.usage = UsageMeter(store, self.catalog)
        self.agents = AgentRegistry(self)
        self.budget = BudgetGate(self)
        self.audit = AuditService(
            store=store,
            home=home,
            redactor=redactor,
            config=lambda: self.config.audit,
            sinks=lambda: self.audit_sinks,
        )
        self.version = __version__
        self.started_at: float | None = None
        self._http: httpx.AsyncClient | None = None
        self.channels = ChannelManager(self, {})
        self.transports: dict[str, Transport] = {}
        self.auth_providers: list[AuthProvider] = []
        self.budget_policies: dict[str, BudgetPolicy] = {}
        self.audit_sinks: dict[str, AuditSink] = {}
        self.model_providers: dict[str, ModelProvider] = {}
        self.routes: list[tuple[str, RouteSpec]] = []
        self._owners: dict[int, str] = {}
        self._build_registry()
        register_core_probes(self)
        self.security.register("session_repair", self.agents.repair_state)
        self.security.register("capability_inheritance_validation", self.agents.inheritance_state)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        home: Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        pm: PluginManager | None = None,
        keyring_backend: KeyringBackend | None = None,
        store: Store | None = None,
        log_hub: LogHub | None = None,
    ) -> Runtime:
        """Load the configuration of ``home`` (default: ``$FANGWIRE_HOME`` or ``~/.fangwire``)
        and build the registry. Raises :class:`~fangwire.config.ConfigError` on a bad config.
        """
        env = dict(os.environ if environ is None else environ)
        home = ensure_home(home if home is not None else resolve_home(env))
        converter = make_converter()
        config_file = ConfigFile(home / CONFIG_FILE_NAME, converter)
        config = config_file.load()
        if pm is None:
            pm = create_plugin_manager(disabled=config.plugins.disabled, environ=env)
        pm.hooks.configure_converter(converter)
        redactor = Redactor()
        if keyring_backend is None:
            try:
                chosen = choose_backend(home, env, config.secrets.backend)
            except (ValueError, SecretStoreError) as exc:
                raise ConfigError(f"secrets: {exc}") from exc
        else:
            chosen = ChosenBackend(
                backend=keyring_backend, kind="memory", description="supplied backend"
            )
        secrets = SecretStore(chosen.backend, redactor)
        for key in (config.api_key, env.get("FANGWIRE_API_KEY", "")):
            for line in key.splitlines():
                redactor.add(line.strip())
        return cls(
            home=home,
            config_file=config_file,
            config=config,
            converter=converter,
            pm=pm,
            secrets=secrets,
            secrets_backend=chosen,
            store=store if store is not None else open_store(home),
            redactor=redactor,
            environ=env,
            log_hub=log_hub
            if log_hub is not None
            else LogHub(redactor, max_subscribers=config.http.max_log_streams),
        )

    def _build_registry(self) -> None:
        hooks = self.pm.hooks
        self.channels = ChannelManager(self, self._channel_classes(hooks.register_channels()))
        self._check_channel_entry_points()
        self.transports = self._instantiate(
            hooks.register_transports(), "transport_id", "transport"
        )
        providers = self._instantiate(
            hooks.register_auth_providers(), "provider_id", "auth provider"
        )
        self.auth_providers = sorted(providers.values(), key=lambda p: (p.order, p.provider_id))
        self.budget_policies = self._instantiate(
            hooks.register_budget_policies(), "policy_id", "budget policy"
        )
        self.audit_sinks = self._instantiate(hooks.register_audit_sinks(), "sink_id", "audit sink")
        self.model_providers = self._instantiate(
            hooks.register_model_providers(), "provider_id", "model provider"
        )
        self.routes = self._collect_routes()
        self._prune_failed()

    def _prune_failed(self) -> None:
        """Drop every object whose plugin failed at any point while the registry was built."""

        def alive(obj: object) -> bool:
            return self.pm.has_plugin(self._owners[id(obj)])

        self.channels.classes = {k: v for k, v in self.channels.classes.items() if alive(v)}
        self.transports = {k: v for k, v in self.transports.items() if alive(v)}
        self.auth_providers = [p for p in self.auth_providers if alive(p)]
        self.budget_policies = {k: v for k, v in self.budget_policies.items() if alive(v)}
        self.audit_sinks = {k: v for k, v in self.audit_sinks.items() if alive(v)}
        self.model_providers = {k: v for k, v in self.model_providers.items() if alive(v)}
        self.routes = [(owner, spec) for owner, spec in self.routes if self.pm.has_plugin(owner)]

    def _instantiate(
        self, registered: list[tuple[str, type[T]]], id_attr: str, kind: str
    ) -> dict[str, T]:
        instances: dict[str, T] = {}
        owners: dict[str, str] = {}
        for plugin_name, cls in registered:
            if not self.pm.has_plugin(plugin_name):
                continue
            key = getattr(cls, id_attr, "")
            try:
                if not key:
                    raise RegistryError(f"{kind} class {cls.__qualname__} sets no {id_attr}")
                if key in instances:
                    raise RegistryError(
                        f"{kind} {key!r} is already registered by plugin {owners[key]!r}"
                    )
                instance = cls(self)  # type: ignore[call-arg]
                instances[key] = instance
                owners[key] = plugin_name
                self._owners[id(instance)] = plugin_name
            except Exception as exc:
                self.pm.fail(plugin_name, exc)
        return instances

    def _channel_classes(
        self, registered: list[tuple[str, type[ChannelAdapter]]]
    ) -> dict[str, type[ChannelAdapter]]:
        classes: dict[str, type[ChannelAdapter]] = {}
        for plugin_name, cls in registered:
            if not self.pm.has_plugin(plugin_name):
                continue
            try:
                if not isinstance(cls, type) or not issubclass(cls, ChannelAdapter):
                    raise RegistryError(f"channel {cls!r} is not a ChannelAdapter subclass")
                if not cls.name:
                    raise RegistryError(f"channel class {cls.__qualname__} sets no name")
                if cls.name in classes:
                    raise RegistryError(
                        f"channel {cls.name!r} is already registered by plugin "
                        f"{self._owners[id(classes[cls.name])]!r}"
                    )
                classes[cls.name] = cls
                self._owners[id(cls)] = plugin_name
            except Exception as exc:
                self.pm.fail(plugin_name, exc)
        return classes

    def _check_channel_entry_points(self) -> None:
        for record in list(self.pm.records.values()):
            if record.group != "fangwire.channels" or record.status != "loaded":
                continue
            if record.name not in self.channels:
                self.pm.fail(
                    record.name,
                    RegistryError(
                        f"entry point {record.name!r} registers no channel named {record.name!r}"
                    ),
                )

    def _collect_routes(self) -> list[tuple[str, RouteSpec]]:
        """Routes from ``register_routes`` and from transports, keyed by owning plugin."""
        candidates = list(self.pm.hooks.register_routes())
        for transport in self.transports.values():
            owner = self._owners[id(transport)]
            candidates.extend((owner, spec) for spec in transport.routes())
        seen: dict[tuple[str, str], str] = {}
        collected: list[tuple[str, RouteSpec]] = []
        for owner, spec in candidates:
            keys = [(path, method) for path in spec.mount_paths() for method in spec.methods]
            clash = next((key for key in keys if key in seen), None)
            if clash is not None:
                path, method = clash
                self.pm.fail(
                    owner,
                    RegistryError(f"route {method} {path} is already served by {seen[clash]!r}"),
                )
                continue
            seen.update(dict.fromkeys(keys, owner))
            collected.append((owner, spec))
        return collected

    # -- services -----------------------------------------------------------------------

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared outbound HTTP client (exists while serving)."""
        if self._http is None:
            raise RuntimeError("the runtime is not serving; enter Runtime.serving() first")
        return self._http

    @property
    def uptime_seconds(self) -> float:
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    async def change_config(
        self, key_path: Sequence[str], value: Any, *, actor: str, remove: bool = False
    ) -> Config:
        """Set (or remove) one key of ``config.toml`` on behalf of ``actor`` and apply it.

        The change is audited before the file is touched, so a change that could not be
        audited never happens; a change that then fails is audited as an error. The new
        value is not written to the audit log, only the key path.
        """
        path = list(key_path)
        details = {"key": ".".join(path), "actor": actor, "action": "remove" if remove else "set"}
        await self.audit.record("config_change", details=details, outcome="pending")
        try:
            if remove:
                config = await anyio.to_thread.run_sync(self.config_file.remove_value, path)
            else:
                config = await anyio.to_thread.run_sync(self.config_file.set_value, path, value)
        except Exception as exc:
            await self.audit.record(
                "config_change", details={**details, "error": str(exc)}, outcome="error"
            )
            raise
        self.config = config
        await self.audit.record("config_change", details=details, outcome="ok")
        return config

    def reload_config(self) -> Config:
        """Re-read ``config.toml``; the new configuration applies to new requests."""
        self.config = self.config_file.load()
        return self.config

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Runtime]:
        """Open the store, start services and plugins; stop them all on exit."""
        async with AsyncExitStack() as stack:
            await self.log_hub.start()
            stack.push_async_callback(self.log_hub.stop)
            await self.store.open()
            stack.push_async_callback(self.store.close)
            await self.store.migrate(CORE_MIGRATIONS)
            await stack.enter_async_context(self.audit.running())
            await self.store.migrate(USAGE_MIGRATIONS)
            await self.agents.open()
            stack.callback(self.agents.close)
            self._http = await stack.enter_async_context(
                httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False)
            )
            stack.callback(self._forget_http)
            for transport_id, transport in self.transports.items():
                try:
                    await transport.start()
                except Exception:
                    log.exception("transport %s failed to start", transport_id)
                    continue
                stack.push_async_callback(transport.stop)
            stack.push_async_callback(self._close_sinks)
            await self.pm.hooks.startup(self)
            stack.push_async_callback(self.pm.hooks.shutdown, self)
            await self.channels.start_all()
            stack.push_async_callback(self.channels.stop_all)
            self.started_at = time.monotonic()
            log.info(
                "fangwire %s ready: %d plugins loaded, %d failed",
                self.version,
                sum(r.status == "loaded" for r in self.pm.records.values()),
                sum(r.status == "failed" for r in self.pm.records.values()),
            )
            yield self

    async def _close_sinks(self) -> None:
        for sink_id, sink in self.audit_sinks.items():
            try:
                await sink.aclose()
            except Exception:
                log.exception("audit sink %s failed to close", sink_id)

    def _forget_http(self) -> None:
        self._http = None
