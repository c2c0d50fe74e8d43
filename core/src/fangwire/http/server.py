"""Running the app under uvicorn, with request deadlines uvicorn lacks.

uvicorn has no deadline for reading a request: its keep-alive timer only covers idle time
between requests and restarts with every byte, so a client that trickles one header line at
a time (slowloris) holds a connection and a slot for as long as it likes. The protocol classes
here close a connection whose request headers are not complete within
``http.header_timeout_seconds`` of its first byte, or whose body is not complete within
``http.body_timeout_seconds`` of its headers. Responses, including long event streams, are not
affected.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from fangwire.config import HttpConfig

log = logging.getLogger("fangwire.http")

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a dependency; kept for other platforms
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


class _DeadlineMixin:
    """Arms a timer while a request is being read; the connection closes if it fires."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0

    transport: asyncio.Transport
    cycle: Any
    _deadline: asyncio.TimerHandle | None = None
    _deadline_phase: str = ""

    def _arm(self, phase: str, seconds: float) -> None:
        if self._deadline_phase == phase:
            return
        self._disarm()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(seconds, self._expired, phase)
        self._deadline_phase = phase

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._deadline_phase = ""

    def _expired(self, phase: str) -> None:
        self._deadline = None
        self._deadline_phase = ""
        if not self.transport.is_closing():
            peer = self.transport.get_extra_info("peername")
            log.warning("closing connection from %s: request %s too slow", peer, phase)
            self.transport.close()

    def _track(self) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._arm("headers", self.header_timeout)
        elif cycle.more_body:
            self._arm("body", self.body_timeout)
        else:
            self._disarm()

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm("headers", self.header_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if not self.transport.is_closing():
            self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        # Idle keep-alive time is uvicorn's to bound; our deadline starts with the next byte.
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]


def deadline_protocol(http: HttpConfig) -> type[asyncio.Protocol]:
    """The HTTP protocol class for uvicorn with ``http``'s request deadlines."""
    base: type[Any] = HttpToolsProtocol if HttpToolsProtocol is not None else H11Protocol
    return type(
        f"Deadline{base.__name__}",
        (_DeadlineMixin, base),
        {
            "header_timeout": float(http.header_timeout_seconds),
            "body_timeout": float(http.body_timeout_seconds),
        },
    )


def uvicorn_config(app: ASGIApp, http: HttpConfig, **settings: Any) -> uvicorn.Config:
    """uvicorn settings fangwire serves with (also used by tests and benchmarks)."""
    options: dict[str, Any] = {
        "log_config": None,
        "server_header": False,
        "date_header": False,
        "timeout_keep_alive": 5,
        "proxy_headers": False,
        "lifespan": "on",
        "http": deadline_protocol(http),
    }
    options.update(settings)
    return uvicorn.Config(app, **options)
