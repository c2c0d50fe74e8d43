"""The ``ntfy`` channel: publish to a topic, subscribe to its JSON stream.

Fields as LibreFang's ``[channels.ntfy]``: ``topic`` (required), ``server_url`` (default
``https://ntfy.sh``), ``token`` (an access token ``tk_...``, sent as
``Authorization: Bearer``; env ``NTFY_TOKEN``).

Outbound: ``POST {server_url}/{target}`` with the text as the body (ntfy's documented publish
API); the target is a topic name, the configured ``topic`` when none is given.
:attr:`OutboundMessage.metadata` may carry ``title``, ``tags`` (a list or comma-separated
string) and ``priority`` (1-5 or min/low/default/high/max), sent as the ``Title``, ``Tags``
and ``Priority`` headers. Messages are at most 4096 bytes: ntfy turns a longer body into an
attachment, so the core cuts answers at that size. The answer's ``id`` is the receipt.

Inbound: ``GET {server_url}/{topic}/json`` (NDJSON, one event per line: ``open``,
``keepalive``, ``message``). One session is one stream; it ends when the server closes it or
stays silent past :data:`READ_TIMEOUT_SECONDS` (ntfy sends a keepalive every 45 s by
default). The id of the last message seen is remembered, and the next session asks for
``since=<that id>`` (or, before any message was seen, ``since=<time of the first start>``),
so a reconnect resumes without losing or repeating messages (ids already delivered are
skipped as well). Both positions are kept in ``ctx.state``, so a restart of the daemon
resumes from the same place: messages published while it was down are answered. ntfy
carries no author: a message's sender and chat are its topic, and its title (if any) the
sender's name. Messages this channel published itself come back on the stream and are
ignored by id; while a publish is in flight, stream
messages wait for its id before being judged.
"""

from __future__ import annotations

import collections
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import httpx

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

DEFAULT_SERVER = "https://ntfy.sh"
#: A stream that sends nothing (not even a keepalive) for this long is considered dead.
READ_TIMEOUT_SECONDS = 120.0
#: How many published and delivered ids are remembered (for echo and duplicate filtering).
REMEMBERED_IDS = 2048
TOPIC = re.compile(r"[-_A-Za-z0-9]{1,64}")
PRIORITIES = ("min", "low", "default", "high", "max", "urgent", "1", "2", "3", "4", "5")


class _Ids:
    """A bounded set of ids, oldest forgotten first."""

    def __init__(self, size: int) -> None:
        self._order: collections.deque[str] = collections.deque(maxlen=size)
        self._set: set[str] = set()

    def add(self, value: str) -> None:
        if value in self._set:
            return
        if len(self._order) == self._order.maxlen:
            self._set.discard(self._order[0])
        self._order.append(value)
        self._set.add(value)

    def __contains__(self, value: object) -> bool:
        return value in self._set


