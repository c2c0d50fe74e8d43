"""Serve an app on a real loopback socket inside a test (for streaming and real clients).

``httpx.ASGITransport`` buffers whole responses, so server-sent events and clients in other
processes need a real server. :func:`live_server` runs uvicorn on ``127.0.0.1`` with an
ephemeral port inside the current event loop and stops it on exit.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import uvicorn
from starlette.types import ASGIApp

from fangwire.config import HttpConfig
from fangwire.http.server import uvicorn_config

STARTUP_TIMEOUT_SECONDS = 10.0


@asynccontextmanager
async def live_server(app: ASGIApp, **settings: Any) -> AsyncIterator[str]:
    """Run ``app`` (lifespan included) and yield its base URL, ``http://127.0.0.1:<port>``.

    ``settings`` override uvicorn's (e.g. ``ws="wsproto"`` for a WebSocket fake).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, **settings))
    # uvicorn installs signal handlers only when it owns the loop; keep it from doing so.
    server.capture_signals = _no_signals  # type: ignore[method-assign]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(STARTUP_TIMEOUT_SECONDS):
                while not server.started:
                    if server.should_exit:
                        raise RuntimeError("the server failed to start")
                    await anyio.sleep(0.01)
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
                server.force_exit = False
    finally:
        sock.close()


def _config(app: ASGIApp, **settings: Any) -> uvicorn.Config:
    """fangwire's own uvicorn settings (request deadlines included), from the app's runtime
    when it has one."""
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    http = runtime.config.http if runtime is not None else HttpConfig()
    return uvicorn_config(app, http, **{"timeout_graceful_shutdown": 2, **settings})


@contextmanager
def _no_signals() -> Iterator[None]:
    yield


@contextmanager
def threaded_server(app: ASGIApp) -> Iterator[str]:
    """Like :func:`live_server`, but on its own thread and event loop, for synchronous
    clients (``requests``, schemathesis, subprocess-driven tools)."""
    import threading

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = STARTUP_TIMEOUT_SECONDS
        while not server.started and deadline > 0 and thread.is_alive():
            thread.join(0.01)
            deadline -= 0.01
        if not server.started:
            raise RuntimeError("the server failed to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_SECONDS)
        sock.close()
