"""Slow clients (slowloris) are cut off; normal and streaming traffic is not."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from fangwire.app import create_app
from fangwire.testing.live import threaded_server

CONFIG = "[http]\nheader_timeout_seconds = 0.5\nbody_timeout_seconds = 0.5\n"
BOUND_SECONDS = 10.0


@pytest.fixture
def server(make_runtime):
    with threaded_server(create_app(make_runtime(CONFIG))) as url:
        yield url


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=BOUND_SECONDS)
    sock.settimeout(0.2)
    return sock


def closed_while_trickling(sock: socket.socket, chunks: list[bytes]) -> bool:
    """Send ``chunks`` one at a time with pauses; True once the server closes the socket."""
    deadline = time.monotonic() + BOUND_SECONDS
    for chunk in chunks:
        if time.monotonic() > deadline:
            return False
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return True
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def test_trickled_headers_are_cut_off(server):
    with connect(server) as sock:
        chunks = [b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"]
        chunks += [b"X-Slow: %d\r\n" % n for n in range(100)]
        assert closed_while_trickling(sock, chunks)


def test_silent_connection_is_cut_off(server):
    with connect(server) as sock:
        assert closed_while_trickling(sock, [b""] * 100)


def test_trickled_body_is_cut_off(server):
    head = (
        b"POST /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    with connect(server) as sock:
        assert closed_while_trickling(sock, [head] + [b" "] * 100)


def test_normal_requests_and_keep_alive_still_work(server):
    with httpx.Client(base_url=server, timeout=BOUND_SECONDS) as client:
        for _ in range(3):
            assert client.get("/api/health").status_code == 200
            time.sleep(0.3)  # idle on the kept-alive connection, under the keep-alive timeout
        # The deadline covers reading the request only, not a slow response.
        assert client.get("/api/health").json()["status"] == "ok"
