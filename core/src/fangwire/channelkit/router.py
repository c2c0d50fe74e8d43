"""Inbound routing: a platform message in, the bound agent's answer out through the same channel.

Every inbound message is published on the bus as ``channel.inbound`` (with any prompt-injection
findings), then checked against the channel's policy and per-user rate limit, given to the
agent the policy names for its chat, and the answer is sent back to the same chat — in the
message's thread when the platform has threads and the channel keeps ``threading`` on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fangwire.agents import AgentCallFailed, AgentNotFound
from fangwire.bus import BusEvent
from fangwire.channels import ChannelError, InboundMessage, OutboundMessage
from fangwire.security import injection

if TYPE_CHECKING:
    from fangwire.channelkit.runner import ChannelRunner
    from fangwire.runtime import Runtime

log = logging.getLogger("fangwire.channels")

#: The agent that answers a channel whose section names none.
FALLBACK_AGENT = "assistant"


def publish_inbound(runtime: Runtime, message: InboundMessage) -> None:
    findings = injection.scan(message.text, source=f"channel:{message.channel}")
    runtime.bus.publish(
        BusEvent(
            kind="channel.inbound",
            payload={
                "channel": message.channel,
                "sender": message.sender,
                "sender_name": message.sender_name,
                "chat": message.chat,
                "text": message.text,
                "thread_id": message.thread_id,
                "is_group": message.is_group,
                "message_id": message.message_id,
                "attachments": [
                    {"url": a.url, "name": a.name, "content_type": a.content_type, "size": a.size}
                    for a in message.attachments
                ],
                "injection_warnings": [
                    {"rule": f.rule, "severity": f.severity, "excerpt": f.excerpt} for f in findings
                ],
            },
        )
    )


async def route_inbound(runtime: Runtime, runner: ChannelRunner, message: InboundMessage) -> None:
    """Answer ``message`` with the bound agent, unless the channel's policy says otherwise."""
    publish_inbound(runtime, message)
    refusal = runner.policy.refusal(message)
    if refusal is None and not runner.rate_limit.allow(message.sender):
        refusal = "rate limited"
    if refusal is not None:
        runner.counters.ignored += 1
        log.debug(
            "channel %s: ignored message from %s (%s)", message.channel, message.sender, refusal
        )
        return
    agent_name = runner.policy.agent_for(message.chat, FALLBACK_AGENT)
    agent = await runtime.agents.find(agent_name)
    if agent is None or agent.state != "running":
        runner.counters.agent_failures += 1
        runner.counters.last_error = f"no running agent {agent_name!r}"
        log.warning("channel %s: no running agent %r", message.channel, agent_name)
        return
    try:
        reply = await runtime.agents.message(
            agent.id,
            message.text,
            sender=f"channel:{message.channel}:{message.sender}",
            channel=message.channel,
        )
    except (AgentCallFailed, AgentNotFound) as exc:
        runner.counters.agent_failures += 1
        runner.counters.last_error = getattr(exc, "reason", None) or str(exc)
        log.warning("channel %s: agent %s failed: %s", message.channel, agent.id, exc)
        return
    if not reply.text.strip():
        return
    threaded = runner.policy.threading and "threads" in runner.adapter.capabilities
    out = OutboundMessage(
        text=reply.text,
        thread_id=message.thread_id if threaded else None,
        reply_to=message.message_id,
    )
    try:
        await runtime.channels.send(message.channel, message.chat, out, sender=agent.id)
    except ChannelError as exc:
        log.warning(
            "channel %s: answer to %s not delivered: %s", message.channel, message.chat, exc.reason
        )
