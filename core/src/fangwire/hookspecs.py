"""The hooks fangwire plugins implement.

Every hook here is called by the core, never by plugins. Registration hooks are synchronous and
run once, when a :class:`~fangwire.runtime.Runtime` is built: they hand classes or route
declarations to the ``register`` callable they receive. Work on the hot path (sending,
receiving, authenticating, checking budgets, emitting audit entries) is done by ``async``
methods of the registered objects, never inside a hook call.

Rules for implementations (checked by :mod:`fangwire.plugins` and the conformance tests):

- name the hook exactly as here; an implementation with an unknown name fails the plugin;
- take only the arguments you need, with no default values (pluggy would not pass them);
- never return a coroutine from a registration hook; only ``startup`` and ``shutdown`` may.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import cattrs

    from fangwire.audit import AuditSink
    from fangwire.auth import AuthProvider
    from fangwire.budget import BudgetPolicy
    from fangwire.channels import ChannelAdapter
    from fangwire.http.routes import RouteSpec
    from fangwire.models import ModelProvider
    from fangwire.runtime import Runtime
    from fangwire.transports import Transport

PROJECT = "fangwire"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration (sync, called once per runtime) ---------------------------------------------


@hookspec
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    """Register channel adapter classes.

    Called once while the runtime is built. Call ``register(AdapterClass)`` for each
    :class:`~fangwire.channels.ChannelAdapter` subclass the plugin provides. The core keys
    adapters by their ``name``; a second adapter with a name already taken fails the plugin
    that registered it, and the error names both. A plugin found through the
    ``fangwire.channels`` entry-point group must register an adapter whose ``name`` equals the
    entry-point name.

    Example::

        @hookimpl
        def register_channels(register):
            register(FooChannel)
    """


@hookspec
def register_transports(register: Callable[[type[Transport]], None]) -> None:
    """Register protocol transport classes (MCP client transports, A2A, OFP, ...).

    Called once while the runtime is built. Call ``register(TransportClass)`` for each
    :class:`~fangwire.transports.Transport` subclass. Transports are keyed by
    ``transport_id``; duplicates fail the later plugin. A transport may contribute HTTP routes
    and an async lifespan that the core enters inside the application lifespan.
    """


@hookspec
def register_auth_providers(register: Callable[[type[AuthProvider]], None]) -> None:
    """Register authentication provider classes.

    Called once while the runtime is built. Each :class:`~fangwire.auth.AuthProvider` turns a
    presented credential into a :class:`~fangwire.auth.Principal` (or declines). Providers are
    consulted in ``order`` (lower first); the first that returns a principal wins.
    """


@hookspec
def register_budget_policies(register: Callable[[type[BudgetPolicy]], None]) -> None:
    """Register budget policy classes.

    Called once while the runtime is built. Each :class:`~fangwire.budget.BudgetPolicy`
    decides, before a metered action runs, whether it may proceed. Every active policy must
    allow an action for it to run.
    """


@hookspec
def register_audit_sinks(register: Callable[[type[AuditSink]], None]) -> None:
    """Register audit sink classes.

    Called once while the runtime is built. The tamper-evident chain itself lives in the core
    store; an :class:`~fangwire.audit.AuditSink` receives a copy of every committed entry
    (a file, syslog, a SIEM). A failing sink never affects the chain.
    """


@hookspec
def register_model_providers(register: Callable[[type[ModelProvider]], None]) -> None:
    """Register language-model provider classes.

    Called once while the runtime is built. Call ``register(ProviderClass)`` for each
    :class:`~fangwire.models.ModelProvider` subclass; providers are keyed by ``provider_id``
    and a duplicate fails the later plugin. Agents name a provider and a model; the core meters
    and budgets every call, so providers only talk to the model.
    """


@hookspec
def register_routes(register: Callable[[RouteSpec], None]) -> None:
    """Register HTTP routes.

    Called once while the application is built. Call ``register(RouteSpec(...))`` for each
    route. A route declares its path, methods, the role it requires (or ``public``), its
    rate-limit cost, body limit and request/response models; the core wraps the endpoint with
    authentication, rate limiting and error handling, mounts ``api`` routes under both
    ``/api`` and ``/api/v1``, and describes every route in ``/api/openapi.json``. Two routes
    with the same path and method fail the later plugin.
    """


@hookspec
def configure_converter(converter: cattrs.Converter) -> None:
    """Add cattrs structure/unstructure hooks for the plugin's own types.

    Called once, before any configuration section or request body is structured, on the one
    converter the runtime uses for configuration and JSON bodies. Register hooks; do not
    replace the converter's settings (``forbid_extra_keys`` stays on).
    """


# -- lifecycle (may return awaitables) ------------------------------------------------------


@hookspec
def startup(runtime: Runtime) -> Awaitable[None] | None:
    """Start the plugin's background work.

    Called inside the application lifespan after the store is open and the shared HTTP client
    exists. Return ``None`` or an awaitable; the core awaits every result. An exception fails
    only this plugin (recorded on ``/-/plugins``), unless strict plugin loading is on.
    """


@hookspec
def shutdown(runtime: Runtime) -> Awaitable[None] | None:
    """Stop the plugin's background work and release its resources.

    Called on lifespan exit, before the store and the shared HTTP client close. Return ``None``
    or an awaitable; the core awaits every result, each within a bounded time. Exceptions are
    logged and never stop the other plugins from shutting down.
    """
