"""Shared pieces of the A2A tests: a slow agent on a local OpenAI fake, polling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from fangwire.agents import AgentSpec
from fangwire.testing.fake_openai import FakeOpenAI, create_fake_openai
from fangwire.testing.live import live_server

FAKE_KEY = "sk-a2a-test"


@asynccontextmanager
async def slow_model(delay: float = 30.0) -> AsyncIterator[tuple[FakeOpenAI, str]]:
    """A fake OpenAI server that answers after ``delay`` seconds, and its provider config."""
    app = create_fake_openai(api_key=FAKE_KEY, models={"gpt-slow"})
    app.delay_seconds = delay
    async with live_server(app) as url:
        config = f'[providers.openai]\nbase_url = "{url}/v1"\napi_key_env = "FAKE_OPENAI_KEY"\n'
        yield app, config


SLOW_ENV = {"FAKE_OPENAI_KEY": FAKE_KEY}


async def spawn_slow(runtime, name="slow"):
    return await runtime.agents.spawn(
        AgentSpec(name=name, provider="openai", model="gpt-slow"), actor="test"
    )


async def poll(http, path, until, timeout=10.0):
    """GET ``path`` until ``until(body)`` holds; return the body."""
    with anyio.fail_after(timeout):
        while True:
            response = await http.get(path)
            assert response.status_code == 200, response.text
            body = response.json()
            if until(body):
                return body
            await anyio.sleep(0.02)
