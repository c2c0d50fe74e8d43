"""The ``[a2a]`` table of ``config.toml``.

Example::

    [a2a]
    name = "edge node"                  # the Agent Card's name
    description = "fangwire on the edge"
    public_url = "https://agents.example"   # base URL advertised in cards (default: from Host)
    default_agent = "assistant"         # who answers on /a2a (default: the oldest running agent)
    allow_hosts = ["10.0.0.0/8"]        # outbound allowlist for discovered agents
    task_retention_days = 7
    max_tasks = 10000
    send_wait_seconds = 30              # how long POST /a2a/tasks/send waits for an answer

Bad values fail the plugin at start with the key's path named, like every other section.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from fangwire.config import ConfigError, format_structure_error
from fangwire.security.ssrf import OutboundPolicy

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

DEFAULT_NAME = "fangwire"
DEFAULT_DESCRIPTION = "fangwire agents over the A2A protocol"


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name}: must be a positive number, got {value}")


@attrs.frozen
class A2ASettings:
    """Validated ``[a2a]`` settings."""

    name: str = DEFAULT_NAME
    description: str = DEFAULT_DESCRIPTION
    public_url: str = ""
    default_agent: str = ""
    #: Outbound allowlist (IPs, CIDRs or exact host names) for agent cards and remote calls.
    allow_hosts: tuple[str, ...] = ()
    task_retention_days: float = attrs.field(default=7.0, validator=_positive)
    max_tasks: int = attrs.field(default=10_000, validator=_positive)
    send_wait_seconds: float = attrs.field(default=30.0, validator=_positive)
    #: Cap on a fetched Agent Card and on each remote response.
    max_card_bytes: int = attrs.field(default=256 * 1024, validator=_positive)
    outbound_timeout_seconds: float = attrs.field(default=30.0, validator=_positive)

    def outbound_policy(self) -> OutboundPolicy:
        return OutboundPolicy(
            allow_hosts=self.allow_hosts,
            max_response_bytes=self.max_card_bytes,
            timeout_seconds=self.outbound_timeout_seconds,
        )


def parse_settings(table: Mapping[str, Any], runtime: Runtime) -> A2ASettings:
    """Structure ``[a2a]`` with the runtime's strict converter; errors name ``a2a.<key>``."""
    try:
        return runtime.converter.structure(dict(table), A2ASettings)
    except Exception as exc:
        lines = format_structure_error(exc, root="a2a").splitlines()
        raise ConfigError("\n".join(f"config.toml: {line}" for line in lines)) from None
