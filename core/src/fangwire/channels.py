"""The channel adapter interface: what an adapter author writes against.

An adapter is a class with declarative metadata and async methods, registered through the
``register_channels`` hook. The core builds one instance per configured channel, handing it a
:class:`ChannelContext` (its resolved settings, the shared HTTP client, a clock, a logger and
the ``deliver`` callback for inbound messages). The core owns everything adapters have in
common: chunking by the platform's length unit, retrying refused-for-now sends, the reconnect
loop around :meth:`ChannelAdapter.receive`, policies and routing to agents, the webhook route.

Lifecycle, as the core drives it::

    adapter = Adapter(ctx)
    await adapter.start()          # log in, open what send() needs; raise ChannelError if not
    while running:                 # only for adapters with "receive" in capabilities
        await adapter.receive()    # one connected session; return or raise when it ends
        (capped, jittered back-off)
    await adapter.stop()           # close sockets; bounded in time by the core

``send`` is called with text already cut to ``max_message_length`` in ``length_unit``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

from fangwire.channelkit.state import ChannelState, MemoryState

if TYPE_CHECKING:
    import httpx
    from starlette.requests import Request
    from starlette.responses import Response

    from fangwire.channelkit.policy import ChannelPolicy


class LengthUnit(enum.Enum):
    """How a platform counts the length of a message."""

    BYTES = "bytes"
    CHARACTERS = "characters"
    UTF16_UNITS = "utf16_units"
    GRAPHEMES = "graphemes"


FieldType = Literal["text", "number", "list", "bool", "select"]


@attrs.frozen
class ConfigField:
    """One configuration key of a channel, as shown to operators.

    ``key`` follows LibreFang's name for the same setting so a ``[channels.<name>]`` section
    carries over. A ``secret`` field is stored in the keyring (never in config.toml, never
    echoed); in the file it may instead be given as ``<key>_env = "VAR"``, naming the
    environment variable that holds it, and ``env`` is the variable read when neither is set.
    ``type`` is the value's type: ``text`` (str), ``number`` (int), ``list`` (list of str,
    also accepted as a comma-separated string), ``bool`` or ``select`` (one of ``options``).
    """

    key: str
    type: FieldType = "text"
    required: bool = False
    secret: bool = False
    env: str | None = None
    help: str = ""
    default: Any = None
    label: str = ""
    placeholder: str = ""
    options: tuple[str, ...] = ()
    advanced: bool = False

    @property
    def display_label(self) -> str:
        return self.label or self.key.replace("_", " ").capitalize()


@attrs.frozen
class Attachment:
    """A file that came with an inbound message (fetched lazily by whoever needs it)."""

    url: str
    name: str = ""
    content_type: str = ""
    size: int | None = None


@attrs.frozen
class InboundMessage:
    """A message a person (or bot) wrote on a platform, normalised.

    ``sender`` is the platform's stable id of the author, ``chat`` the conversation to answer
    in (a room, channel, group or the author's DM), ``is_group`` tells DM from group chat, and
    ``mentioned`` whether the bot was addressed by name in a group. ``thread_id`` and
    ``message_id`` let the answer be threaded where the platform supports it. ``agent`` is an
    agent the message itself asks for (e.g. an email subject ``[coder] ...``); the router
    prefers it over the channel's binding when such an agent is running, and otherwise
    ignores it.
    """

    channel: str
    sender: str
    chat: str
    text: str
    sender_name: str = ""
    is_group: bool = False
    mentioned: bool = False
    thread_id: str | None = None
    message_id: str | None = None
    attachments: tuple[Attachment, ...] = ()
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    agent: str | None = None


@attrs.frozen
class OutboundMessage:
    """A message to deliver through a channel."""

    text: str
    thread_id: str | None = None
    reply_to: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class DeliveryReceipt:
    """Proof that the platform accepted a message: the ids it assigned (one per chunk)."""

    channel: str
    target: str
    message_ids: tuple[str, ...]
    detail: str = ""


class ChannelError(Exception):
    """A channel could not do what was asked. ``reason`` is safe to show to operators.

    ``retryable`` marks a refusal that may succeed later (rate limit, server busy, connection
    not up yet); ``retry_after`` is the delay the platform asked for, in seconds, if it did.
    """

    def __init__(
        self, reason: str, *, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class ChannelConfigError(ChannelError):
    """The channel's settings are invalid; ``field`` names the offending key."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


DeliverInbound = Callable[[InboundMessage], Awaitable[None]]


@attrs.frozen
class ChannelContext:
    """What the core gives an adapter instance.

    ``settings`` holds every declared field, typed, with secrets resolved (missing optional
    fields hold their default). ``deliver`` hands an inbound message to the router; it returns
    quickly (the agent's answer is produced and sent back in the background). ``clock`` is
    ``time.monotonic`` unless a test injects another. ``policy`` is the channel's routing
    policy (read-only: an adapter may use its allowlists, e.g. to decide which invitations to
    accept; the core still applies it to every inbound message). ``environ`` is the daemon's
    environment, for adapters that pass named variables on to a process they start.
    ``state`` keeps small values across restarts (e.g. the last stream position handled).
    """

    name: str
    settings: Mapping[str, Any] = attrs.field(repr=False)
    http: httpx.AsyncClient = attrs.field(repr=False)
    deliver: DeliverInbound = attrs.field(repr=False)
    log: logging.Logger = attrs.field(repr=False)
    clock: Callable[[], float] = attrs.field(repr=False)
    policy: ChannelPolicy | None = attrs.field(default=None, repr=False)
    environ: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    state: ChannelState = attrs.field(factory=MemoryState, repr=False)


class ChannelAdapter:
    """Base class for adapters registered through ``register_channels``.

    Capabilities: ``send``, ``receive`` (the core runs :meth:`receive`), ``webhook`` (the
    core routes ``/channels/{name}/webhook`` to :meth:`handle_webhook`), ``threads``,
    ``groups``.
    """

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    category: ClassVar[str] = "messaging"
    icon: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset({"send"})
    config_fields: ClassVar[Sequence[ConfigField]] = ()
    max_message_length: ClassVar[int | None] = None
    length_unit: ClassVar[LengthUnit] = LengthUnit.CHARACTERS
    #: The extra to install when the adapter needs an optional dependency, e.g. "xmpp".
    requires_extra: ClassVar[str | None] = None
    #: Target used by ``POST /api/channels/{name}/test`` when none is given (a settings key).
    default_target_field: ClassVar[str | None] = None

    def __init__(self, ctx: ChannelContext) -> None:
        self.ctx = ctx

    def __repr__(self) -> str:
        return f"<{type(self).__name__} channel={self.ctx.name!r}>"

    @classmethod
    def is_available(cls) -> bool:
        """False when an optional dependency is missing (the adapter shows as unavailable)."""
        return True

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.ctx.settings

    async def start(self) -> None:
        """Prepare to send (log in, fetch identities). Raise :class:`ChannelError` if refused."""

    async def receive(self) -> None:
        """Run one connected receive session until the connection ends.

        Return (or raise) when it ends; the core reconnects with capped, jittered back-off.
        Cancellation means stop. Deliver each message with ``await self.ctx.deliver(msg)``.
        """
        raise NotImplementedError(f"channel {self.name!r} declares no receive loop")

    async def stop(self) -> None:
        """Release sockets and sessions. Called once, after the receive loop is cancelled,
        whether or not :meth:`start` succeeded."""

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        """Deliver ``message`` to ``target``; raise :class:`ChannelError` if refused."""
        raise NotImplementedError

    async def test(self, target: str | None) -> DeliveryReceipt:
        """Send a real test message to verify connectivity."""
        if not target and self.default_target_field:
            value = self.settings.get(self.default_target_field)
            if isinstance(value, list):
                value = value[0] if value else None
            target = value or None
        if not target:
            raise ChannelError("a target is needed to send a test message")
        return await self.send(target, OutboundMessage(text="fangwire test message"))

    async def handle_webhook(self, request: Request) -> Response:
        """Handle a platform push; verify the signature over the raw body first."""
        raise ChannelError(f"channel {self.name!r} does not receive webhooks")
