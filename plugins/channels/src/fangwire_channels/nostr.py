"""The ``nostr`` channel: encrypted direct messages (NIP-04) through Nostr relays (NIP-01).

Receiving: a receive session opens a WebSocket to every relay in ``relays`` (through the
daemon's shared HTTP client, with ``httpx-ws``) and subscribes with
``["REQ", sub, {"kinds": [4], "#p": [<our pubkey>], "since": <start>}]``. Every event that
arrives is checked before anything else: its ``id`` must be the hash of its fields and its
``sig`` its author's BIP-340 signature, otherwise it is dropped. DMs are decrypted (NIP-04) and
handed to the router once, however many relays deliver them. ``EOSE`` and ``NOTICE`` are
logged; ``CLOSED`` (the relay ended the subscription) ends the session, as does a dropped
connection, and the core reconnects. Relays that cannot be reached when a session starts
are skipped while at least one works, and tried again by the next session (at the latest
after :data:`RETRY_MISSING_RELAYS_SECONDS`).

``since`` is the time the channel first started, kept across reconnects so DMs sent while
a relay was unreachable are fetched; ids already handled are not answered twice. Both are
kept in ``ctx.state`` (the ids of the last :data:`HANDLED_MEMORY` DMs handled, with their
``created_at``; ``since`` moves up to the oldest of them once that many are kept), so DMs
sent while the daemon was stopped are fetched and answered after a restart, and DMs already
answered are not answered again.

Sending: the answer is encrypted for the recipient (hex or ``npub`` public key), signed as a
kind-4 event with a ``p`` tag and published to every relay (each over its own short
connection); it counts as sent when at least one relay answers ``["OK", id, true, ...]``
(the others get :data:`PUBLISH_GRACE_SECONDS` more once one has).
When none does, :class:`ChannelError` carries the relays' messages (``rate-limited:``
refusals are retryable).
"""

from __future__ import annotations

import collections
import json
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
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

if TYPE_CHECKING:
    from httpx_ws import AsyncWebSocketSession

from fangwire_channels.nostrkit import (
    Keys,
    NostrError,
    nip04_decrypt,
    nip04_encrypt,
    public_key_hex,
    sign_event,
    verify_event,
)

DM_KIND = 4
#: Bound on connecting to a relay and on waiting for its ``OK``.
RELAY_TIMEOUT = 15.0
#: A session that started without some relays ends after this long, to try them again.
RETRY_MISSING_RELAYS_SECONDS = 300.0
#: Once one relay has accepted an event, the others get this long to answer as well.
PUBLISH_GRACE_SECONDS = 3.0
#: Event ids remembered so that a DM delivered by several relays is answered once.
SEEN_MEMORY = 10_000
#: Handled DM ids kept across restarts (``since`` moves up once more are handled).
HANDLED_MEMORY = 200


@attrs.frozen
class _RelayAnswer:
    relay: str
    accepted: bool
    message: str


