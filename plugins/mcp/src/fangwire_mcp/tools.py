"""fangwire's own tools, offered at ``/mcp`` next to the proxied MCP tools.

Each tool has a JSON schema for its input, the lowest role that may see and call it, and an
async handler that gets the runtime, the validated arguments and the caller's subject. A
handler raises :class:`ToolFailure` for an expected failure (reported as an ``isError``
result); anything else is a bug.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from fangwire.agents import AgentCallFailed, AgentNotFound
from fangwire.auth import Role
from fangwire.channels import ChannelError, OutboundMessage

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

Handler = Callable[["Runtime", Mapping[str, Any], "ToolContext"], Awaitable[Any]]
Notify = Callable[[Mapping[str, Any]], Awaitable[None]]
MAX_TEXT_CHARS = 100_000

#: MCP log levels, least severe first.
LOG_LEVELS: tuple[str, ...] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)


class ToolContext:
    """What a running tool may do besides returning: report progress and log.

    Notifications reach the caller only when it asked for them (a ``progressToken`` in the
    request's ``_meta``; a log level set for the session or given in ``_meta``) and the
    response is an event stream; otherwise these calls do nothing.
    """

    def __init__(
        self,
        actor: str,
        *,
        notify: Notify | None = None,
        progress_token: str | int | None = None,
        log_level: str | None = None,
    ) -> None:
        self.actor = actor
        self._notify = notify
        self.progress_token = progress_token
        self.log_level = log_level

    @property
    def wants_progress(self) -> bool:
        return self._notify is not None and self.progress_token is not None

    async def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        if self._notify is None or self.progress_token is None:
            return
        params: dict[str, Any] = {"progressToken": self.progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self._notify({"method": "notifications/progress", "params": params})

    async def log(self, level: str, data: Any, logger: str = "fangwire") -> None:
        if self._notify is None or self.log_level is None:
            return
        if LOG_LEVELS.index(level) < LOG_LEVELS.index(self.log_level):
            return
        params = {"level": level, "logger": logger, "data": data}
        await self._notify({"method": "notifications/message", "params": params})


class ToolFailure(Exception):
    """The tool ran and failed in an expected way (unknown agent, platform refused)."""


@attrs.frozen
class RawResult:
    """A handler's result given as MCP content blocks (text, image, audio, resource).

    Other return values are sent as JSON text plus ``structuredContent``.
    """

    content: tuple[Mapping[str, Any], ...]
    is_error: bool = False


@attrs.frozen
class LocalTool:
    name: str
    description: str
    input_schema: Mapping[str, Any]
    role: Role
    handler: Handler

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "inputSchema": dict(self.input_schema),
        }


async def _list_channels(runtime: Runtime, args: Mapping[str, Any], ctx: ToolContext) -> Any:
    manager = runtime.channels
    channels = [
        {
            "name": name,
            "display_name": manager.classes[name].display_name or name,
            "configured": name in runtime.config.channels,
            "running": name in manager.runners,
        }
        for name in sorted(manager.classes)
    ]
    return {"channels": channels, "total": len(channels)}


async def _send_channel(runtime: Runtime, args: Mapping[str, Any], ctx: ToolContext) -> Any:
    name = args["channel"]
    if name not in runtime.channels:
        raise ToolFailure(f"no channel {name!r}")
    try:
        receipt = await runtime.channels.send(
            name,
            args["target"],
            OutboundMessage(text=args["text"], thread_id=args.get("thread_id")),
            sender=f"mcp:{ctx.actor}",
        )
    except ChannelError as exc:
        raise ToolFailure(f"channel {name!r}: {exc.reason}") from None
    return {
        "ok": True,
        "channel": receipt.channel,
        "target": receipt.target,
        "message_ids": list(receipt.message_ids),
    }


async def _send_agent(runtime: Runtime, args: Mapping[str, Any], ctx: ToolContext) -> Any:
    agent = await runtime.agents.find(args["agent"])
    if agent is None or agent.state != "running":
        raise ToolFailure(f"no running agent {args['agent']!r}")
    try:
        reply = await runtime.agents.message(agent.id, args["message"], sender=f"mcp:{ctx.actor}")
    except AgentNotFound:
        raise ToolFailure(f"no running agent {args['agent']!r}") from None
    except AgentCallFailed as exc:
        raise ToolFailure(exc.reason) from None
    return {
        "agent_id": agent.id,
        "response": reply.text,
        "input_tokens": reply.usage.input_tokens,
        "output_tokens": reply.usage.output_tokens,
        "cost_usd": reply.cost_usd,
    }


async def _list_agents(runtime: Runtime, args: Mapping[str, Any], ctx: ToolContext) -> Any:
    agents = [
        {"id": a.id, "name": a.name, "state": a.state, "model": a.model, "skills": list(a.skills)}
        for a in await runtime.agents.all()
    ]
    return {"agents": agents, "total": len(agents)}


async def _verify_audit(runtime: Runtime, args: Mapping[str, Any], ctx: ToolContext) -> Any:
    report = await runtime.audit.verify(deep=bool(args.get("deep", False)))
    return report.to_json()


async def _usage_summary(runtime: Runtime, args: Mapping[str, Any], ctx: ToolContext) -> Any:
    return await runtime.usage.summary()


def _object(properties: Mapping[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": dict(properties),
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


_TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS}

LOCAL_TOOLS: tuple[LocalTool, ...] = (
    LocalTool(
        "fangwire_list_channels",
        "List fangwire's channel adapters and whether each is configured.",
        _object({}),
        Role.VIEWER,
        _list_channels,
    ),
    LocalTool(
        "fangwire_send_channel_message",
        "Send a text message through a channel adapter to a chat, room or user.",
        _object(
            {
                "channel": {"type": "string", "minLength": 1, "description": "e.g. telegram"},
                "target": {"type": "string", "minLength": 1, "description": "chat/room/user id"},
                "text": _TEXT,
                "thread_id": {"type": "string"},
            },
            ("channel", "target", "text"),
        ),
        Role.USER,
        _send_channel,
    ),
    LocalTool(
        "fangwire_send_agent_message",
        "Send a message to a running fangwire agent and return its reply.",
        _object(
            {
                "agent": {"type": "string", "minLength": 1, "description": "agent id or name"},
                "message": _TEXT,
            },
            ("agent", "message"),
        ),
        Role.USER,
        _send_agent,
    ),
    LocalTool(
        "fangwire_list_agents",
        "List fangwire's agents with their state, model and skills.",
        _object({}),
        Role.VIEWER,
        _list_agents,
    ),
    LocalTool(
        "fangwire_verify_audit",
        "Verify the tamper-evident audit chain and report whether it is intact.",
        _object({"deep": {"type": "boolean", "description": "also recheck every entry hash"}}),
        Role.ADMIN,
        _verify_audit,
    ),
    LocalTool(
        "fangwire_usage_summary",
        "Today's model usage totals (tokens, cost, calls) and the hourly token quota.",
        _object({}),
        Role.VIEWER,
        _usage_summary,
    ),
)

LOCAL_BY_NAME: Mapping[str, LocalTool] = {tool.name: tool for tool in LOCAL_TOOLS}
#: Role needed to see and call tools proxied from connected MCP servers.
PROXIED_TOOL_ROLE = Role.USER
