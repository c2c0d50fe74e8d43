"""pytest fixtures for fangwire and for authors of fangwire plugins.

Opt in from ``conftest.py``::

    pytest_plugins = ["fangwire.testing.fixtures"]

and mark async tests with ``@pytest.mark.anyio``. Fixtures:

``plugin_manager``
    A fresh plugin manager with the core's built-in plugins only (no entry-point scan); add
    your plugin with ``plugin_manager.register_object(module, name="mine")``.
``fangwire_home``
    An empty home directory for one test.
``memory_keyring``
    An in-memory keyring backend, so tests never touch a real keyring.
``make_runtime``
    ``make_runtime(config_text="", *, environ=None, pm=None)`` builds a runtime in
    ``fangwire_home`` with the given ``config.toml`` text; by default every installed plugin
    is loaded, strictly (a plugin that fails to load fails the test).
``runtime``
    ``make_runtime()`` with the defaults.
``app_client``
    An ``httpx.AsyncClient`` talking to the app over ``httpx.ASGITransport`` with the app's
    lifespan entered (store open, plugins started). ``make_client(runtime)`` makes one for a
    runtime of your own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest

from fangwire.app import create_app
from fangwire.home import CONFIG_FILE_NAME
from fangwire.plugins import PluginManager, create_plugin_manager
from fangwire.runtime import Runtime
from fangwire.secrets import MemoryKeyring

MakeRuntime = Callable[..., Runtime]
MakeClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]

BASE_URL = "http://127.0.0.1:4545"


@pytest.fixture
def plugin_manager() -> PluginManager:
    return create_plugin_manager(load_entrypoints=False, environ={}, strict=True)


@pytest.fixture
def fangwire_home(tmp_path: Path) -> Path:
    home = tmp_path / "fangwire-home"
    home.mkdir(mode=0o700)
    return home


@pytest.fixture
def memory_keyring() -> MemoryKeyring:
    return MemoryKeyring()


@pytest.fixture
def make_runtime(fangwire_home: Path, memory_keyring: MemoryKeyring) -> Iterator[MakeRuntime]:
    def make(
        config_text: str = "",
        *,
        environ: Mapping[str, str] | None = None,
        pm: PluginManager | None = None,
    ) -> Runtime:
        (fangwire_home / CONFIG_FILE_NAME).write_text(config_text, encoding="utf-8")
        env = dict(environ or {})
        if pm is None:
            pm = create_plugin_manager(environ=env, strict=True)
        return Runtime.build(fangwire_home, environ=env, pm=pm, keyring_backend=memory_keyring)

    yield make


@pytest.fixture
def runtime(make_runtime: MakeRuntime) -> Runtime:
    return make_runtime()


@asynccontextmanager
async def serve_client(
    runtime: Runtime, *, client: tuple[str, int] = ("127.0.0.1", 50000)
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``runtime``'s app, lifespan entered, requests from ``client``."""
    app = create_app(runtime)
    transport = httpx.ASGITransport(app=app, client=client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http,
    ):
        yield http


@pytest.fixture
def make_client() -> MakeClient:
    return serve_client


@pytest.fixture
async def app_client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_client(runtime) as client:
        yield client
