"""Protocol transports: MCP client transports, A2A, OFP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from fangwire.http.routes import RouteSpec
    from fangwire.runtime import Runtime


class Transport:
    """Base class for transports registered through ``register_transports``.

    A transport may serve HTTP routes (returned by :meth:`routes`, mounted by the core with the
    same guards as every other route) and may run background work between :meth:`start` and
    :meth:`stop`, which the core calls inside the application lifespan.
    """

    transport_id: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def routes(self) -> Sequence[RouteSpec]:
        """HTTP routes this transport serves (none by default)."""
        return ()

    async def start(self) -> None:
        """Start background work; return promptly."""

    async def stop(self) -> None:
        """Stop background work within a bounded time."""
