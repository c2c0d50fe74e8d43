"""Agents: a model behind a name, metered and budgeted."""

from fangwire.agents.model import Agent, AgentLimits
from fangwire.agents.registry import (
    AgentCallFailed,
    AgentNotFound,
    AgentRegistry,
    AgentSpec,
    CapabilityDenied,
    Reply,
)

__all__ = [
    "Agent",
    "AgentCallFailed",
    "AgentLimits",
    "AgentNotFound",
    "AgentRegistry",
    "AgentSpec",
    "CapabilityDenied",
    "Reply",
]
