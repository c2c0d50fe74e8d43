"""The ``gotify`` channel: publish with the REST API, receive on the client WebSocket.

Fields as LibreFang's ``[channels.gotify]``: ``server_url``, ``app_token`` (env
``GOTIFY_APP_TOKEN``) and ``client_token`` (env ``GOTIFY_CLIENT_TOKEN``), all required.
Gotify has two kinds of token: an *application* token may only push messages, a *client*
token may only read (messages, applications, the stream).

Outbound: ``POST {server_url}/message`` with ``X-Gotify-Key: <app token>`` and JSON
``{"title", "message", "priority"}`` (title "fangwire" unless the message metadata has one,
priority 5 unless it has one). Gotify has no recipients: every client of the user sees the
message, so the target is only recorded in the receipt. The answer's ``id`` is the receipt.

Inbound: the WebSocket ``GET {server_url}/stream`` (``X-Gotify-Key: <client token>``), which
pushes every new message of the user as JSON ``{id, appid, message, title, priority, date}``.
:meth:`start` reads ``GET /application`` with the client token and finds the application
whose token is ``app_token``: messages from that application id are this channel's own and
are ignored. A message's sender and chat are ``app-<appid>``, its title the sender's name.
WebSocket keepalive pings (every 20 s) notice a dead server; the session then ends and the
core reconnects. The stream has no resume point, so each new stream first reads
``GET /message`` and handles what arrived after the last message id handled (at start, the
newest existing message: older ones are not answered); ids at or below it are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from httpx_ws import (
    AsyncWebSocketSession,
    HTTPXWSException,
    WebSocketUpgradeError,
    aconnect_ws,
)

from fangwire.channelkit.httpsend import checked, refusal
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

DEFAULT_TITLE = "fangwire"
DEFAULT_PRIORITY = 5
#: Largest stream frame accepted (a message plus its extras).
MAX_FRAME_BYTES = 1024 * 1024


class GotifyChannel(ChannelAdapter):
    """Gotify: REST publish with the app token, WebSocket stream with the client token."""

    name = "gotify"
    display_name = "Gotify"
    description = "Self-hosted push notifications: publish as an application, read as a client."
    category = "notifications"
    icon = "GO"
    capabilities = frozenset({"send", "receive"})
    config_fields = (
        ConfigField(
            "server_url",
            required=True,
            help="Gotify server base URL",
            placeholder="https://gotify.example.com",
        ),
        ConfigField(
            "app_token",
            secret=True,
            required=True,
            env="GOTIFY_APP_TOKEN",
            help="application token (A...): used to publish",
        ),
        ConfigField(
            "client_token",
            secret=True,
            required=True,
            env="GOTIFY_CLIENT_TOKEN",
            help="client token (C...): used to read the stream",
        ),
    )
    max_message_length = 65535
    length_unit = LengthUnit.CHARACTERS

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        #: The id of the application ``app_token`` belongs to (learned in :meth:`start`).
        self.app_id: int | None = None
        #: The highest message id handled: a new stream first catches up from there.
        self.last_id: int | None = None

    @property
    def _base(self) -> str:
        return str(self.settings["server_url"]).rstrip("/")

    def _key(self, field: str) -> dict[str, str]:
        return {"x-gotify-key": self.settings[field].reveal()}

    async def start(self) -> None:
        if not self._base.startswith(("http://", "https://")):
            raise ChannelError("server_url must start with http:// or https://")
        url = f"{self._base}/application"
        response = await checked(
            lambda: self.ctx.http.get(url, headers=self._key("client_token")),
            "reading the applications with the client token",
        )
        apps = response.json()
        token = self.settings["app_token"].reveal()
        own = [a for a in apps if isinstance(a, Mapping) and a.get("token") == token]
        if not own:
            raise ChannelError("app_token is not an application of the client token's user")
        self.app_id = int(own[0]["id"])
        newest = await self._messages(limit=1)
        self.last_id = max((int(m["id"]) for m in newest), default=0)

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        title = message.metadata.get("title")
        priority = message.metadata.get("priority")
        payload = {
            "title": title if isinstance(title, str) and title else DEFAULT_TITLE,
            "message": message.text,
            "priority": priority
            if isinstance(priority, int) and not isinstance(priority, bool)
            else DEFAULT_PRIORITY,
        }
        response = await checked(
            lambda: self.ctx.http.post(
                f"{self._base}/message", json=payload, headers=self._key("app_token")
            ),
            "publish",
        )
        try:
            ident = response.json()["id"]
        except (ValueError, KeyError, TypeError):
            raise ChannelError("publish answered without a message id") from None
        return DeliveryReceipt(self.ctx.name, target, (str(ident),))

    async def test(self, target: str | None) -> DeliveryReceipt:
        return await self.send(target or "gotify", OutboundMessage("fangwire test message"))

    async def receive(self) -> None:
        ws: AsyncWebSocketSession
        try:
            async with aconnect_ws(
                f"{self._base}/stream",
                self.ctx.http,
                headers=self._key("client_token"),
                max_message_size_bytes=MAX_FRAME_BYTES,
            ) as ws:
                await self._catch_up()
                while True:
                    await self._frame(await ws.receive_text())
        except WebSocketUpgradeError as exc:
            await exc.response.aread()
            raise refusal(exc.response, "opening the stream") from None
        except (HTTPXWSException, httpx.TransportError) as exc:
            detail = str(exc) or type(exc).__name__
            raise ChannelError(f"stream closed: {detail}") from None

    async def _messages(self, *, limit: int) -> list[Mapping[str, Any]]:
        """The newest ``limit`` messages of the user, oldest first."""
        url = f"{self._base}/message"
        response = await checked(
            lambda: self.ctx.http.get(
                url, params={"limit": limit}, headers=self._key("client_token")
            ),
            "reading messages",
        )
        body = response.json()
        messages = body.get("messages", []) if isinstance(body, Mapping) else []
        valid = [m for m in messages if isinstance(m, Mapping) and isinstance(m.get("id"), int)]
        return sorted(valid, key=lambda m: int(m["id"]))

    async def _catch_up(self) -> None:
        """Handle what arrived while no stream was open (the newest 200 messages at most)."""
        for data in await self._messages(limit=200):
            await self._handle(data)

    async def _frame(self, text: str) -> None:
        try:
            data: Any = json.loads(text)
        except ValueError:
            self.ctx.log.warning("gotify: ignoring a frame that is not JSON")
            return
        if isinstance(data, Mapping):
            await self._handle(data)

    async def _handle(self, data: Mapping[str, Any]) -> None:
        ident = data.get("id")
        if isinstance(ident, int) and self.last_id is not None and ident <= self.last_id:
            return  # already handled (seen again while catching up)
        await self._deliver(data)
        if isinstance(ident, int):
            self.last_id = ident

    async def _deliver(self, data: Mapping[str, Any]) -> None:
        app_id = data.get("appid")
        body = data.get("message")
        if app_id == self.app_id or not isinstance(body, str) or not body:
            return
        sender = f"app-{app_id}"
        title = data.get("title")
        await self.ctx.deliver(
            InboundMessage(
                channel=self.ctx.name,
                sender=sender,
                chat=sender,
                text=body,
                sender_name=title if isinstance(title, str) and title else sender,
                message_id=str(data.get("id", "")) or None,
                raw=dict(data),
            )
        )


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(GotifyChannel)
