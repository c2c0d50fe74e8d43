"""Taint tracking for text that came from outside (channels, MCP tools, A2A peers, HTTP).

Contract:

* `Taint` says where a value came from (``source``, e.g. ``"channel:telegram"``,
  ``"mcp:server/tool"``, ``"a2a:agent"``, ``"http"``) plus free-form ``labels``.
* `TaintedStr` is a `str` that carries ``.taint``. The taint survives: ``+`` (either side),
  ``*``, indexing and slicing, ``str(x)``, ``strip``/``lstrip``/``rstrip``, ``lower``/``upper``/
  ``casefold``, ``replace``, ``split``, ``TaintedStr.format`` (when the *template* is tainted)
  and `taint_join`. Combining two different taints merges them (`Taint.merge`).
* `check_sink` raises `TaintViolation` when a tainted value (found by `taint_of`, which walks
  `TaintedStr`, dict keys and values, list, tuple, set and frozenset) reaches a sink in
  `DANGEROUS_SINKS` without ``approved=True``.

Honest limits (Python cannot track these; the result is a plain, untainted `str`):
f-strings with surrounding text or a format spec (``f"echo {x}"``), ``"echo %s" % x``,
``"echo {}".format(x)`` with an untainted template (a bare ``f"{x}"`` or ``"%s" % x`` happens to
return ``x`` itself; do not rely on it), ``"".join(...)`` (use `taint_join`), ``str.__str__(x)``,
any other ``str`` method not overridden here (e.g. ``title``, ``zfill``, ``encode``), iteration,
regex results, JSON round-trips, bytes, and anything done in C extensions. Taint is therefore a
best-effort guard on the paths fangwire controls, not a proof; approval routing must not rely on
it alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, SupportsIndex

import attrs

__all__ = [
    "DANGEROUS_SINKS",
    "Taint",
    "TaintViolation",
    "TaintedStr",
    "check_sink",
    "declassify",
    "state",
    "taint_join",
    "taint_of",
]

DANGEROUS_SINKS: frozenset[str] = frozenset({"shell", "file_write", "sql", "code_eval"})
"""Sinks a tainted value may only reach with explicit approval."""

_MAX_DEPTH = 64

_lock = threading.Lock()
_counters: dict[str, int] = {"checks": 0, "violations": 0, "approved": 0}


@attrs.frozen
class Taint:
    """Where a value came from, plus labels (e.g. ``{"UserInput", "ExternalNetwork"}``)."""

    source: str
    labels: frozenset[str] = frozenset()

    def merge(self, other: Taint | None) -> Taint:
        """Return a taint covering both: sources joined by ``","`` (sorted), labels unioned."""
        if other is None or other == self:
            return self
        sources = sorted(set(self.source.split(",")) | set(other.source.split(",")))
        return Taint(",".join(sources), self.labels | other.labels)


def _merge_all(taints: Iterable[Taint | None]) -> Taint | None:
    result: Taint | None = None
    for taint in taints:
        if taint is not None:
            result = taint if result is None else result.merge(taint)
    return result


def _direct(value: object) -> Taint | None:
    return value.taint if isinstance(value, TaintedStr) else None


class TaintedStr(str):
    """A `str` carrying a `Taint`; see the module docstring for what keeps the taint."""

    _taint: Taint

    def __new__(cls, value: object, taint: Taint) -> TaintedStr:
        self = super().__new__(cls, str.__str__(value) if isinstance(value, str) else str(value))
        self._taint = taint
        return self

    @property
    def taint(self) -> Taint:
        """The taint carried by this string."""
        return self._taint

    def _wrap(self, value: str, other: Taint | None = None) -> TaintedStr:
        return TaintedStr(value, self._taint.merge(other))

    def __str__(self) -> TaintedStr:
        return self

    def __add__(self, other: str) -> TaintedStr:
        return self._wrap(str.__add__(self, other), _direct(other))

    def __radd__(self, other: str) -> TaintedStr:
        return self._wrap(str.__add__(other, self), _direct(other))

    def __mul__(self, n: SupportsIndex) -> TaintedStr:
        return self._wrap(str.__mul__(self, n))

    def __rmul__(self, n: SupportsIndex) -> TaintedStr:
        return self._wrap(str.__mul__(self, n))

    def __getitem__(self, key: SupportsIndex | slice) -> TaintedStr:
        return self._wrap(str.__getitem__(self, key))

    def strip(self, chars: str | None = None) -> TaintedStr:
        return self._wrap(str.strip(self, chars))

    def lstrip(self, chars: str | None = None) -> TaintedStr:
        return self._wrap(str.lstrip(self, chars))

    def rstrip(self, chars: str | None = None) -> TaintedStr:
        return self._wrap(str.rstrip(self, chars))

    def lower(self) -> TaintedStr:
        return self._wrap(str.lower(self))

    def upper(self) -> TaintedStr:
        return self._wrap(str.upper(self))

    def casefold(self) -> TaintedStr:
        return self._wrap(str.casefold(self))

    def replace(self, old: str, new: str, count: SupportsIndex = -1) -> TaintedStr:
        return self._wrap(str.replace(self, old, new, count), _direct(new))

    def split(  # type: ignore[override]
        self, sep: str | None = None, maxsplit: SupportsIndex = -1
    ) -> list[TaintedStr]:
        return [self._wrap(part) for part in str.split(self, sep, maxsplit)]

    def format(self, *args: object, **kwargs: object) -> TaintedStr:
        arg_taints = [taint_of(a) for a in args] + [taint_of(v) for v in kwargs.values()]
        return self._wrap(str.format(self, *args, **kwargs), _merge_all(arg_taints))

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaintedStr, (str.__str__(self), self._taint))


def taint_join(sep: str, items: Iterable[str]) -> str:
    """``sep.join(items)`` that returns a `TaintedStr` when ``sep`` or any item is tainted."""
    materialised = list(items)
    joined = str.join(str.__str__(sep), [str.__str__(i) for i in materialised])
    taint = _merge_all([_direct(sep), *(_direct(i) for i in materialised)])
    return joined if taint is None else TaintedStr(joined, taint)


def declassify(value: str) -> str:
    """Return a plain, untainted copy of ``value`` (an explicit, greppable declassification)."""
    return str.__str__(value)


def taint_of(value: object) -> Taint | None:
    """Return the merged taint of ``value`` and everything it contains, or None if clean.

    Walks `TaintedStr`, dict (keys and values), list, tuple, set and frozenset. Fails closed:
    nesting deeper than 64 levels yields ``Taint("unknown", {"depth_exceeded"})``.
    """
    result: Taint | None = None
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, TaintedStr):
            result = item.taint if result is None else result.merge(item.taint)
            continue
        if not isinstance(item, dict | list | tuple | set | frozenset):
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        if depth >= _MAX_DEPTH:
            deep = Taint("unknown", frozenset({"depth_exceeded"}))
            result = deep if result is None else result.merge(deep)
            continue
        children: Iterable[object] = (
            [*item.keys(), *item.values()] if isinstance(item, dict) else item
        )
        stack.extend((child, depth + 1) for child in children)
    return result


class TaintViolation(PermissionError):
    """A tainted value reached a dangerous sink without approval."""

    def __init__(self, sink: str, taint: Taint) -> None:
        super().__init__(
            f"tainted value from {taint.source!r} reached sink {sink!r} without approval"
        )
        self.sink = sink
        self.taint = taint


def check_sink(sink: str, value: object, *, approved: bool = False) -> None:
    """Raise `TaintViolation` if a tainted ``value`` reaches a dangerous ``sink`` unapproved.

    Sinks outside `DANGEROUS_SINKS` always pass. ``approved=True`` (a human approved this exact
    action) lets a tainted value through and is counted separately.
    """
    taint = taint_of(value) if sink in DANGEROUS_SINKS else None
    with _lock:
        _counters["checks"] += 1
        if taint is not None:
            _counters["approved" if approved else "violations"] += 1
    if taint is not None and not approved:
        raise TaintViolation(sink, taint)


def state() -> tuple[str, dict[str, object]]:
    """Return ``("active", {"checks": n, "violations": n, "approved": n, "sinks": [...]})``."""
    with _lock:
        return "active", {**_counters, "sinks": sorted(DANGEROUS_SINKS)}
