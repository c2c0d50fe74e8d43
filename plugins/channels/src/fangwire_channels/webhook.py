"""The ``webhook`` channel: generic HTTP in and out, signed with HMAC-SHA256.

Compatible with LibreFang's ``[channels.webhook]`` (fields ``secret``, ``callback_url``,
``listen_port``) and its wire format.

Inbound: ``POST /channels/webhook/webhook`` on fangwire's own port, JSON
``{"sender_id", "sender_name", "message"}`` plus the optional ``thread_id``, ``chat_id``
(the conversation to answer in; defaults to ``sender_id``), ``is_group`` and
``metadata.message_id``. Before anything is parsed the request is verified:

- ``X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, signed bytes)>``, compared in
  constant time. The signed bytes are the raw body, or ``<timestamp> + "." + <body>`` when
  ``require_timestamp`` is on (``<timestamp>`` being the ``X-Webhook-Timestamp`` header text).
- ``X-Webhook-Timestamp`` (Unix time in milliseconds, as LibreFang sends it; seconds are
  accepted too), when present, must be within 5 minutes of now; ``X-Webhook-Id``, when
  present, must not repeat within that window. With ``require_timestamp`` both headers are
  mandatory and the same signature is refused a second time, so a captured request cannot
  be replayed even with a new id. Without it, the timestamp is not signed (LibreFang's
  format): it only screens out stale and repeated deliveries from honest senders.
- Without a ``secret`` nothing is accepted (503): unsigned pushes are never trusted.

A body without a ``message`` is acknowledged and dropped (LibreFang does the same, so a
sender does not retry a no-op). Replies are answered through the callback.

Outbound: ``POST callback_url`` with JSON ``{"sender_id": "fangwire", "sender_name",
"recipient_id", "message", "timestamp", "thread_id"?, "reply_to"?}`` signed the same way,
with ``X-Webhook-Timestamp`` (milliseconds) and ``X-Webhook-Id`` headers. The receiver's
2xx is success; its JSON ``id``/``message_id``, when it returns one, is the receipt id, else
the ``X-Webhook-Id`` that was sent. 429/5xx are retryable (``Retry-After`` honoured), any
other status is a refusal with the receiver's reason.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fangwire.channelkit.httpsend import checked
from fangwire.channelkit.signatures import ReplayGuard, WebhookRejected, hmac_digest, verify_hmac
from fangwire.channels import (
    ChannelAdapter,
    ChannelContext,
    ChannelError,
    ConfigField,
    DeliveryReceipt,
    InboundMessage,
    LengthUnit,
    OutboundMessage,
)
from fangwire.hookspecs import hookimpl

#: How far (seconds) a delivery's timestamp may be from now, and how long ids are remembered.
REPLAY_WINDOW_SECONDS = 300.0
#: Timestamps above this are milliseconds (1e11 seconds is the year 5138).
_MILLISECONDS_ABOVE = 100_000_000_000
SIGNATURE_PREFIX = "sha256="
USER_AGENT = "fangwire-webhook/1"


class WebhookChannel(ChannelAdapter):
    """Generic signed HTTP webhook in, signed POST to ``callback_url`` out."""

    name = "webhook"
    display_name = "Webhook"
    description = "Generic HTTP in and out, signed with HMAC-SHA256 (LibreFang-compatible)."
    category = "notifications"
    icon = "WH"
    capabilities = frozenset({"send", "webhook", "threads"})
    config_fields = (
        ConfigField(
            "secret",
            secret=True,
            env="WEBHOOK_SECRET",
            help="shared HMAC-SHA256 key: inbound requests must be signed with it (none are "
            "accepted without it) and outbound ones are",
        ),
        ConfigField(
            "callback_url",
            help="where replies are POSTed, signed with the secret",
            placeholder="https://example.com/incoming",
        ),
        ConfigField(
            "listen_port",
            type="number",
            help="accepted for LibreFang configs and unused: inbound requests arrive at "
            "/channels/webhook/webhook on fangwire's own port",
            advanced=True,
        ),
        ConfigField(
            "require_timestamp",
            type="bool",
            default=False,
            help="require X-Webhook-Timestamp and X-Webhook-Id and sign '<timestamp>.<body>' "
            "both ways (replay-proof; not understood by LibreFang peers)",
            advanced=True,
        ),
    )
    max_message_length = 65535
    length_unit = LengthUnit.CHARACTERS

    def __init__(self, ctx: ChannelContext, *, wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx)
        self._now = wall_clock
        self.replays = ReplayGuard(REPLAY_WINDOW_SECONDS, clock=wall_clock)

    # -- signing --------------------------------------------------------------------------------

    def _secret(self) -> bytes:
        secret = self.settings.get("secret")
        return secret.reveal().encode() if secret is not None else b""

    @property
    def _strict(self) -> bool:
        return bool(self.settings.get("require_timestamp"))

    def sign(self, body: bytes, timestamp: str) -> str:
        """The ``X-Webhook-Signature`` value for ``body`` sent with ``timestamp``."""
        signed = f"{timestamp}.".encode() + body if self._strict else body
        return SIGNATURE_PREFIX + hmac_digest(self._secret(), signed)

    # -- inbound --------------------------------------------------------------------------------

    async def handle_webhook(self, request: Request) -> Response:
        if request.method != "POST":
            return JSONResponse({"error": "POST a signed JSON message here"}, status_code=405)
        body = await request.body()
        secret = self._secret()
        if not secret:
            raise WebhookRejected(
                "no secret is configured: unsigned pushes are refused", status=503
            )
        stamp = request.headers.get("x-webhook-timestamp")
        ident = request.headers.get("x-webhook-id")
        signature = request.headers.get("x-webhook-signature")
        if self._strict and (not stamp or not ident):
            raise WebhookRejected("X-Webhook-Timestamp and X-Webhook-Id are required")
        signed = f"{stamp}.".encode() + body if self._strict else body
        verify_hmac(secret, signed, signature, prefix=SIGNATURE_PREFIX)
        when = _timestamp(stamp) if stamp else None
        if when is not None or ident:
            # Without an id, the same delivery is the same timestamp with the same signature.
            self.replays.check(f"id:{ident}" if ident else f"at:{stamp}:{signature}", when)
        if self._strict:
            self.replays.check(f"sig:{signature}", when)
        message = _parse(body, self.ctx.name, ident)
        if message is None:
            return JSONResponse({"status": "ignored", "reason": "no message"})
        await self.ctx.deliver(message)
        return JSONResponse({"status": "accepted", "message_id": message.message_id})

    # -- outbound -------------------------------------------------------------------------------

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        url = self.settings.get("callback_url")
        if not url:
            raise ChannelError("callback_url is not set: there is nowhere to send replies")
        if not self._secret():
            raise ChannelError("secret is not set: replies are only sent signed")
        payload: dict[str, Any] = {
            "sender_id": "fangwire",
            "sender_name": "fangwire",
            "recipient_id": target,
            "recipient_name": target,
            "message": message.text,
            "timestamp": datetime.now(UTC).isoformat(),
        }
        if message.thread_id:
            payload["thread_id"] = message.thread_id
        if message.reply_to:
            payload["reply_to"] = message.reply_to
        body = json.dumps(payload, ensure_ascii=False).encode()
        ident = uuid.uuid4().hex
        stamp = str(int(self._now() * 1000))
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "x-webhook-signature": self.sign(body, stamp),
            "x-webhook-timestamp": stamp,
            "x-webhook-id": ident,
        }
        response = await checked(
            lambda: self.ctx.http.post(url, content=body, headers=headers), "callback"
        )
        return DeliveryReceipt(self.ctx.name, target, (_receipt_id(response) or ident,))

    async def test(self, target: str | None) -> DeliveryReceipt:
        return await self.send(target or "fangwire-test", OutboundMessage("fangwire test message"))


def _timestamp(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise WebhookRejected("X-Webhook-Timestamp is not a number", status=400) from None
    return value / 1000 if value > _MILLISECONDS_ABOVE else value


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int):
        return str(value) or None
    return None


def _parse(body: bytes, channel: str, ident: str | None) -> InboundMessage | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ChannelError("body is not JSON") from None
    if not isinstance(data, Mapping):
        raise ChannelError("body must be a JSON object")
    text = data.get("message")
    if not isinstance(text, str) or not text.strip():
        return None
    sender = _text(data.get("sender_id")) or "webhook-user"
    metadata = data.get("metadata")
    message_id = (
        (_text(metadata.get("message_id")) if isinstance(metadata, Mapping) else None)
        or ident
        or uuid.uuid4().hex
    )
    return InboundMessage(
        channel=channel,
        sender=sender,
        chat=_text(data.get("chat_id")) or sender,
        text=text,
        sender_name=_text(data.get("sender_name")) or sender,
        is_group=data.get("is_group") is True,
        thread_id=_text(data.get("thread_id")),
        message_id=message_id,
        raw=dict(data),
    )


def _receipt_id(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    if isinstance(data, Mapping):
        for key in ("id", "message_id"):
            value = _text(data.get(key))
            if value:
                return value
    return None


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(WebhookChannel)