class NtfyChannel(ChannelAdapter):
    """ntfy topics: publish with POST, receive from the JSON stream."""

    name = "ntfy"
    display_name = "ntfy"
    description = "Push notifications through an ntfy topic (ntfy.sh or self-hosted)."
    category = "notifications"
    icon = "NT"
    capabilities = frozenset({"send", "receive"})
    config_fields = (
        ConfigField("topic", required=True, help="the topic to listen on and answer in"),
        ConfigField(
            "server_url",
            default=DEFAULT_SERVER,
            help="ntfy server base URL",
            placeholder=DEFAULT_SERVER,
        ),
        ConfigField(
            "token",
            secret=True,
            env="NTFY_TOKEN",
            help="access token (tk_...) for protected topics",
        ),
    )
    max_message_length = 4096
    length_unit = LengthUnit.BYTES
    default_target_field = "topic"

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        self._published = _Ids(REMEMBERED_IDS)
        self._delivered = _Ids(REMEMBERED_IDS)
        #: id of the last message seen on the stream: where the next session resumes.
        self.last_id: str | None = None
        #: when the channel first started (Unix seconds), to resume from before any message.
        self.opened_at: int | None = None
        self._in_flight = 0
        self._settled = anyio.Event()
        self._settled.set()

    # -- settings -------------------------------------------------------------------------------

    @property
    def _base(self) -> str:
        return str(self.settings.get("server_url") or DEFAULT_SERVER).rstrip("/")

    @property
    def _topic(self) -> str:
        return str(self.settings["topic"])

    def _auth(self) -> dict[str, str]:
        token = self.settings.get("token")
        return {"authorization": f"Bearer {token.reveal()}"} if token is not None else {}

    async def start(self) -> None:
        if not TOPIC.fullmatch(self._topic):
            raise ChannelError(f"topic {self._topic!r} is not a valid ntfy topic name")
        if not self._base.startswith(("http://", "https://")):
            raise ChannelError("server_url must start with http:// or https://")
        # Resume where the last run stopped; on the very first start, from now (taken before
        # the channel reports running, so nothing published after that is missed).
        self.last_id = await self.ctx.state.get("last_id")
        if opened := await self.ctx.state.get("opened_at"):
            self.opened_at = int(opened)
        elif self.last_id is None:
            self.opened_at = int(time.time())
            await self.ctx.state.set("opened_at", str(self.opened_at))

    # -- outbound -------------------------------------------------------------------------------

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        topic = target or self._topic
        if not TOPIC.fullmatch(topic):
            raise ChannelError(f"{topic!r} is not a valid ntfy topic name")
        headers = {"content-type": "text/plain; charset=utf-8", **self._auth()}
        headers.update(_publish_headers(message.metadata))
        body = message.text.encode()
        self._in_flight += 1
        if self._in_flight == 1:
            self._settled = anyio.Event()
        try:
            response = await checked(
                lambda: self.ctx.http.post(f"{self._base}/{topic}", content=body, headers=headers),
                "publish",
            )
            try:
                ident = response.json()["id"]
            except (ValueError, KeyError, TypeError):
                raise ChannelError("publish answered without a message id") from None
            self._published.add(str(ident))
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._settled.set()
        return DeliveryReceipt(self.ctx.name, topic, (str(ident),))

    # -- inbound --------------------------------------------------------------------------------

    async def receive(self) -> None:
        since = self.last_id or (str(self.opened_at) if self.opened_at is not None else None)
        params = {"since": since} if since else {}
        timeout = httpx.Timeout(10.0, read=READ_TIMEOUT_SECONDS)
        url = f"{self._base}/{self._topic}/json"
        try:
            async with self.ctx.http.stream(
                "GET", url, params=params, headers=self._auth(), timeout=timeout
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise refusal(response, "subscribe")
                async for line in response.aiter_lines():
                    if line.strip():
                        await self._event(line)
        except httpx.TransportError as exc:
            detail = str(exc) or type(exc).__name__
            raise ChannelError(f"subscription stream failed: {detail}") from None

    async def _event(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self.ctx.log.warning("ntfy: ignoring a line that is not JSON")
            return
        if not isinstance(event, Mapping):
            return
        if event.get("event") != "message":
            return  # "open", "keepalive", "poll_request"
        ident = str(event.get("id") or "")
        if not ident:
            return
        await self._settled.wait()  # a publish in flight may be this very message
        text = event.get("message")
        if (
            ident not in self._delivered
            and ident not in self._published
            and isinstance(text, str)
            and text
        ):
            await self._deliver(ident, text, event)
        self._delivered.add(ident)
        self.last_id = ident  # only once handled: a failed delivery is fetched again
        await self.ctx.state.set("last_id", ident)

    async def _deliver(self, ident: str, text: str, event: Mapping[str, Any]) -> None:
        topic = str(event.get("topic") or self._topic)
        await self.ctx.deliver(
            InboundMessage(
                channel=self.ctx.name,
                sender=topic,
                chat=topic,
                text=text,
                sender_name=str(event.get("title") or topic),
                message_id=ident,
                raw=dict(event),
            )
        )


def _publish_headers(metadata: Mapping[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    title = metadata.get("title")
    if isinstance(title, str) and title:
        headers["title"] = title
    tags = metadata.get("tags")
    if isinstance(tags, list | tuple):
        tags = ",".join(str(t) for t in tags)
    if isinstance(tags, str) and tags:
        headers["tags"] = tags
    priority = metadata.get("priority")
    if priority is not None and str(priority).lower() in PRIORITIES:
        headers["priority"] = str(priority).lower()
    # Header values must be single-line latin-1; ntfy documents RFC 2047 for anything else.
    return {k: v for k, v in headers.items() if v.isascii() and "\n" not in v}


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(NtfyChannel)
