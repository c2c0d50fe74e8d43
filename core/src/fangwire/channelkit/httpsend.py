"""Turning an HTTP platform's answer into a receipt or a typed refusal.

For adapters of HTTP platforms (``webhook``, ``ntfy``, ``gotify`` and third-party ones). The rules:

- a 2xx answer is success; anything else is a :class:`ChannelError` carrying the server's own
  reason (its JSON error text when it sent one, else the start of the body);
- 429 and 5xx are *retryable*, with ``retry_after`` parsed from ``Retry-After`` (delay-seconds
  or an HTTP-date) so the core waits exactly as long as the platform asked;
- a transport failure (refused connection, reset, timeout) is retryable too: nothing was
  accepted, so trying again cannot duplicate a message.

Nothing here sleeps or retries: the core's send loop does that.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from fangwire.channelkit.retry import parse_retry_after
from fangwire.channels import ChannelError

__all__ = ["checked", "refusal", "server_reason"]

#: The longest piece of a server's answer quoted in an error.
_REASON_CHARS = 200
#: JSON keys that platforms use for a human-readable error, most specific first.
_REASON_KEYS = ("errorDescription", "error_description", "message", "error", "detail", "reason")


def server_reason(response: httpx.Response) -> str:
    """The server's own words for a refusal: a JSON error field, else the body's start."""
    text = response.text.strip()
    try:
        data: Any = json.loads(text) if text else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in _REASON_KEYS:
            value = data.get(key)
            if isinstance(value, dict):  # {"error": {"message": ...}}
                value = value.get("message") or value.get("code")
            if isinstance(value, str) and value.strip():
                return value.strip()[:_REASON_CHARS]
    if text:
        return " ".join(text.split())[:_REASON_CHARS]
    return response.reason_phrase or "no reason given"


def refusal(response: httpx.Response, what: str) -> ChannelError:
    """The :class:`ChannelError` for a non-2xx ``response`` to ``what`` (e.g. "publish")."""
    status = response.status_code
    reason = f"{what} refused: HTTP {status}: {server_reason(response)}"
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"), now=datetime.now(UTC))
        return ChannelError(reason, retryable=True, retry_after=retry_after)
    return ChannelError(reason)


async def checked(call: Callable[[], Awaitable[httpx.Response]], what: str) -> httpx.Response:
    """Await ``call`` and return its 2xx response; raise :class:`ChannelError` otherwise."""
    try:
        response = await call()
    except httpx.TransportError as exc:
        detail = str(exc) or type(exc).__name__
        raise ChannelError(f"{what} failed: {detail}", retryable=True) from None
    if not response.is_success:
        raise refusal(response, what)
    return response
