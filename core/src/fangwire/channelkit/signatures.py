"""Verifying platform pushes: HMAC signatures over the raw body, timestamps and replays.

Adapters call these from ``handle_webhook`` on ``await request.body()`` before parsing
anything. Every comparison is constant-time. A failed check raises :class:`WebhookRejected`,
which the webhook route turns into a 401 (or the status it carries) without details that
would help a forger.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import math
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["ReplayGuard", "WebhookRejected", "hmac_digest", "verify_hmac"]

Encoding = Literal["hex", "base64"]


class WebhookRejected(Exception):
    """A push failed verification. ``reason`` is logged; the caller sees only the status."""

    def __init__(self, reason: str, *, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def hmac_digest(
    secret: bytes, message: bytes, *, algorithm: str = "sha256", encoding: Encoding = "hex"
) -> str:
    """``HMAC(secret, message)`` as lower-case hex or standard base64."""
    mac = hmac.new(secret, message, getattr(hashlib, algorithm)).digest()
    return mac.hex() if encoding == "hex" else base64.b64encode(mac).decode("ascii")


def verify_hmac(
    secret: bytes,
    message: bytes,
    received: str | None,
    *,
    prefix: str = "",
    algorithm: str = "sha256",
    encoding: Encoding = "hex",
) -> None:
    """Raise :class:`WebhookRejected` unless ``received`` is ``prefix + HMAC(secret, message)``.

    Hex is compared case-insensitively (by decoding both sides), base64 exactly.
    """
    if not secret:
        raise WebhookRejected("no signing secret is configured", status=503)
    if not received:
        raise WebhookRejected("signature header missing")
    if prefix:
        if not received.startswith(prefix):
            raise WebhookRejected("signature has the wrong scheme")
        received = received[len(prefix) :]
    expected = hmac.new(secret, message, getattr(hashlib, algorithm)).digest()
    try:
        got = (
            bytes.fromhex(received)
            if encoding == "hex"
            else base64.b64decode(received, validate=True)
        )
    except (ValueError, binascii.Error):
        raise WebhookRejected("signature is not well formed") from None
    if not hmac.compare_digest(expected, got):
        raise WebhookRejected("signature does not match")


class ReplayGuard:
    """Rejects pushes outside a time window, and any id seen twice within it.

    ``check(key, timestamp)`` passes once per ``key`` while ``timestamp`` (Unix seconds) is
    within ``window`` seconds of now; keys are forgotten once their window has passed, and at
    most ``max_entries`` are kept (the oldest go first), so memory stays bounded.
    """

    def __init__(
        self,
        window: float = 300.0,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.max_entries = max_entries
        self._clock = clock
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()

    def check(self, key: str, timestamp: float | None) -> None:
        now = self._clock()
        if timestamp is not None and (
            not math.isfinite(timestamp) or abs(now - timestamp) > self.window
        ):
            raise WebhookRejected("timestamp outside the accepted window")
        while self._seen:
            oldest_key, seen_at = next(iter(self._seen.items()))
            if now - seen_at <= self.window and len(self._seen) < self.max_entries:
                break
            del self._seen[oldest_key]
        if key in self._seen:
            raise WebhookRejected("replayed request")
        self._seen[key] = now