class NostrChannel(ChannelAdapter):
    name = "nostr"
    display_name = "Nostr"
    description = "Encrypted direct messages (NIP-04) through Nostr relays."
    category = "social"
    icon = "NO"
    capabilities = frozenset({"send", "receive"})
    config_fields = (
        ConfigField(
            "private_key",
            required=True,
            secret=True,
            env="NOSTR_PRIVATE_KEY",
            help="the bot's secret key: 64 hex digits or nsec1...",
        ),
        ConfigField(
            "relays",
            type="list",
            required=True,
            help="relay WebSocket URLs (wss://...)",
            placeholder="wss://relay.example.org",
        ),
    )
    #: NIP-04 content is base64 of the padded ciphertext plus the IV: 3000 bytes of text stay
    #: under the 4096-character content limit many relays apply.
    max_message_length = 3000
    length_unit = LengthUnit.BYTES
    requires_extra = "nostr"

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        self._keys: Keys | None = None
        self._since: int | None = None
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._last_created_at = 0
        #: DMs handled (id -> created_at), kept in ctx.state across restarts.
        self._handled: dict[str, int] = {}

    @classmethod
    def is_available(cls) -> bool:
        try:
            import coincurve  # noqa: F401
            import cryptography  # noqa: F401
            import httpx_ws  # noqa: F401
        except ImportError:
            return False
        return True

    @property
    def public_key(self) -> str:
        return self._require_keys().public_key

    def _require_keys(self) -> Keys:
        if self._keys is None:
            try:
                self._keys = Keys(self.settings["private_key"].reveal())
            except NostrError as exc:
                raise ChannelError(f"private_key: {exc}") from None
        return self._keys

    def _relays(self) -> list[str]:
        relays = [str(r).strip() for r in self.settings.get("relays") or () if str(r).strip()]
        if not relays:
            raise ChannelError("relays: at least one relay URL is needed")
        for relay in relays:
            if not relay.startswith(("wss://", "ws://")):
                raise ChannelError(f"relays: {relay!r} is not a ws:// or wss:// URL")
        return relays

    async def start(self) -> None:
        self._require_keys()
        self._relays()
        self.ctx.log.info("nostr: public key %s", self.public_key)
        handled = json.loads(await self.ctx.state.get("handled") or "{}")
        self._handled = {str(k): int(v) for k, v in handled.items()}
        self._seen.update(dict.fromkeys(self._handled))
        if since := await self.ctx.state.get("since"):
            self._since = int(since)
        else:
            self._since = int(time.time())
            await self.ctx.state.set("since", str(self._since))

    async def test(self, target: str | None) -> DeliveryReceipt:
        """A test DM goes to the bot's own key unless a target is given."""
        return await super().test(target or self.public_key)

    # -- receiving ----------------------------------------------------------------------------

    async def receive(self) -> None:
        keys = self._require_keys()
        relays = self._relays()
        if self._since is None:
            self._since = int(time.time())
        request = {"kinds": [DM_KIND], "#p": [keys.public_key], "since": self._since}
        subscription = f"fangwire-{uuid.uuid4().hex[:12]}"
        try:
            await self._session(relays, subscription, request)
        except BaseExceptionGroup as group:
            # One relay's session ended: report its reason, not the task group's wrapper.
            reason = _first_channel_error(group)
            if reason is None:
                raise
            raise reason from None

    async def _session(self, relays: list[str], subscription: str, request: dict[str, Any]) -> None:
        failures: dict[str, str] = {}
        async with anyio.create_task_group() as tg:
            for relay in relays:
                try:
                    await tg.start(self._relay_session, relay, subscription, request)
                except Exception as exc:
                    failures[relay] = str(exc) or type(exc).__name__
                    self.ctx.log.warning("nostr: relay %s unreachable: %s", relay, failures[relay])
            if len(failures) == len(relays):
                detail = "; ".join(f"{r}: {m}" for r, m in failures.items())
                raise ChannelError(f"no relay reachable ({detail})", retryable=True)
            if failures:
                await anyio.sleep(RETRY_MISSING_RELAYS_SECONDS)
                tg.cancel_scope.cancel()

    async def _relay_session(
        self,
        relay: str,
        subscription: str,
        request: dict[str, Any],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Subscribe on ``relay`` and handle what it sends until the connection ends."""
        from httpx_ws import HTTPXWSException, aconnect_ws

        # Connecting is bounded by the shared client's timeouts (a cancel scope around the
        # connection's own task group cannot end before it does).
        ws: AsyncWebSocketSession
        async with aconnect_ws(relay, self.ctx.http) as ws:
            await ws.send_text(json.dumps(["REQ", subscription, request]))
            task_status.started()
            while True:
                try:
                    text = await ws.receive_text()
                except HTTPXWSException as exc:
                    raise ChannelError(
                        f"relay {relay} connection ended: {exc or type(exc).__name__}",
                        retryable=True,
                    ) from None
                await self._on_relay_message(relay, subscription, text)

    async def _on_relay_message(self, relay: str, subscription: str, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            self.ctx.log.warning("nostr: relay %s sent invalid JSON", relay)
            return
        if not isinstance(message, list) or not message or not isinstance(message[0], str):
            return
        match message[0]:
            case "EVENT" if len(message) >= 3 and message[1] == subscription:
                await self._on_event(relay, message[2])
            case "EOSE":
                self.ctx.log.debug("nostr: relay %s has sent its stored events", relay)
            case "NOTICE":
                self.ctx.log.info("nostr: notice from %s: %s", relay, message[1:2])
            case "CLOSED" if len(message) >= 2 and message[1] == subscription:
                reason = message[2] if len(message) > 2 else ""
                raise ChannelError(
                    f"relay {relay} closed the subscription: {reason}", retryable=True
                )
            case "AUTH":
                self.ctx.log.info("nostr: relay %s asks for NIP-42 auth (not supported)", relay)
            case _:
                pass

    async def _on_event(self, relay: str, event: Any) -> None:
        if not isinstance(event, dict):
            return
        try:
            verify_event(event)
        except NostrError as exc:
            self.ctx.log.warning("nostr: dropped an event from %s: %s", relay, exc)
            return
        keys = self._require_keys()
        eid = event["id"]
        if eid in self._seen:
            return
        self._seen[eid] = None
        while len(self._seen) > SEEN_MEMORY:
            self._seen.popitem(last=False)
        author = event["pubkey"]
        addressed = any(t[:2] == ["p", keys.public_key] for t in event["tags"])
        if event["kind"] != DM_KIND or not addressed or author == keys.public_key:
            return
        try:
            text = nip04_decrypt(keys, author, event["content"])
        except NostrError as exc:
            self.ctx.log.warning("nostr: DM %s from %s not readable: %s", eid, author, exc)
            return
        await self.ctx.deliver(
            InboundMessage(
                channel=self.ctx.name,
                sender=author,
                chat=author,
                text=text,
                sender_name=author[:12],
                message_id=eid,
                raw={"relay": relay, "event": event},
            )
        )
        await self._remember(eid, int(event["created_at"]))

    async def _remember(self, eid: str, created_at: int) -> None:
        """Record a handled DM durably, so a restart neither misses nor repeats it."""
        self._handled[eid] = created_at
        while len(self._handled) > HANDLED_MEMORY:
            oldest = min(self._handled, key=self._handled.__getitem__)
            del self._handled[oldest]
            self._since = max(self._since or 0, min(self._handled.values()))
            await self.ctx.state.set("since", str(self._since))
        await self.ctx.state.set("handled", json.dumps(self._handled, separators=(",", ":")))

    # -- sending ------------------------------------------------------------------------------

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        keys = self._require_keys()
        try:
            recipient = public_key_hex(target)
            content = nip04_encrypt(keys, recipient, message.text)
        except NostrError as exc:
            raise ChannelError(f"recipient {target!r}: {exc}") from None
        tags = [["p", recipient]]
        if message.reply_to and len(message.reply_to) == 64:
            tags.append(["e", message.reply_to, "", "reply"])
        # Strictly increasing timestamps: clients order DMs by created_at, and the parts of
        # a long answer are often sent within one second.
        self._last_created_at = max(int(time.time()), self._last_created_at + 1)
        event = sign_event(
            keys, kind=DM_KIND, content=content, tags=tags, created_at=self._last_created_at
        )
        relays = self._relays()
        answers: list[_RelayAnswer] = []
        accepted_once = anyio.Event()
        async with anyio.create_task_group() as outer:
            publishing = anyio.CancelScope()

            async def cut_stragglers() -> None:
                await accepted_once.wait()
                await anyio.sleep(PUBLISH_GRACE_SECONDS)
                publishing.cancel()

            outer.start_soon(cut_stragglers)
            with publishing:
                async with anyio.create_task_group() as tg:
                    for relay in relays:
                        tg.start_soon(self._publish, relay, event, answers, accepted_once)
            outer.cancel_scope.cancel()
        accepted = [a.relay for a in answers if a.accepted]
        if accepted:
            return DeliveryReceipt(
                channel=self.ctx.name,
                target=recipient,
                message_ids=(event["id"],),
                detail="accepted by " + ", ".join(accepted),
            )
        reasons = "; ".join(f"{a.relay}: {a.message}" for a in answers) or "no relay answered"
        retryable = any(
            not a.accepted and (a.message.startswith("rate-limited") or a.message.startswith("!"))
            for a in answers
        )
        raise ChannelError(f"no relay accepted the event ({reasons})", retryable=retryable)

    async def _publish(
        self,
        relay: str,
        event: dict[str, Any],
        answers: list[_RelayAnswer],
        accepted: anyio.Event,
    ) -> None:
        """Publish ``event`` on its own connection to ``relay``; record what it answers."""
        from httpx_ws import HTTPXWSException, aconnect_ws

        try:
            with anyio.fail_after(RELAY_TIMEOUT):
                ws: AsyncWebSocketSession
                async with aconnect_ws(relay, self.ctx.http) as ws:
                    await ws.send_text(json.dumps(["EVENT", event]))
                    while True:
                        reply = json.loads(await ws.receive_text())
                        if (
                            isinstance(reply, list)
                            and len(reply) >= 3
                            and reply[0] == "OK"
                            # this connection carries this one event; some relays refuse
                            # an event they could not check with an empty id
                            and reply[1] in (event["id"], "")
                        ):
                            text = str(reply[3]) if len(reply) > 3 else ""
                            answers.append(_RelayAnswer(relay, reply[2] is True, text))
                            if reply[2] is True:
                                accepted.set()
                            return
                        if isinstance(reply, list) and reply[:1] == ["NOTICE"]:
                            self.ctx.log.info("nostr: notice from %s: %s", relay, reply[1:2])
        except TimeoutError:
            answers.append(_RelayAnswer(relay, False, "! no OK within the time limit"))
        except (HTTPXWSException, OSError, ValueError) as exc:
            answers.append(_RelayAnswer(relay, False, f"! {exc or type(exc).__name__}"))


def _first_channel_error(group: BaseExceptionGroup[Any]) -> ChannelError | None:
    for exc in group.exceptions:
        if isinstance(exc, ChannelError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_channel_error(exc)
            if found is not None:
                return found
    return None


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(NostrChannel)
