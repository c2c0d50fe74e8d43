"""The ``example`` channel: a third-party adapter for a minimal JSON chat API.

Written only against fangwire's public adapter interface (:mod:`fangwire.channels`) and
registered through the ``fangwire.channels`` entry point of its own distribution.

- Outbound: ``POST {base_url}/messages`` ``{"to", "text"}`` with ``Authorization: Bearer``;
  the answer's ``id`` is the receipt. 429/5xx are retryable (``Retry-After`` honoured), any
  other refusal is reported with the server's ``error``.
- Inbound: ``GET {base_url}/updates?after=<last id>&timeout=<s>`` long-polls; each session
  polls until a request fails, and resumes after the last id it saw.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from fangwire.channelkit.retry import parse_retry_after
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

POLL_SECONDS = 20


class ExampleChannel(ChannelAdapter):
    name = "example"
    display_name = "Example chat"
    description = "A third-party adapter for a minimal JSON chat API."
    category = "development"
    icon = "EX"
    capabilities = frozenset({"send", "receive"})
    config_fields = (
        ConfigField("base_url", required=True, help="the chat server's base URL"),
        ConfigField(
            "token", secret=True, required=True, env="EXAMPLE_TOKEN", help="the bot's API token"
        ),
    )
    max_message_length = 500
    length_unit = LengthUnit.CHARACTERS

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        self.after = 0

    def _url(self, path: str) -> str:
        return str(self.settings["base_url"]).rstrip("/") + path

    def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.settings['token'].reveal()}"}

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        try:
            response = await self.ctx.http.post(
                self._url("/messages"),
                json={"to": target, "text": message.text},
                headers=self._auth(),
            )
        except httpx.TransportError as exc:
            raise ChannelError(f"send failed: {type(exc).__name__}", retryable=True) from None
        if response.status_code == 429 or response.status_code >= 500:
            after = parse_retry_after(response.headers.get("retry-after"), now=datetime.now(UTC))
            raise ChannelError(
                f"server busy (HTTP {response.status_code})", retryable=True, retry_after=after
            )
        if not response.is_success:
            reason = response.json().get("error", response.reason_phrase)
            raise ChannelError(f"refused (HTTP {response.status_code}): {reason}")
        return DeliveryReceipt(self.ctx.name, target, (str(response.json()["id"]),))

    async def receive(self) -> None:
        timeout = httpx.Timeout(10.0, read=POLL_SECONDS + 10)
        while True:
            try:
                response = await self.ctx.http.get(
                    self._url("/updates"),
                    params={"after": self.after, "timeout": POLL_SECONDS},
                    headers=self._auth(),
                    timeout=timeout,
                )
            except httpx.TransportError as exc:
                raise ChannelError(f"poll failed: {type(exc).__name__}") from None
            if not response.is_success:
                raise ChannelError(f"poll refused (HTTP {response.status_code})")
            for update in response.json():
                await self.ctx.deliver(
                    InboundMessage(
                        channel=self.ctx.name,
                        sender=str(update["from"]),
                        chat=str(update["from"]),
                        text=str(update["text"]),
                        message_id=str(update["id"]),
                    )
                )
                self.after = int(update["id"])


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(ExampleChannel)
