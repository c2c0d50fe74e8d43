"""A typed facade over the plugin manager's hooks.

pluggy's ``pm.hook.<name>(...)`` is untyped and stops at the first exception. The facade calls
each implementation separately so that one failing plugin is recorded as failed and the others
still run, and it gives every hook a typed signature.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

if TYPE_CHECKING:
    import cattrs
    import pluggy

    from fangwire.audit import AuditSink
    from fangwire.auth import AuthProvider
    from fangwire.budget import BudgetPolicy
    from fangwire.channels import ChannelAdapter
    from fangwire.http.routes import RouteSpec
    from fangwire.models import ModelProvider
    from fangwire.plugins import PluginManager
    from fangwire.runtime import Runtime
    from fangwire.transports import Transport

log = logging.getLogger("fangwire.plugins")

T = TypeVar("T")

#: Upper bound for one plugin's shutdown work.
SHUTDOWN_TIMEOUT_SECONDS = 10.0


class Hooks:
    """Typed entry points into every hookspec of :mod:`fangwire.hookspecs`."""

    def __init__(self, pm: PluginManager) -> None:
        self._pm = pm

    def _impls(self, hook_name: str) -> Iterator[tuple[str, pluggy.HookImpl]]:
        caller = getattr(self._pm.hook, hook_name)
        # Registration order: built-ins first, then entry points, then objects added later,
        # so when two plugins claim the same name the later one is the one that fails.
        for impl in caller.get_hookimpls():
            yield impl.plugin_name, impl

    def _call_each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        results: list[tuple[str, Any]] = []
        for plugin_name, impl in list(self._impls(hook_name)):
            if not self._pm.has_plugin(plugin_name):
                continue
            args = {name: kwargs[name] for name in impl.argnames}
            try:
                result = impl.function(**args)
                if inspect.isawaitable(result) and hook_name not in ("startup", "shutdown"):
                    _close_awaitable(result)
                    raise TypeError(f"hook {hook_name} must not return an awaitable")
            except Exception as exc:
                log.exception("plugin %s failed in %s", plugin_name, hook_name)
                self._pm.fail(plugin_name, exc)
                continue
            results.append((plugin_name, result))
        return results

    def _collect(self, hook_name: str) -> list[tuple[str, T]]:
        """Call a registration hook per plugin; return ``(plugin_name, registered)`` pairs."""
        collected: list[tuple[str, T]] = []
        for plugin_name, impl in list(self._impls(hook_name)):
            if not self._pm.has_plugin(plugin_name):
                continue
            items: list[T] = []
            try:
                impl.function(**{name: items.append for name in impl.argnames})
            except Exception as exc:
                log.exception("plugin %s failed in %s", plugin_name, hook_name)
                self._pm.fail(plugin_name, exc)
                continue
            collected.extend((plugin_name, item) for item in items)
        return collected

    def register_channels(self) -> list[tuple[str, type[ChannelAdapter]]]:
        return self._collect("register_channels")

    def register_transports(self) -> list[tuple[str, type[Transport]]]:
        return self._collect("register_transports")

    def register_auth_providers(self) -> list[tuple[str, type[AuthProvider]]]:
        return self._collect("register_auth_providers")

    def register_budget_policies(self) -> list[tuple[str, type[BudgetPolicy]]]:
        return self._collect("register_budget_policies")

    def register_audit_sinks(self) -> list[tuple[str, type[AuditSink]]]:
        return self._collect("register_audit_sinks")

    def register_model_providers(self) -> list[tuple[str, type[ModelProvider]]]:
        return self._collect("register_model_providers")

    def register_routes(self) -> list[tuple[str, RouteSpec]]:
        return self._collect("register_routes")

    def configure_converter(self, converter: cattrs.Converter) -> None:
        self._call_each("configure_converter", converter=converter)

    async def startup(self, runtime: Runtime) -> None:
        """Run every ``startup`` implementation and await its result; failures are isolated."""
        for plugin_name, result in self._call_each("startup", runtime=runtime):
            try:
                await _await_me_maybe(result)
            except Exception as exc:
                log.exception("plugin %s failed in startup", plugin_name)
                self._pm.fail(plugin_name, exc)

    async def shutdown(self, runtime: Runtime) -> None:
        """Run every ``shutdown`` implementation, each within a bounded time."""
        for plugin_name, result in self._call_each("shutdown", runtime=runtime):
            try:
                with anyio.fail_after(SHUTDOWN_TIMEOUT_SECONDS):
                    await _await_me_maybe(result)
            except Exception:
                log.exception("plugin %s failed in shutdown", plugin_name)


async def _await_me_maybe(value: object) -> None:
    if callable(value):
        value = value()
    if inspect.isawaitable(value):
        await value


def _close_awaitable(value: Awaitable[Any]) -> None:
    close: Callable[[], None] | None = getattr(value, "close", None)
    if close is not None:
        close()
