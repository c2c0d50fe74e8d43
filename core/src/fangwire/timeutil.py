"""The daemon's one way to read the clock and write a time: RFC 3339, UTC, ``Z`` suffix."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

TimeSpec = Literal["seconds", "milliseconds", "microseconds"]


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def rfc3339(moment: datetime | None = None, *, timespec: TimeSpec = "microseconds") -> str:
    """``moment`` (default: now) as RFC 3339 UTC, e.g. ``2026-11-29T08:00:00.123456Z``.
    Naive datetimes are refused: their zone is unknown."""
    moment = utc_now() if moment is None else moment
    if moment.tzinfo is None:
        raise ValueError("naive datetime: the time zone is unknown")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=timespec) + "Z"
