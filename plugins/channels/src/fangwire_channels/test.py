"""The ``test`` channel: a loopback platform inside the daemon.

Nothing leaves the machine. :meth:`TestChannel.inject` plays a user writing on the platform
(the message goes through the receive loop, the policies and the bound agent like any other);
``send`` appends to :attr:`TestChannel.transcript`, which a test or an operator reads back.
Used by fangwire's own test suite and useful to try routing without any platform account.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import anyio
import attrs

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


@attrs.frozen
class Sent:
    """One message the channel delivered."""

    target: str
    text: str
    thread_id: str | None
    message_id: str


class TestChannel(ChannelAdapter):
    """Loopback channel: inbound by :meth:`inject`, outbound into :attr:`transcript`."""

    __test__ = False  # not a pytest test class

    name = "test"
    display_name = "Test (loopback)"
    description = "A platform inside the daemon, for trying routing and for tests."
    category = "development"
    icon = "TS"
    capabilities = frozenset({"send", "receive", "threads", "groups"})
    config_fields = (
        ConfigField("bot_name", help="name the bot answers to in group chats", default="bot"),
        ConfigField("refuse_targets", type="list", help="targets whose messages are refused"),
    )
    max_message_length = 4096
    length_unit = LengthUnit.CHARACTERS
    default_target_field = "bot_name"

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        self.transcript: list[Sent] = []
        self._send_inbound, self._inbound = anyio.create_memory_object_stream[InboundMessage](100)
        self._sent = anyio.Event()

    def inject(
        self,
        *,
        sender: str,
        chat: str,
        text: str,
        is_group: bool = False,
        thread_id: str | None = None,
    ) -> InboundMessage:
        """Queue a message as if ``sender`` had written ``text`` in ``chat``."""
        bot = str(self.settings.get("bot_name") or "bot")
        message = InboundMessage(
            channel=self.ctx.name,
            sender=sender,
            chat=chat,
            text=text,
            is_group=is_group,
            mentioned=f"@{bot}" in text,
            thread_id=thread_id,
            message_id=uuid.uuid4().hex,
        )
        self._send_inbound.send_nowait(message)
        return message

    async def receive(self) -> None:
        async for message in self._inbound:
            await self.ctx.deliver(message)

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        if not target:
            raise ChannelError("the test channel needs a target (any non-empty name)")
        if target in (self.settings.get("refuse_targets") or ()):
            raise ChannelError(f"target {target!r} refuses messages")
        limit = self.max_message_length or 0
        if len(message.text) > limit:
            raise ChannelError(f"message is {len(message.text)} characters; the limit is {limit}")
        sent = Sent(target, message.text, message.thread_id, uuid.uuid4().hex)
        self.transcript.append(sent)
        self._sent.set()
        self._sent = anyio.Event()
        return DeliveryReceipt(channel=self.ctx.name, target=target, message_ids=(sent.message_id,))

    async def wait_for_sent(self, count: int) -> list[Sent]:
        """Wait until the transcript holds at least ``count`` messages; return it."""
        while len(self.transcript) < count:
            await self._sent.wait()
        return list(self.transcript)

    async def stop(self) -> None:
        self._send_inbound.close()
        self._inbound.close()


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(TestChannel)
