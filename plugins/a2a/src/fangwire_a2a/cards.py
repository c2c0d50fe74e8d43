"""Agent Cards for this daemon and for each local agent.

One card serves A2A 1.0 and 0.3 clients at once: the 1.0 ``supportedInterfaces`` list (JSON-RPC
1.0 first, then JSON-RPC 0.3, same URL) plus the 0.3 top-level ``url``, ``preferredTransport``
and ``protocolVersion`` that the SDK's card encoder adds for the 0.3 interface. Every URL a card
names is served: ``{base}/a2a`` (the default agent) or ``{base}/a2a/agents/{id}`` (one agent),
both accepting JSON-RPC POSTs, and the per-agent URL also answers GET with the agent's card.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    APIKeySecurityScheme,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)

from fangwire.agents import Agent

JSONRPC = "JSONRPC"
VERSION_1_0 = "1.0"
VERSION_0_3 = "0.3"
MEDIA_TYPES = ("text/plain",)


def interfaces(url: str) -> list[AgentInterface]:
    return [
        AgentInterface(url=url, protocol_binding=JSONRPC, protocol_version=VERSION_1_0),
        AgentInterface(url=url, protocol_binding=JSONRPC, protocol_version=VERSION_0_3),
    ]


def agent_skill(agent: Agent) -> AgentSkill:
    listed = ", ".join(agent.skills)
    description = f"Ask the {agent.name} agent" + (f" (skills: {listed})" if listed else "")
    return AgentSkill(
        id=agent.name,
        name=agent.name,
        description=description,
        tags=list(agent.skills) or ["chat"],
        input_modes=list(MEDIA_TYPES),
        output_modes=list(MEDIA_TYPES),
    )


def build_card(
    *,
    name: str,
    description: str,
    url: str,
    version: str,
    skills: Sequence[AgentSkill],
    auth_required: bool,
) -> AgentCard:
    card = AgentCard(
        name=name,
        description=description,
        supported_interfaces=interfaces(url),
        version=version,
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=list(MEDIA_TYPES),
        default_output_modes=list(MEDIA_TYPES),
        skills=list(skills),
    )
    if auth_required:
        card.security_schemes["bearer"].CopyFrom(
            SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="bearer"))
        )
        card.security_schemes["apiKey"].CopyFrom(
            SecurityScheme(
                api_key_security_scheme=APIKeySecurityScheme(location="header", name="X-API-Key")
            )
        )
        for scheme in ("bearer", "apiKey"):
            requirement = SecurityRequirement()
            requirement.schemes[scheme].CopyFrom(StringList())
            card.security_requirements.append(requirement)
    return card


def card_json(card: AgentCard) -> dict[str, Any]:
    """The card as served: 1.0 fields, the 0.3 compatibility fields, and the capability
    flags spelled out even when false (protobuf's JSON would drop them)."""
    data = agent_card_to_dict(card)
    capabilities = data.setdefault("capabilities", {})
    capabilities["streaming"] = card.capabilities.streaming
    capabilities["pushNotifications"] = card.capabilities.push_notifications
    data.setdefault("skills", [])
    return data
