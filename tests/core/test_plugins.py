"""Plugin discovery, isolation of broken plugins, disabling, and ``/-/plugins``."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fangwire import hookspecs
from fangwire.channels import ChannelAdapter
from fangwire.hookspecs import hookimpl
from fangwire.plugins import (
    GROUPS,
    PluginLoadError,
    create_plugin_manager,
    parse_disabled,
    scan_entry_points,
)
from fangwire.testing.fixtures import serve_client
from tests.core.fakedist import write_distribution

BROKEN_IMPORT = "raise RuntimeError('this plugin is broken on purpose')\n"
UNKNOWN_HOOK = (
    "from fangwire.hookspecs import hookimpl\n"
    "@hookimpl\n"
    "def register_chanels(register):\n"
    "    pass\n"
)
RAISES_IN_HOOK = (
    "from fangwire.hookspecs import hookimpl\n"
    "@hookimpl\n"
    "def register_routes(register):\n"
    "    raise ValueError('cannot register routes today')\n"
)
WRONG_NAME_CHANNEL = (
    "from fangwire.channels import ChannelAdapter\n"
    "from fangwire.hookspecs import hookimpl\n"
    "class Other(ChannelAdapter):\n"
    "    name = 'other'\n"
    "@hookimpl\n"
    "def register_channels(register):\n"
    "    register(Other)\n"
)


@pytest.fixture
def broken_site(tmp_path, monkeypatch):
    """A site directory with three broken plugins and one loadable one, on sys.path."""
    site = tmp_path / "site"
    write_distribution(
        site,
        "fangwire-broken",
        entry_points={
            "fangwire.channels": {"broken_import": "fw_broken_import", "mismatch": "fw_mismatch"},
            "fangwire.audit": {"unknown_hook": "fw_unknown_hook"},
            "fangwire.transports": {"raises_in_hook": "fw_raises_in_hook"},
        },
        modules={
            "fw_broken_import": BROKEN_IMPORT,
            "fw_unknown_hook": UNKNOWN_HOOK,
            "fw_raises_in_hook": RAISES_IN_HOOK,
            "fw_mismatch": WRONG_NAME_CHANNEL,
        },
    )
    monkeypatch.syspath_prepend(str(site))
    scan_entry_points.cache_clear()
    yield site
    scan_entry_points.cache_clear()
    for name in ("fw_broken_import", "fw_unknown_hook", "fw_raises_in_hook", "fw_mismatch"):
        sys.modules.pop(name, None)


def test_every_group_has_an_installed_plugin():
    groups = {info.group for info in scan_entry_points()}
    assert groups == set(GROUPS)


def test_installed_plugins_load(runtime):
    records = runtime.pm.records
    for name, group, distribution in [
        ("test", "fangwire.channels", "fangwire-channels"),
        ("stdio", "fangwire.transports", "fangwire-mcp"),
        ("api_key", "fangwire.auth", "fangwire"),
        ("unlimited", "fangwire.policies", "fangwire"),
        ("jsonl", "fangwire.audit", "fangwire"),
    ]:
        record = records[name]
        assert (record.group, record.distribution, record.status) == (group, distribution, "loaded")
        assert record.version
        assert record.hooks
    assert "test" in runtime.channels
    assert "stdio" in runtime.transports
    assert "unlimited" in runtime.budget_policies
    assert "jsonl" in runtime.audit_sinks
    assert [p.provider_id for p in runtime.auth_providers] == ["api_key"]


def test_broken_plugins_are_recorded_and_others_still_load(broken_site, make_runtime):
    pm = create_plugin_manager(environ={}, strict=False)
    runtime = make_runtime(pm=pm)
    records = runtime.pm.records
    assert records["broken_import"].status == "failed"
    assert "broken on purpose" in records["broken_import"].error
    assert records["broken_import"].distribution == "fangwire-broken"
    assert records["unknown_hook"].status == "failed"
    assert "register_chanels" in records["unknown_hook"].error
    assert records["raises_in_hook"].status == "failed"
    assert "cannot register routes today" in records["raises_in_hook"].error
    assert records["mismatch"].status == "failed"
    assert "registers no channel named 'mismatch'" in records["mismatch"].error
    assert "other" not in runtime.channels
    assert records["test"].status == "loaded"
    assert "test" in runtime.channels


@pytest.mark.anyio
async def test_daemon_serves_and_lists_failed_plugins(broken_site, make_runtime):
    runtime = make_runtime(pm=create_plugin_manager(environ={}, strict=False))
    async with serve_client(runtime) as http:
        assert (await http.get("/api/health")).status_code == 200
        listing = (await http.get("/-/plugins")).json()
    by_name = {p["name"]: p for p in listing["plugins"]}
    assert listing["total"] == len(listing["plugins"])
    assert by_name["broken_import"]["status"] == "failed"
    assert "broken on purpose" in by_name["broken_import"]["error"]
    assert by_name["test"]["status"] == "loaded"
    assert by_name["test"]["hooks"] == ["register_channels"]
    assert set(by_name["test"]) == {
        "name",
        "group",
        "module",
        "distribution",
        "version",
        "status",
        "error",
        "hooks",
    }


def test_strict_mode_raises(broken_site):
    with pytest.raises(PluginLoadError, match="failed"):
        create_plugin_manager(environ={}, strict=True)


def test_disabled_plugins_are_not_imported(broken_site):
    pm = create_plugin_manager(
        environ={"FANGWIRE_DISABLE_PLUGINS": "broken_import, fangwire.audit:unknown_hook"},
        strict=False,
    )
    assert pm.records["broken_import"].status == "disabled"
    assert pm.records["unknown_hook"].status == "disabled"
    assert "fw_broken_import" not in sys.modules
    assert "fw_unknown_hook" not in sys.modules


def test_disabling_a_whole_distribution(broken_site):
    pm = create_plugin_manager(disabled=["fangwire-broken"], environ={}, strict=True)
    statuses = {n: r.status for n, r in pm.records.items() if r.distribution == "fangwire-broken"}
    assert len(statuses) == 4
    assert set(statuses.values()) == {"disabled"}


def test_config_disabled_list_is_honoured(fangwire_home, memory_keyring):
    from fangwire.runtime import Runtime

    (fangwire_home / "config.toml").write_text('[plugins]\ndisabled = ["test"]\n')
    runtime = Runtime.build(fangwire_home, environ={}, keyring_backend=memory_keyring)
    assert runtime.pm.records["test"].status == "disabled"
    assert "test" not in runtime.channels


def test_parse_disabled():
    assert parse_disabled(" a, ,b ,") == {"a", "b"}
    assert parse_disabled(None) == frozenset()


def test_duplicate_channel_names_fail_the_later_plugin(make_runtime):
    class First(ChannelAdapter):
        name = "dup"

    class Second(ChannelAdapter):
        name = "dup"

    class first_plugin:
        @staticmethod
        @hookimpl
        def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
            register(First)

    class second_plugin:
        @staticmethod
        @hookimpl
        def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
            register(Second)

    pm = create_plugin_manager(load_entrypoints=False, environ={}, strict=False)
    pm.register_object(first_plugin, name="first")
    pm.register_object(second_plugin, name="second")
    runtime = make_runtime(pm=pm)
    failed = [r for r in pm.records.values() if r.status == "failed"]
    assert len(failed) == 1
    assert "already registered by plugin" in (failed[0].error or "")
    assert runtime.channels.adapter_class("dup") in (First, Second)


def test_route_clash_fails_the_later_plugin(make_runtime):
    from fangwire.http.routes import RouteSpec

    async def endpoint(request):  # pragma: no cover - never called
        raise AssertionError

    class clash:
        @staticmethod
        @hookimpl
        def register_routes(register):
            register(RouteSpec("/health", endpoint, role=None))

    pm = create_plugin_manager(load_entrypoints=False, environ={}, strict=False)
    pm.register_object(clash, name="clash")
    make_runtime(pm=pm)
    assert pm.records["clash"].status == "failed"
    assert "GET /api/health is already served by 'core_routes'" in pm.records["clash"].error


@pytest.mark.anyio
async def test_lifecycle_hooks_are_awaited_and_failures_isolated(make_runtime):
    events: list[str] = []

    class good:
        @staticmethod
        @hookimpl
        def startup(runtime):
            async def start() -> None:
                events.append("good started")

            return start()

        @staticmethod
        @hookimpl
        async def shutdown(runtime):
            events.append("good stopped")

    class bad:
        @staticmethod
        @hookimpl
        async def startup(runtime):
            raise RuntimeError("cannot start")

    pm = create_plugin_manager(load_entrypoints=False, environ={}, strict=False)
    pm.register_object(good, name="good")
    pm.register_object(bad, name="bad")
    runtime = make_runtime(pm=pm)
    async with serve_client(runtime) as http:
        assert (await http.get("/api/health")).status_code == 200
        assert events == ["good started"]
        assert pm.records["bad"].status == "failed"
        assert "cannot start" in pm.records["bad"].error
    assert events == ["good started", "good stopped"]


def test_registration_hook_returning_coroutine_fails_the_plugin(make_runtime):
    class sneaky:
        @staticmethod
        @hookimpl
        def configure_converter(converter):
            async def later() -> None:  # pragma: no cover - never awaited, closed by the core
                pass

            return later()

    pm = create_plugin_manager(load_entrypoints=False, environ={}, strict=False)
    pm.register_object(sneaky, name="sneaky")
    make_runtime(pm=pm)
    assert pm.records["sneaky"].status == "failed"
    assert "awaitable" in pm.records["sneaky"].error


def test_plugin_manager_is_fresh_each_time():
    first = create_plugin_manager(load_entrypoints=False, environ={})
    second = create_plugin_manager(load_entrypoints=False, environ={})
    assert first is not second
    assert first.records is not second.records


def test_cli_lists_broken_plugin_in_a_real_process(broken_site, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(broken_site), os.environ.get("PYTHONPATH", "")]),
        "FANGWIRE_HOME": str(tmp_path / "home"),
    }
    env.pop("FANGWIRE_STRICT_PLUGINS", None)
    result = subprocess.run(
        [sys.executable, "-m", "fangwire.cli", "plugins", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert plugins["broken_import"]["status"] == "failed"
    assert plugins["test"]["status"] == "loaded"


# -- every hookspec is documented and exercised -----------------------------------------------

HOOKSPEC_NAMES = sorted(
    name
    for name, value in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(value, "fangwire_spec")
)


def test_hookspec_list_is_the_documented_one():
    assert (
        sorted(
            [
                "register_channels",
                "register_transports",
                "register_auth_providers",
                "register_budget_policies",
                "register_audit_sinks",
                "register_model_providers",
                "register_routes",
                "configure_converter",
                "startup",
                "shutdown",
            ]
        )
        == HOOKSPEC_NAMES
    )


@pytest.mark.parametrize("name", HOOKSPEC_NAMES)
def test_every_hookspec_has_a_docstring_contract(name):
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert len(doc) > 80, f"{name} needs a docstring that states its contract"
    assert "Called" in doc


@pytest.mark.parametrize("name", HOOKSPEC_NAMES)
def test_every_hookspec_is_tested(name):
    source = (Path(__file__).parent / "test_hooks.py").read_text(encoding="utf-8")
    assert f"def test_hook_{name}(" in source, f"tests/core/test_hooks.py needs test_hook_{name}"
