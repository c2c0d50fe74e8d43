"""Process-level logging setup: JSON lines on a stream, optionally feeding a :class:`LogHub`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import IO, Any, Final

import attrs

from fangwire.logs.formatter import JsonFormatter
from fangwire.logs.hub import LogHub
from fangwire.logs.records import FIELDS_ATTR, Scrubber, level_number

__all__ = ["MANAGED_LOGGERS", "configure_logging", "log_fields"]

#: The loggers :func:`configure_logging` takes over.
MANAGED_LOGGERS: Final = ("fangwire", "uvicorn", "uvicorn.error", "uvicorn.access")


def log_fields(**fields: Any) -> dict[str, Any]:
    """Return ``{"fields": fields}``, for ``logger.info("msg", extra=log_fields(user=u))``."""
    return {FIELDS_ATTR: fields}


@attrs.frozen
class _LoggerState:
    handlers: list[logging.Handler]
    level: int
    propagate: bool
    disabled: bool

    @classmethod
    def capture(cls, logger: logging.Logger) -> _LoggerState:
        return cls(list(logger.handlers), logger.level, logger.propagate, logger.disabled)

    def restore(self, logger: logging.Logger) -> None:
        logger.handlers[:] = self.handlers
        logger.setLevel(self.level)
        logger.propagate = self.propagate
        logger.disabled = self.disabled


def configure_logging(
    level: str,
    redactor: Scrubber,
    *,
    stream: IO[str] | None = None,
    hub: LogHub | None = None,
) -> Callable[[], None]:
    """Send the ``fangwire`` and ``uvicorn*`` loggers to ``stream`` as redacted JSON lines.

    ``stream`` defaults to the current ``sys.stderr`` (looked up at call time). Each logger in
    :data:`MANAGED_LOGGERS` gets exactly one shared stream handler with a :class:`JsonFormatter`
    (plus ``hub.handler`` when ``hub`` is given) in place of its handlers, the given level, and
    ``propagate = False`` so no record is written twice (uvicorn's own ``log_config`` should be
    disabled, e.g. ``uvicorn.run(..., log_config=None)``). ``level`` is validated first
    (:class:`ValueError`), before anything changes.

    Returns ``uninstall()``, which restores each logger's previous handlers, level, propagation
    and disabled flag exactly and flushes the stream handler (the stream is not closed). It is
    idempotent. Nested configurations must be uninstalled in reverse order.
    """
    levelno = level_number(level)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter(redactor))
    installed: list[logging.Handler] = [handler]
    if hub is not None:
        installed.append(hub.handler)

    loggers = [logging.getLogger(name) for name in MANAGED_LOGGERS]
    saved = [(logger, _LoggerState.capture(logger)) for logger in loggers]
    for logger in loggers:
        logger.handlers[:] = installed
        logger.setLevel(levelno)
        logger.propagate = False
        logger.disabled = False

    done = False

    def uninstall() -> None:
        """Restore the loggers to their state before :func:`configure_logging` (idempotent)."""
        nonlocal done
        if done:
            return
        done = True
        for logger, state in saved:
            state.restore(logger)
        try:
            handler.flush()
        finally:
            handler.close()

    return uninstall
