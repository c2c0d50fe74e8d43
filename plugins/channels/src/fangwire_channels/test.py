"""The ``test`` channel: a loopback adapter that delivers to the local comms bus.

Nothing leaves the machine. ``send`` publishes a ``channel.outbound`` event and returns a
receipt whose id is the event id; :meth:`TestChannel.receive` publishes a ``channel.inbound``
event as if a user had written on a platform. Used by fangwire's own test suite and useful to
try routing without any platform account.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fangwire.bus import BusEvent
from fangwire.channels import (
    ChannelAdapter,
    ChannelError,
    ConfigField,
    DeliveryReceipt,
    LengthUnit,
    OutboundMessage,
)
from fangwire.hookspecs import hookimpl
from fangwire.security import injection

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

OUTBOUND = "channel.outbound"
INBOUND = "channel.inbound"


class TestChannel(ChannelAdapter):
    """Loopback channel on the in-process comms bus."""

    __test__ = False  # not a pytest test class

    name = "test"
    display_name = "Test (loopback)"
    category = "development"
    icon = "flask"
    capabilities = frozenset({"send", "receive", "threads"})
    config_fields = (ConfigField("agent", help="agent that answers messages on this channel"),)
    max_message_length = 4096
    length_unit = LengthUnit.CHARACTERS

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        runtime.security.uses("prompt_injection_scanning", "channel test (inbound text)")

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        if not target:
            raise ChannelError("the test channel needs a target (any non-empty name)")
        limit = self.max_message_length or 0
        if len(message.text) > limit:
            raise ChannelError(f"message is {len(message.text)} characters; the limit is {limit}")
        event = BusEvent(
            kind=OUTBOUND,
            payload={
                "channel": self.name,
                "target": target,
                "text": message.text,
                "thread_id": message.thread_id,
            },
        )
        self.runtime.bus.publish(event)
        return DeliveryReceipt(channel=self.name, target=target, message_ids=(event.id,))

    def receive(self, *, sender: str, chat: str, text: str) -> BusEvent:
        """Publish an inbound message as if it came from a platform. Its text is scanned for
        prompt injection first; findings travel with the message as ``injection_warnings``."""
        findings = injection.scan(text, source=f"channel:{self.name}")
        event = BusEvent(
            kind=INBOUND,
            payload={
                "channel": self.name,
                "sender": sender,
                "chat": chat,
                "text": text,
                "injection_warnings": [
                    {"rule": f.rule, "severity": f.severity, "excerpt": f.excerpt} for f in findings
                ],
            },
        )
        self.runtime.bus.publish(event)
        return event


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(TestChannel)
