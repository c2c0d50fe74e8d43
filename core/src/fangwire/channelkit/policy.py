"""Who a channel answers, and which agent answers them.

Every ``[channels.<name>]`` section may carry these keys (also inside LibreFang's
``overrides`` table, which takes precedence):

- ``agent`` (or ``default_agent``): the agent bound to the channel; ``chat_agents`` maps a
  chat/room id to another agent for that chat.
- ``allowed_users`` / ``allowed_chats`` (aliases ``allowed_rooms``, ``allowed_channels``):
  when non-empty, messages from anyone / anywhere else are ignored.
- ``dm_policy``: ``respond`` (default) | ``allowed_only`` | ``ignore``.
- ``group_policy``: ``all`` | ``mention_only`` (default) | ``ignore``.
- ``rate_limit_per_user``: messages per minute answered per user (0 = no limit).
- ``threading``: answer in the message's thread where the platform has threads (default true).
- ``enabled``: false keeps the section but does not start the channel.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from fangwire.channels import ChannelConfigError, InboundMessage

DM_POLICIES = ("respond", "allowed_only", "ignore")
GROUP_POLICIES = ("all", "mention_only", "commands_only", "ignore")


def _strings(value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ChannelConfigError(path, "expected a list of strings")


@attrs.frozen
class ChannelPolicy:
    agent: str | None = None
    chat_agents: Mapping[str, str] = attrs.field(factory=dict)
    allowed_users: tuple[str, ...] = ()
    allowed_chats: tuple[str, ...] = ()
    dm_policy: str = "respond"
    group_policy: str = "mention_only"
    rate_limit_per_user: int = 0
    threading: bool = True
    enabled: bool = True

    @classmethod
    def parse(cls, channel: str, raw: Mapping[str, Any]) -> ChannelPolicy:
        """Build from a section's policy keys; raise :class:`ChannelConfigError` if invalid."""
        merged = dict(raw)
        overrides = merged.pop("overrides", {})
        if not isinstance(overrides, Mapping):
            raise ChannelConfigError(f"channels.{channel}.overrides", "expected a table")
        merged.update(overrides)
        base = f"channels.{channel}"
        kwargs: dict[str, Any] = {}
        agent = merged.get("agent", merged.get("default_agent"))
        if agent is not None:
            if not isinstance(agent, str) or not agent:
                raise ChannelConfigError(f"{base}.agent", "expected an agent name or id")
            kwargs["agent"] = agent
        chat_agents = merged.get("chat_agents", {})
        if not isinstance(chat_agents, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in chat_agents.items()
        ):
            raise ChannelConfigError(f"{base}.chat_agents", "expected a table of chat = agent")
        kwargs["chat_agents"] = dict(chat_agents)
        if "allowed_users" in merged:
            kwargs["allowed_users"] = _strings(merged["allowed_users"], f"{base}.allowed_users")
        chats: tuple[str, ...] = ()
        for key in ("allowed_chats", "allowed_rooms", "allowed_channels"):
            if key in merged:
                chats += _strings(merged[key], f"{base}.{key}")
        kwargs["allowed_chats"] = chats
        for key, choices in (("dm_policy", DM_POLICIES), ("group_policy", GROUP_POLICIES)):
            if key in merged:
                if merged[key] not in choices:
                    raise ChannelConfigError(f"{base}.{key}", f"expected one of {choices}")
                kwargs[key] = merged[key]
        if "rate_limit_per_user" in merged:
            value = merged["rate_limit_per_user"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ChannelConfigError(
                    f"{base}.rate_limit_per_user", "expected a whole number >= 0"
                )
            kwargs["rate_limit_per_user"] = value
        for key in ("threading", "enabled"):
            if key in merged:
                if not isinstance(merged[key], bool):
                    raise ChannelConfigError(f"{base}.{key}", "expected true or false")
                kwargs[key] = merged[key]
        return cls(**kwargs)

    def agent_for(self, chat: str, fallback: str) -> str:
        return self.chat_agents.get(chat) or self.agent or fallback

    def refusal(self, message: InboundMessage) -> str | None:
        """Why ``message`` is not answered, or None when it is."""
        if self.allowed_chats and message.chat not in self.allowed_chats:
            return "chat not allowed"
        allowed_user = not self.allowed_users or message.sender in self.allowed_users
        if message.is_group:
            if not allowed_user:
                return "user not allowed"
            match self.group_policy:
                case "ignore":
                    return "group messages ignored"
                case "mention_only" if not message.mentioned:
                    return "not mentioned"
                case "commands_only" if not message.text.startswith("/"):
                    return "not a command"
            return None
        match self.dm_policy:
            case "ignore":
                return "direct messages ignored"
            case "allowed_only" if not self.allowed_users:
                return "no users allowed"
        return None if allowed_user else "user not allowed"


class UserRateLimit:
    """At most ``per_minute`` messages per user in any sliding 60-second window."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._seen: dict[str, collections.deque[float]] = {}

    def allow(self, user: str) -> bool:
        if self.per_minute <= 0:
            return True
        now = self._clock()
        window = self._seen.setdefault(user, collections.deque())
        while window and now - window[0] >= 60.0:
            window.popleft()
        if len(window) >= self.per_minute:
            return False
        window.append(now)
        if len(self._seen) > 10_000:  # forget idle users so the map stays bounded
            for key in [k for k, w in self._seen.items() if not w or now - w[-1] >= 60.0]:
                del self._seen[key]
        return True
