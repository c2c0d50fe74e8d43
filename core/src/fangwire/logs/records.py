"""The log record value shared by the JSON formatter and the live log hub.

A :class:`LogRecordView` is an immutable, already-redacted, JSON-ready snapshot of one
:class:`logging.LogRecord`. Nothing in a view may contain a secret: :func:`build_view` runs the
message, every structured field and any exception text through the redactor before the view
exists, so a view can be written to stderr, kept in a ring buffer or streamed to a client as is.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Protocol

import attrs

__all__ = [
    "FIELDS_ATTR",
    "HUB_LOGGER",
    "RESERVED_KEYS",
    "LogRecordView",
    "Scrubber",
    "build_view",
    "format_timestamp",
    "level_name",
    "level_number",
    "next_seq",
    "request_id_var",
    "to_jsonable",
]

#: Attribute of a :class:`logging.LogRecord` holding structured fields (``extra={"fields": ...}``).
FIELDS_ATTR: Final = "fields"

#: Name of the logger that the logging machinery itself uses; the hub never streams its records.
HUB_LOGGER: Final = "fangwire.logs"

#: Top-level keys of a JSON log line. A structured field with one of these names is emitted as
#: ``"field_<name>"`` instead, so it can never overwrite the record's own metadata.
RESERVED_KEYS: Final = frozenset({"seq", "ts", "level", "logger", "msg"})

#: The request id of the work being done in the current context, added to every record logged
#: in it as the ``request_id`` field (unless the record carries its own ``request_id`` extra).
request_id_var: ContextVar[str | None] = ContextVar("fangwire_request_id", default=None)

_LEVELS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warning": logging.WARNING,
        "warn": logging.WARNING,
        "error": logging.ERROR,
        "critical": logging.CRITICAL,
    }
)

_seq_counter = itertools.count(1)
_seq_lock = threading.Lock()
_exc_formatter = logging.Formatter()


class Scrubber(Protocol):
    """What logging needs from :class:`fangwire.redaction.Redactor`.

    ``scrub`` replaces known secret values in a string; ``scrub_obj`` does the same recursively
    through containers and also masks the values of secret-looking keys. Neither may return a
    secret it was given.
    """

    def scrub(self, text: str) -> str: ...  # pragma: no cover - protocol

    def scrub_obj(self, obj: object) -> object: ...  # pragma: no cover - protocol


def level_number(name: str) -> int:
    """Return the :mod:`logging` level number for ``name``.

    Accepts ``debug``, ``info``, ``warning``, ``warn``, ``error`` and ``critical`` in any case,
    with surrounding whitespace ignored. Anything else raises :class:`ValueError` naming the value.
    """
    try:
        return _LEVELS[name.strip().lower()]
    except (KeyError, AttributeError):
        allowed = "debug, info, warning, warn, error, critical"
        raise ValueError(f"unknown log level {name!r}; expected one of: {allowed}") from None


def level_name(levelno: int) -> str:
    """Return the lowercase standard level name for ``levelno``, rounding custom levels down.

    Levels below ``DEBUG`` are reported as ``"debug"``.
    """
    if levelno >= logging.CRITICAL:
        return "critical"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def next_seq() -> int:
    """Return the next record sequence number: strictly increasing within this process."""
    with _seq_lock:
        return next(_seq_counter)


# (whole second, its formatted prefix): records come in bursts within one second.
_ts_cache: tuple[int, str] = (-1, "")


def format_timestamp(created: float) -> str:
    """Format a POSIX timestamp as RFC 3339 UTC with milliseconds: ``2025-01-02T03:04:05.678Z``."""
    global _ts_cache
    second = math.floor(created)
    micros = round((created - second) * 1_000_000)  # rounds like datetime.fromtimestamp
    if micros >= 1_000_000:
        second, micros = second + 1, 0
    millis = micros // 1000
    cached_second, prefix = _ts_cache  # one tuple read: safe without a lock
    if cached_second != second:
        prefix = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _ts_cache = (second, prefix)
    return f"{prefix}.{millis:03d}Z"


def _freeze_fields(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(fields, MappingProxyType):  # already frozen (e.g. copied from another view)
        return fields
    return MappingProxyType(dict(fields))


@attrs.frozen
class LogRecordView:
    """An immutable, redacted, JSON-ready log record.

    ``seq`` increases strictly within a process for records delivered by one hub (it is the SSE
    event id); views made only for formatting use ``seq=0``. ``fields`` holds the structured
    extras (``extra={"fields": {...}}``), ``exc``/``stack`` text and ``request_id``; its values
    are JSON-compatible (``str``, ``int``, finite ``float``, ``bool``, ``None``, lists and
    string-keyed dicts).
    """

    seq: int
    timestamp: str
    level: str
    logger: str
    message: str
    fields: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_fields)

    def to_json(self, *, include_seq: bool = True) -> dict[str, Any]:
        """Return one flat JSON object: ``{"seq","ts","level","logger","msg",...fields}``.

        Fields whose names clash with those keys appear as ``"field_<name>"``. ``include_seq=False``
        gives exactly the object written as a JSON log line.
        """
        out: dict[str, Any] = {}
        if include_seq:
            out["seq"] = self.seq
        out["ts"] = self.timestamp
        out["level"] = self.level
        out["logger"] = self.logger
        out["msg"] = self.message
        for key, value in self.fields.items():
            out[f"field_{key}" if key in RESERVED_KEYS else key] = value
        return out

    def search_text(self) -> str:
        """Return the case-folded text that ``contains`` filters match: message, logger, fields."""
        try:
            encoded = json.dumps(dict(self.fields), ensure_ascii=False, default=repr)
        except (TypeError, ValueError):
            encoded = repr(dict(self.fields))
        return f"{self.message}\n{self.logger}\n{encoded}".casefold()


def to_jsonable(value: object, scrub: Callable[[str], str], _depth: int = 0) -> Any:
    """Convert ``value`` to JSON-compatible data, passing every string through ``scrub``.

    Mappings become dicts with string keys, other iterables of the builtin container kinds become
    lists, non-finite floats and any other object become their ``repr``. Nesting deeper than 20
    levels is cut off with a ``repr``.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else scrub(repr(value))
    if isinstance(value, str):
        return scrub(value)
    if _depth >= 20:
        return scrub(_safe_repr(value))
    if isinstance(value, Mapping):
        return {
            scrub(key if isinstance(key, str) else _safe_repr(key)): to_jsonable(
                item, scrub, _depth + 1
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(item, scrub, _depth + 1) for item in value]
    return scrub(_safe_repr(value))


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not break logging
        return f"<unrepresentable {type(value).__name__}>"


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # bad %-args: keep what we can rather than lose the record
        return f"{_safe_repr(record.msg)} % {_safe_repr(record.args)}"


def _raw_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    extra = getattr(record, FIELDS_ATTR, None)
    if isinstance(extra, Mapping):
        for key, value in extra.items():
            fields[key if isinstance(key, str) else _safe_repr(key)] = value
    elif extra is not None:
        fields[FIELDS_ATTR] = extra
    request_id = getattr(record, "request_id", None)
    if request_id is None:
        request_id = request_id_var.get()
    if request_id is not None:
        fields["request_id"] = request_id
    if record.exc_info and record.exc_info[0] is not None:
        fields["exc"] = _exc_formatter.formatException(record.exc_info)
    elif record.exc_text:
        fields["exc"] = record.exc_text
    if record.stack_info:
        fields["stack"] = record.stack_info
    return fields


def build_view(record: logging.LogRecord, redactor: Scrubber, *, seq: int = 0) -> LogRecordView:
    """Return the redacted view of ``record``.

    The message (with its ``%``-args applied), every field key and string value, exception and
    stack text all pass through ``redactor.scrub``; the fields then pass through
    ``redactor.scrub_obj`` so secret-named keys are masked too. Non-JSON values become their
    (scrubbed) ``repr``. Exceptions raised by the redactor propagate; callers that must never fail
    (the formatter, the hub handler) catch them.
    """
    scrub = redactor.scrub
    message = scrub(_message(record))
    raw = _raw_fields(record)
    normalised: Any = {}
    if raw:
        masked = redactor.scrub_obj(to_jsonable(raw, scrub))
        # scrub_obj may rebuild containers (tuples, custom types); normalise once more.
        normalised = to_jsonable(masked, scrub)
        if not isinstance(normalised, dict):  # pragma: no cover - defensive against odd redactors
            normalised = {"fields": normalised}
    return LogRecordView(
        seq=seq,
        timestamp=format_timestamp(record.created),
        level=level_name(record.levelno),
        logger=record.name,
        message=message,
        fields=normalised,
    )
