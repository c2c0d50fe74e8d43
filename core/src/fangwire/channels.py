"""The channel adapter interface.

An adapter is a class with declarative metadata and async methods. The core instantiates it
with the runtime, starts it once it is configured, and routes messages through it. Chunking,
retries and reconnect policies are provided by the core so adapters stay small.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from fangwire.runtime import Runtime


class LengthUnit(enum.Enum):
    """How a platform counts the length of a message."""

    BYTES = "bytes"
    CHARACTERS = "characters"
    UTF16_UNITS = "utf16_units"
    GRAPHEMES = "graphemes"


@attrs.frozen
class ConfigField:
    """One configuration key of a channel, as shown to operators.

    ``key`` follows LibreFang's name for the same setting so a ``[channels.<name>]`` section
    carries over. ``secret`` fields are stored in the keyring and never echoed; ``env`` names
    an environment variable that may hold the value instead.
    """

    key: str
    type: str = "string"
    required: bool = False
    secret: bool = False
    env: str | None = None
    help: str = ""
    default: Any = None


@attrs.frozen
class OutboundMessage:
    """A message to deliver through a channel."""

    text: str
    thread_id: str | None = None
    reply_to: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class DeliveryReceipt:
    """Proof that the platform accepted a message: the ids it assigned."""

    channel: str
    target: str
    message_ids: tuple[str, ...]
    detail: str = ""


class ChannelError(Exception):
    """A channel could not do what was asked. ``reason`` is safe to show to operators."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class ChannelAdapter:
    """Base class for adapters registered through ``register_channels``."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    category: ClassVar[str] = "messaging"
    icon: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset({"send"})
    config_fields: ClassVar[Sequence[ConfigField]] = ()
    max_message_length: ClassVar[int | None] = None
    length_unit: ClassVar[LengthUnit] = LengthUnit.CHARACTERS
    #: The extra to install when the adapter needs an optional dependency, e.g. "matrix".
    requires_extra: ClassVar[str | None] = None

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @classmethod
    def is_available(cls) -> bool:
        """False when an optional dependency is missing (the adapter shows as unavailable)."""
        return True

    async def start(self) -> None:
        """Start receiving (long-poll, gateway, socket); return once the loop is running."""

    async def stop(self) -> None:
        """Stop receiving within a bounded time."""

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        """Deliver ``message`` to ``target``; raise :class:`ChannelError` if refused."""
        raise NotImplementedError

    async def test(self, target: str | None) -> DeliveryReceipt:
        """Send a real test message to verify connectivity."""
        return await self.send(target or "", OutboundMessage(text="fangwire connectivity test"))

    async def handle_webhook(self, request: Request) -> Response:
        """Handle a platform push; verify the signature over the raw body first."""
        raise ChannelError(f"channel {self.name!r} does not receive webhooks")
