"""Redaction of secret values from text, structured data and log records.

A single `Redactor` per process knows every secret value fangwire has read or written (the
secret store registers them). Anything that leaves the process as text (responses, logs, audit
details) passes through it.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Iterable

__all__ = ["MASK", "RedactingFilter", "Redactor", "is_sensitive_key"]

MASK = "***"
"""What a redacted value is replaced with."""

_MIN_SECRET_LENGTH = 4

_SENSITIVE_KEY_PARTS: tuple[str, ...] = (
    "secret",
    "token",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "private_key",
    "cookie",
)


@functools.lru_cache(maxsize=4096)
def is_sensitive_key(name: str) -> bool:
    """Return whether a mapping key names a value that must be masked.

    The name is lowercased and ``-`` is read as ``_`` (so the header ``X-Api-Key`` matches
    ``api_key``); the key is sensitive when it contains one of ``secret``, ``token``,
    ``password``, ``passwd``, ``api_key``, ``apikey``, ``authorization``, ``credential``,
    ``private_key`` or ``cookie``.
    """
    normalized = name.lower().replace("-", "_")
    return any(part in normalized for part in _SENSITIVE_KEY_PARTS)


def _keeps_value(value: object) -> bool:
    """Whether a value under a sensitive key is left as is, because it cannot hold a secret."""
    if value is None or isinstance(value, bool | int | float):
        # Numbers are kept so that counters such as ``max_tokens`` or ``input_tokens`` survive.
        return True
    if isinstance(value, str | bytes | list | tuple | dict):
        return len(value) == 0
    return False


class Redactor:
    """Thread-safe registry of the secret values currently known to the process.

    Contract: after ``add(value)`` and until ``discard(value)``, `scrub` and `scrub_obj`
    never return text containing ``value``. Values shorter than 4 characters are ignored
    (masking them would mangle ordinary text). When no value is registered, `scrub` returns
    its argument unchanged at the cost of one attribute read.
    """

    __slots__ = ("_lock", "_pattern", "_stale", "_values")

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        # The pattern is rebuilt lazily, by the first `scrub` after a change (so registering
        # many values costs one compilation, not one per value), and read without the lock.
        self._pattern: re.Pattern[str] | None = None
        self._stale = False
        for value in values:
            self.add(value)

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._values)} values>)"

    def __len__(self) -> int:
        return len(self._values)

    def add(self, value: str) -> None:
        """Register a secret value; values shorter than 4 characters are ignored."""
        if len(value) < _MIN_SECRET_LENGTH:
            return
        with self._lock:
            if value not in self._values:
                self._values.add(value)
                self._stale = True

    def discard(self, value: str) -> None:
        """Forget a secret value; unknown values are ignored."""
        with self._lock:
            if value in self._values:
                self._values.discard(value)
                self._stale = True

    def _refresh(self) -> None:
        with self._lock:
            if not self._stale:
                return
            if self._values:
                # Longest first: the regex alternation takes the first branch that matches,
                # so a secret that contains another secret is masked whole.
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, ordered)))
            else:
                self._pattern = None
            self._stale = False

    def scrub(self, text: str) -> str:
        """Return ``text`` with every registered value replaced by ``***``."""
        if self._stale:
            self._refresh()
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(MASK, text)

    def scrub_obj(self, obj: object) -> object:
        """Return a redacted copy of ``obj``.

        Dicts, lists and tuples are walked recursively (cycles are cut with ``***``); strings
        are scrubbed; the value of any dict key that `is_sensitive_key` is replaced with
        ``***`` unless it is None, a bool, a number or empty. Dict keys and all other objects
        are returned unchanged.
        """
        return self._scrub_obj(obj, set())

    def _scrub_obj(self, obj: object, active: set[int]) -> object:
        if isinstance(obj, str):
            return self.scrub(obj)
        if not isinstance(obj, dict | list | tuple):
            return obj
        marker = id(obj)
        if marker in active:
            return MASK
        active.add(marker)
        try:
            if isinstance(obj, dict):
                return {key: self._scrub_item(key, value, active) for key, value in obj.items()}
            items = [self._scrub_obj(item, active) for item in obj]
            return items if isinstance(obj, list) else tuple(items)
        finally:
            active.discard(marker)

    def _scrub_item(self, key: object, value: object, active: set[int]) -> object:
        if isinstance(key, str) and is_sensitive_key(key) and not _keeps_value(value):
            return MASK
        return self._scrub_obj(value, active)


class RedactingFilter(logging.Filter):
    """Logging filter that scrubs known secret values from every record it sees.

    Attach it to handlers (filters on a logger do not see records propagated from child
    loggers). The record's message is rendered, scrubbed and frozen (``args`` cleared); the
    exception and stack text are rendered and scrubbed too, and the standard `Formatter`
    uses that text instead of rendering the traceback again.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub the record in place; never drops a record."""
        scrub = self._redactor.scrub
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True
