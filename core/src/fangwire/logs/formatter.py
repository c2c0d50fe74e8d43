"""A :class:`logging.Formatter` writing each record as one compact, redacted JSON line."""

from __future__ import annotations

import json
import logging
import time

from fangwire.logs.records import HUB_LOGGER, Scrubber, build_view, format_timestamp, level_name

__all__ = ["JsonFormatter"]


class JsonFormatter(logging.Formatter):
    """Format records as ``{"ts","level","logger","msg",...fields}`` on a single line.

    ``ts`` is RFC 3339 UTC with milliseconds, ``level`` the lowercase level name, ``msg`` the
    message with its arguments applied; structured fields (``extra={"fields": {...}}``), ``exc``
    (exception text), ``stack`` and ``request_id`` follow (see
    :meth:`~fangwire.logs.records.LogRecordView.to_json`). Everything is redacted with the given
    redactor first. Non-ASCII text is ``\\u``-escaped so the line is safe on any stream encoding.

    :meth:`format` never raises: if building the line fails (a broken redactor, say) a fallback
    line with ``"msg": "unformattable log record"`` and the error's type is returned instead; it
    carries no text from the original record, so it cannot leak a secret.
    """

    def __init__(self, redactor: Scrubber) -> None:
        super().__init__()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one JSON line (without the trailing newline)."""
        try:
            view = build_view(record, self._redactor)
            return json.dumps(
                view.to_json(include_seq=False), separators=(",", ":"), allow_nan=False
            )
        except Exception as exc:  # formatting must never take the process down
            return self._fallback(record, exc)

    @staticmethod
    def _fallback(record: logging.LogRecord, exc: Exception) -> str:
        try:
            created = float(record.created)
            levelno = int(record.levelno)
            name = str(record.name)
        except Exception:
            created, levelno, name = time.time(), logging.ERROR, HUB_LOGGER
        payload = {
            "ts": format_timestamp(created),
            "level": level_name(levelno),
            "logger": name,
            "msg": "unformattable log record",
            "format_error": type(exc).__name__,
        }
        try:
            return json.dumps(payload, separators=(",", ":"))
        except Exception:  # pragma: no cover - only if the logger name is not even a str
            return '{"level":"error","logger":"fangwire.logs","msg":"unformattable log record"}'
