"""An inbound message may name the agent it wants (``InboundMessage.agent``)."""

from __future__ import annotations

import anyio
import pytest

from fangwire.agents import AgentSpec
from fangwire.channels import InboundMessage
from fangwire_channels.test import TestChannel

pytestmark = pytest.mark.anyio

CONFIG = '[channels.test]\nagent = "assistant"\n'


async def answered_by(runtime, channel: TestChannel, agent: str | None) -> str:
    async with runtime.bus.subscribe("channel.outbound") as sub:
        await channel.ctx.deliver(
            InboundMessage(channel="test", sender="ann", chat="ann", text="hi", agent=agent)
        )
        with anyio.fail_after(10):
            event = await sub.receive()
    return str(event.payload["from"])


async def test_a_running_agent_named_by_the_message_answers_it(make_runtime) -> None:
    runtime = make_runtime(CONFIG)
    async with runtime.serving():
        coder = await runtime.agents.spawn(
            AgentSpec(name="coder", provider="echo", model="echo-1"), actor="t"
        )
        assistant = await runtime.agents.find("assistant")
        assert assistant is not None
        channel = runtime.channels.running("test").adapter
        assert isinstance(channel, TestChannel)
        assert await answered_by(runtime, channel, "coder") == coder.id
        assert await answered_by(runtime, channel, None) == assistant.id


async def test_an_unknown_agent_name_falls_back_to_the_binding(make_runtime) -> None:
    runtime = make_runtime(CONFIG)
    async with runtime.serving():
        assistant = await runtime.agents.find("assistant")
        assert assistant is not None
        channel = runtime.channels.running("test").adapter
        assert isinstance(channel, TestChannel)
        assert await answered_by(runtime, channel, "URGENT") == assistant.id


def test_the_hint_survives_the_inbox() -> None:
    from fangwire.channelkit import inbox

    message = InboundMessage(channel="email", sender="a", chat="a", text="t", agent="coder")
    assert inbox._decode(inbox._encode(message)).agent == "coder"
