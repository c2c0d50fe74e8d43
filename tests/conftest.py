"""Shared test configuration: the project's own tests use the plugin-author fixtures."""

import pytest

pytest_plugins = ["fangwire.testing.fixtures"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
