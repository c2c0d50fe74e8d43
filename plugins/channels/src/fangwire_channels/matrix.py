"""The ``matrix`` channel: the Matrix Client-Server API over plain HTTP (no SDK, no E2EE).

- ``start`` checks the access token with ``/account/whoami`` (or logs in with
  ``m.login.password`` when a password is configured instead), reads the bot's display name,
  joins the rooms of ``allowed_rooms`` and loads the sync position.
- ``receive`` is one ``/sync`` long-poll session: it delivers ``m.room.message`` / ``m.text``
  events written by others, accepts invitations from allowed users into allowed rooms, and
  ends (for the core to reconnect) when the homeserver fails.
- The sync position (``next_batch``) is stored in the account's own account data
  (:data:`SYNC_STATE_TYPE`) after each batch is delivered, so a restart resumes where it
  stopped: nothing is answered twice and nothing is dropped. With no stored position the first
  sync only takes the position; history is never answered.
- A room with more than two joined members is a group. ``mentioned`` is set when the body
  contains the bot's user id or display name, or ``m.mentions`` names it.
- Threads: an event in a thread (``m.relates_to.rel_type == "m.thread"``) carries the thread
  root as ``thread_id``, and an answer with a ``thread_id`` is sent into that thread.
- ``send`` is ``PUT /rooms/{room}/send/m.room.message/{txnId}``. A retry of the same message
  object reuses its transaction id, so the homeserver stores it once. ``M_LIMIT_EXCEEDED`` is
  retryable after ``retry_after_ms``; any other refusal raises with the errcode and error.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import time
import urllib.parse
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from fangwire.channelkit.retry import parse_retry_after
from fangwire.channels import (
    ChannelAdapter,
    ChannelConfigError,
    ChannelContext,
    ChannelError,
    ConfigField,
    DeliveryReceipt,
    InboundMessage,
    LengthUnit,
    OutboundMessage,
)
from fangwire.hookspecs import hookimpl
from fangwire.secrets.value import Secret

CLIENT_API = "/_matrix/client/v3"
#: Account-data event type holding the channel's sync position.
SYNC_STATE_TYPE = "dev.fangwire.channel.sync"
#: How long the homeserver holds a /sync open (the client waits a little longer).
SYNC_TIMEOUT_MS = 30_000
#: The homeserver refuses events over 65,536 bytes of canonical JSON (signatures, hashes and
#: references included). Text is cut well below that; JSON escaping may double it.
MAX_TEXT_BYTES = 24_000
MAX_CONTENT_JSON_BYTES = 56_000
#: Messages kept for idempotent retries (message object -> transaction id).
TXN_MEMORY = 256
#: Only the parts of /sync the adapter reads (account data and presence would wake it up).
SYNC_FILTER = {
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
    "room": {
        "account_data": {"not_types": ["*"]},
        "ephemeral": {"not_types": ["*"]},
        "timeline": {"limit": 50},
    },
}


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class MatrixChannel(ChannelAdapter):
    """Matrix rooms through a homeserver's Client-Server API."""

    name = "matrix"
    display_name = "Matrix"
    description = "Matrix rooms via the Client-Server API (/sync long-poll; unencrypted rooms)."
    category = "messaging"
    icon = "MX"
    capabilities = frozenset({"send", "receive", "threads", "groups"})
    config_fields = (
        ConfigField(
            "homeserver_url",
            required=True,
            help="Base URL of the homeserver, e.g. https://matrix.example.org",
            placeholder="https://matrix.example.org",
        ),
        ConfigField(
            "access_token",
            secret=True,
            env="MATRIX_ACCESS_TOKEN",
            help="Access token of the bot account (or give user_id and password instead)",
        ),
        ConfigField(
            "user_id",
            help="The bot's Matrix id, e.g. @bot:example.org (needed to log in with a password)",
            placeholder="@bot:example.org",
        ),
        ConfigField(
            "password",
            secret=True,
            env="MATRIX_PASSWORD",
            help="Password of user_id, used to log in when no access token is set",
            advanced=True,
        ),
        ConfigField(
            "auto_join",
            type="bool",
            default=True,
            help="Accept invitations from allowed users into allowed rooms",
            advanced=True,
        ),
    )
    max_message_length = MAX_TEXT_BYTES
    length_unit = LengthUnit.BYTES

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        self.user_id = ""
        self.display_name_of_bot = ""
        self._token: Secret | None = None
        self._logged_in = False
        self._since: str | None = None
        self._account_state: dict[str, Any] = {}
        self._joined: set[str] = set()
        self._members: dict[str, int] = {}
        self._txn_seq = itertools.count(1)
        self._txn_prefix = f"fw{os.getpid()}x{time.time_ns()}"
        self._txns: collections.OrderedDict[int, tuple[weakref.ref[OutboundMessage], str]] = (
            collections.OrderedDict()
        )

    # -- settings ------------------------------------------------------------------------------

    _filter = json.dumps(SYNC_FILTER, separators=(",", ":"))

    @property
    def base_url(self) -> str:
        return str(self.settings.get("homeserver_url") or "").rstrip("/")

    async def test(self, target: str | None) -> DeliveryReceipt:
        rooms = self.ctx.policy.allowed_chats if self.ctx.policy is not None else ()
        return await super().test(target or (rooms[0] if rooms else None))

    # -- HTTP ----------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        seconds: float = 30.0,
        auth: bool = True,
    ) -> dict[str, Any]:
        """One Client-Server API call; a refusal raises :class:`ChannelError` (errcode: error)."""
        headers = {}
        if auth and self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.reveal()}"
        try:
            response = await self.ctx.http.request(
                method,
                f"{self.base_url}{CLIENT_API}{path}",
                json=body,
                params=params,
                headers=headers,
                timeout=httpx.Timeout(seconds, connect=10.0),
            )
        except httpx.TransportError as exc:
            raise ChannelError(
                f"homeserver unreachable: {type(exc).__name__}", retryable=True
            ) from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {}
        if response.status_code == 200:
            return data
        raise _refusal(response, data)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ChannelConfigError("homeserver_url", "expected an http(s) URL")
        token = self.settings.get("access_token")
        password = self.settings.get("password")
        if token is not None:
            self._token = token
            whoami = await self._request("GET", "/account/whoami")
            self.user_id = str(whoami.get("user_id") or "")
            configured = self.settings.get("user_id")
            if configured and configured != self.user_id:
                raise ChannelConfigError(
                    "user_id", f"the access token belongs to {self.user_id}, not {configured}"
                )
        elif password is not None and self.settings.get("user_id"):
            if not self._logged_in:  # a retried start keeps the session it opened
                await self._login(str(self.settings["user_id"]), password.reveal())
        else:
            raise ChannelConfigError("access_token", "set access_token, or user_id and password")
        self.display_name_of_bot = await self._display_name()
        joined = await self._request("GET", "/joined_rooms")
        self._joined = {str(r) for r in joined.get("joined_rooms", [])}
        if self.ctx.policy is not None:
            for room in self.ctx.policy.allowed_chats:
                if room not in self._joined:
                    await self._join(room)
        if self._since is None:
            self._since = await self._load_since()
        if self._since is None:
            # First start: take the current position without answering history.
            first = await self._request(
                "GET", "/sync", params={"timeout": 0, "filter": self._filter}
            )
            await self._handle_invites(first)
            self._since = str(first["next_batch"])
            await self._save_since(self._since)
        self.ctx.log.info("matrix channel %s signed in as %s", self.ctx.name, self.user_id)

    async def _login(self, user_id: str, password: str) -> None:
        data = await self._request(
            "POST",
            "/login",
            body={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user_id},
                "password": password,
                "initial_device_display_name": f"fangwire channel {self.ctx.name}",
            },
            auth=False,
        )
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise ChannelError("the homeserver's login answer has no access token")
        self._token = Secret(token)
        self.user_id = str(data.get("user_id") or user_id)
        self._logged_in = True

    async def _display_name(self) -> str:
        try:
            profile = await self._request("GET", f"/profile/{_quote(self.user_id)}/displayname")
        except ChannelError:
            return ""
        return str(profile.get("displayname") or "")

    async def _join(self, room: str) -> str | None:
        try:
            data = await self._request("POST", f"/join/{_quote(room)}", body={})
        except ChannelError as exc:
            self.ctx.log.warning("matrix %s: could not join %s: %s", self.ctx.name, room, exc)
            return None
        return str(data.get("room_id") or room)

    def _state_path(self) -> str:
        return f"/user/{_quote(self.user_id)}/account_data/{SYNC_STATE_TYPE}"

    async def _load_since(self) -> str | None:
        try:
            self._account_state = await self._request("GET", self._state_path())
        except ChannelError as exc:
            if not exc.reason.startswith("M_NOT_FOUND"):
                raise
            self._account_state = {}
        value = self._account_state.get(self._state_key())
        return value if isinstance(value, str) and value else None

    async def _save_since(self, since: str) -> None:
        self._account_state[self._state_key()] = since
        await self._request("PUT", self._state_path(), body=self._account_state)

    def _state_key(self) -> str:
        # Several channels (or daemons) may share an account; each keeps its own position.
        return f"next_batch:{self.ctx.name}"

    async def stop(self) -> None:
        if self._logged_in and self._token is not None:
            try:
                await self._request("POST", "/logout", body={}, seconds=5.0)
            except ChannelError as exc:
                self.ctx.log.info("matrix %s: logout failed: %s", self.ctx.name, exc.reason)
            self._logged_in = False
        self._token = None

    # -- receiving -----------------------------------------------------------------------------

    async def receive(self) -> None:
        """Long-poll /sync until the homeserver fails; each batch is handled, then recorded."""
        while True:
            data = await self._request(
                "GET",
                "/sync",
                params={"since": self._since, "timeout": SYNC_TIMEOUT_MS, "filter": self._filter},
                seconds=SYNC_TIMEOUT_MS / 1000 + 15.0,
            )
            next_batch = str(data.get("next_batch") or "")
            if not next_batch:
                raise ChannelError("the homeserver's /sync answer has no next_batch")
            rooms = data.get("rooms") or {}
            await self._handle_invites(data)
            for room_id, room in (rooms.get("join") or {}).items():
                await self._handle_room(str(room_id), room)
            for room_id in rooms.get("leave") or {}:
                self._joined.discard(str(room_id))
                self._members.pop(str(room_id), None)
            if next_batch != self._since:
                self._since = next_batch
                if rooms:
                    await self._save_since(next_batch)

    async def _handle_invites(self, data: Mapping[str, Any]) -> None:
        invites = (data.get("rooms") or {}).get("invite") or {}
        if not invites or not self.settings.get("auto_join", True):
            return
        policy = self.ctx.policy
        for room_id, room in invites.items():
            inviter = ""
            for event in (room.get("invite_state") or {}).get("events") or []:
                if (
                    event.get("type") == "m.room.member"
                    and event.get("state_key") == self.user_id
                    and (event.get("content") or {}).get("membership") == "invite"
                ):
                    inviter = str(event.get("sender") or "")
            allowed = policy is None or (
                (not policy.allowed_users or inviter in policy.allowed_users)
                and (not policy.allowed_chats or room_id in policy.allowed_chats)
            )
            if not allowed:
                self.ctx.log.info(
                    "matrix %s: declined invitation to %s from %s", self.ctx.name, room_id, inviter
                )
                try:
                    await self._request("POST", f"/rooms/{_quote(room_id)}/leave", body={})
                except ChannelError as exc:
                    self.ctx.log.info("matrix %s: %s", self.ctx.name, exc.reason)
                continue
            await self._join(str(room_id))

    async def _handle_room(self, room_id: str, room: Mapping[str, Any]) -> None:
        timeline = (room.get("timeline") or {}).get("events") or []
        summary = room.get("summary") or {}
        if isinstance(summary.get("m.joined_member_count"), int):
            self._members[room_id] = summary["m.joined_member_count"]
        self._joined.add(room_id)
        # A room joined in this batch comes with history from before the bot was there:
        # answer only what follows the bot's own join. (When the join is not in the timeline
        # it came before the timeline's first event, so all of the timeline is newer.)
        joined_at = None
        for index, event in enumerate(timeline):
            if self._is_own_join(event):
                joined_at = index
        for index, event in enumerate(timeline):
            if event.get("type") == "m.room.member":
                self._members.pop(room_id, None)  # membership changed: recount when needed
                continue
            if joined_at is None or index > joined_at:
                await self._handle_event(room_id, event)

    def _is_own_join(self, event: Mapping[str, Any]) -> bool:
        return (
            event.get("type") == "m.room.member"
            and event.get("state_key") == self.user_id
            and (event.get("content") or {}).get("membership") == "join"
        )

    async def _handle_event(self, room_id: str, event: Mapping[str, Any]) -> None:
        if event.get("type") != "m.room.message" or event.get("sender") == self.user_id:
            return
        content = event.get("content") or {}
        body = content.get("body")
        if content.get("msgtype") != "m.text" or not isinstance(body, str) or not body:
            return
        relates = content.get("m.relates_to") or {}
        if relates.get("rel_type") == "m.replace":
            return  # an edit of an earlier message, not a new one
        thread_id = None
        if relates.get("rel_type") == "m.thread" and isinstance(relates.get("event_id"), str):
            thread_id = relates["event_id"]
        if isinstance(relates.get("m.in_reply_to"), Mapping):
            body = _strip_reply_fallback(body)
        sender = str(event.get("sender") or "")
        members = await self._member_count(room_id)
        message = InboundMessage(
            channel=self.ctx.name,
            sender=sender,
            chat=room_id,
            text=body,
            sender_name=sender,
            is_group=members > 2,
            mentioned=self._mentions_bot(body, content),
            thread_id=thread_id,
            message_id=str(event.get("event_id") or "") or None,
            raw=dict(event),
        )
        await self.ctx.deliver(message)

    def _mentions_bot(self, body: str, content: Mapping[str, Any]) -> bool:
        mentions = content.get("m.mentions") or {}
        if self.user_id in (mentions.get("user_ids") or []):
            return True
        lowered = body.casefold()
        names = [self.user_id, self.display_name_of_bot]
        return any(name and name.casefold() in lowered for name in names)

    async def _member_count(self, room_id: str) -> int:
        count = self._members.get(room_id)
        if count is None:
            try:
                data = await self._request("GET", f"/rooms/{_quote(room_id)}/joined_members")
                count = len(data.get("joined") or {})
            except ChannelError:
                count = 2
            self._members[room_id] = count
        return count

    # -- sending -------------------------------------------------------------------------------

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        if self._token is None:
            raise ChannelError("not signed in to the homeserver yet", retryable=True)
        content: dict[str, Any] = {"msgtype": "m.text", "body": message.text}
        if message.thread_id:
            in_reply_to = message.reply_to or message.thread_id
            content["m.relates_to"] = {
                "rel_type": "m.thread",
                "event_id": message.thread_id,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": in_reply_to},
            }
        size = len(json.dumps(content, ensure_ascii=False).encode("utf-8"))
        if size > MAX_CONTENT_JSON_BYTES:
            raise ChannelError(
                f"message content is {size} bytes as JSON; the limit is {MAX_CONTENT_JSON_BYTES}"
            )
        txn = self._txn_for(message)
        data = await self._request(
            "PUT",
            f"/rooms/{_quote(target)}/send/m.room.message/{txn}",
            body=content,
        )
        event_id = str(data.get("event_id") or "")
        if not event_id:
            raise ChannelError("the homeserver accepted the message but returned no event id")
        return DeliveryReceipt(channel=self.ctx.name, target=target, message_ids=(event_id,))

    def _txn_for(self, message: OutboundMessage) -> str:
        """The transaction id of ``message``: the same object (a retry) gets the same id."""
        key = id(message)
        known = self._txns.get(key)
        if known is not None and known[0]() is message:
            self._txns.move_to_end(key)
            return known[1]
        txn = f"{self._txn_prefix}n{next(self._txn_seq)}"
        self._txns[key] = (weakref.ref(message), txn)
        while len(self._txns) > TXN_MEMORY:
            self._txns.popitem(last=False)
        return txn


def _refusal(response: httpx.Response, data: Mapping[str, Any]) -> ChannelError:
    """The :class:`ChannelError` for a non-200 answer (Matrix's standard error body)."""
    status = response.status_code
    errcode = str(data.get("errcode") or f"HTTP {status}")
    error = str(data.get("error") or response.reason_phrase or "")
    reason = f"{errcode}: {error}" if error else errcode
    if status == 429 or errcode == "M_LIMIT_EXCEEDED":
        retry_after = _retry_after(response, data)
        return ChannelError(reason, retryable=True, retry_after=retry_after)
    return ChannelError(reason, retryable=status >= 500)


def _retry_after(response: httpx.Response, data: Mapping[str, Any]) -> float | None:
    millis = data.get("retry_after_ms")
    if isinstance(millis, int | float) and not isinstance(millis, bool) and millis >= 0:
        return float(millis) / 1000.0
    return parse_retry_after(response.headers.get("Retry-After"), now=datetime.now(UTC))


def _strip_reply_fallback(body: str) -> str:
    """Drop the ``> <@user> quoted`` lines clients prepend to a reply's body."""
    lines = body.split("\n")
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    if index and index < len(lines) and lines[index] == "":
        index += 1
    stripped = "\n".join(lines[index:])
    return stripped if stripped.strip() else body


@hookimpl
def register_channels(register: Callable[[type[ChannelAdapter]], None]) -> None:
    register(MatrixChannel)
