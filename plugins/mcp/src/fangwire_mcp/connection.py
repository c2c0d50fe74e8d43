"""One MCP server connection: connect, watch its health, reconnect with capped backoff.

:meth:`ServerConnection.run` is a long-running task owned by the manager. It connects with the
``mcp`` SDK's :class:`mcp.Client` (``mode="auto"``: a ``server/discover`` probe for the
2026-07-28 era, falling back to the ``initialize`` handshake of 2025-11-25 and earlier), lists
the tools, then checks the server every ``health_interval_secs`` with ``tools/list``. A
failed check, a closed connection or an exited process drops the connection; the next attempt
waits ``min(BACKOFF_CAP, BACKOFF_BASE * 2**(failures-1))`` seconds scaled by a random factor
in ``[0.5, 1]`` (jitter), unless a reconnect is requested. The status is ``connecting``
while it retries and becomes ``error: <reason>`` after ``unhealthy_threshold`` consecutive
failed attempts (it stays so, retrying, until an attempt succeeds).

Tool descriptions and input schemas are fingerprinted on the first successful listing (the
approval); a later listing that differs is flagged in ``changed_tools`` until the operator
reconnects the server explicitly, which approves the new descriptions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import mcp_types
from mcp import Client, MCPError
from mcp.shared.dispatcher import ProgressFnT

from fangwire import __version__
from fangwire_mcp.spec import ServerSpec

if TYPE_CHECKING:
    from fangwire_mcp.client_transport import ClientTransport

log = logging.getLogger("fangwire.mcp.client")

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
MAX_TOOL_PAGES = 50

Credentials = Callable[[ServerSpec], Awaitable[tuple[dict[str, str], dict[str, str]]]]


class Approvals(Protocol):
    """Where approved tool fingerprints are kept (they survive restarts)."""

    async def load(self, server: str) -> dict[str, str] | None: ...

    async def save(self, server: str, prints: Mapping[str, str]) -> None: ...


class ServerUnavailable(Exception):
    """The server is not connected (or the connection dropped during the call)."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def fingerprint(tool: mcp_types.Tool) -> str:
    data = {"description": tool.description or "", "input_schema": tool.input_schema}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def backoff_seconds(failures: int, rng: Callable[[], float] = random.random) -> float:
    """Delay before attempt number ``failures + 1``: capped exponential with jitter."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(0, failures - 1))
    return float(delay * (0.5 + 0.5 * rng()))


class _Reconnect(Exception):
    """Internal: leave the connected state (the reason is the message)."""


class ServerConnection:
    """The live state of one configured server."""

    def __init__(
        self,
        spec: ServerSpec,
        transport: ClientTransport | None,
        credentials: Credentials,
        approvals: Approvals | None = None,
        legacy_fallback: ClientTransport | None = None,
    ) -> None:
        self.spec = spec
        self.transport = transport
        #: For an ``http`` server: the ``sse`` transport to try when the endpoint refuses
        #: Streamable HTTP the way a pre-2025-03-26 HTTP+SSE server does.
        self.legacy_fallback = legacy_fallback
        #: The transport of the current (or last) connection.
        self.transport_in_use = spec.transport
        self._refused_http = False
        self._credentials = credentials
        self._approvals = approvals
        self.status = "connecting" if spec.enabled else "disabled"
        self.tools: list[mcp_types.Tool] = []
        self.prompts: list[mcp_types.Prompt] = []
        self.resources: list[mcp_types.Resource] = []
        self.resource_templates: list[mcp_types.ResourceTemplate] = []
        self.protocol_version: str | None = None
        self.server_info: dict[str, Any] | None = None
        self.last_ok: str | None = None
        self.last_error: str | None = None
        self.consecutive_failures = 0
        self.reconnect_attempts = 0
        self.connected_since: str | None = None
        self.approved: dict[str, str] | None = None
        self.changed_tools: list[str] = []
        self.calls = 0
        #: Changes whenever the tool list or the connected state changes.
        self.generation = 0
        self._client: Client | None = None
        self._scope: anyio.CancelScope | None = None
        self._lost: anyio.Event | None = None
        self._wake = anyio.Event()
        self._stopped = False
        self._reapprove = False
        self._settled = anyio.Event()
        #: Set when :meth:`run` has returned.
        self.finished = anyio.Event()

    # -- views --------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.status == "ready"

    @property
    def reconnecting(self) -> bool:
        return self.status == "connecting" and self.reconnect_attempts > 0

    def health(self) -> dict[str, Any]:
        return {
            "id": self.spec.name,
            "name": self.spec.name,
            "status": self.status,
            "tool_count": len(self.tools),
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "reconnecting": self.reconnecting,
            "reconnect_attempts": self.reconnect_attempts,
            "connected_since": self.connected_since,
            "protocol_version": self.protocol_version,
            "transport": self.transport_in_use,
            "tools_changed": list(self.changed_tools),
        }

    # -- control ------------------------------------------------------------------------------

    def request_reconnect(self, *, approve: bool = True) -> anyio.Event:
        """Drop the connection (if any) and connect again now; the event fires when settled."""
        self._reapprove = self._reapprove or approve
        self.consecutive_failures = 0
        self.transport_in_use = self.spec.transport
        self._settled = anyio.Event()
        self._drop()
        self._wake.set()
        return self._settled

    def stop(self) -> None:
        self._stopped = True
        self._drop()
        self._wake.set()

    def _drop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    # -- calls --------------------------------------------------------------------------------

    async def call_tool(
        self, tool: str, arguments: Mapping[str, Any], *, progress: ProgressFnT | None = None
    ) -> mcp_types.CallToolResult:
        """Call ``tool``; :class:`ServerUnavailable` if not connected or the link broke."""
        client, lost = self._client, self._lost
        if client is None or self.status != "ready":
            raise ServerUnavailable(f"MCP server {self.spec.name!r} is {self.status}")
        self.calls += 1
        try:
            return await client.call_tool(
                tool,
                dict(arguments),
                read_timeout_seconds=float(self.spec.timeout_secs),
                progress_callback=progress,
            )
        except MCPError as exc:
            if exc.code == mcp_types.CONNECTION_CLOSED and lost is not None:
                lost.set()
                raise ServerUnavailable(f"MCP server {self.spec.name!r}: connection lost") from None
            raise
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
            if lost is not None:
                lost.set()
            raise ServerUnavailable(f"MCP server {self.spec.name!r}: connection lost") from None

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and stay connected until :meth:`stop`."""
        while not self._stopped:
            if not self.spec.enabled or self.transport is None:
                self.status = (
                    "disabled"
                    if not self.spec.enabled
                    else f"error: no transport {self.spec.transport!r}"
                )
                self._settle()
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            self._wake = anyio.Event()
            use_sse = self.transport_in_use == "sse" and self.legacy_fallback is not None
            self._refused_http = False
            chosen = self.legacy_fallback if use_sse and self.legacy_fallback else self.transport
            reason = await self._connect_once(chosen)
            if self._refused_http and self.legacy_fallback is not None and not use_sse:
                # The endpoint refused the Streamable HTTP handshake: try it as HTTP+SSE.
                log.info("MCP server %s: trying the legacy HTTP+SSE transport", self.spec.name)
                self.transport_in_use = "sse"
                reason = await self._connect_once(self.legacy_fallback)
                if reason is not None:
                    self.transport_in_use = self.spec.transport
            self._client = None
            self._lost = None
            self.connected_since = None
            self.tools = []
            self.prompts = []
            self.resources = []
            self.resource_templates = []
            self.generation += 1
            if self._stop_requested():
                break
            if self._wake.is_set():
                self.status = "connecting"
                continue
            self.consecutive_failures += 1
            self.reconnect_attempts += 1
            self.last_error = reason
            unhealthy = self.consecutive_failures >= self.spec.unhealthy_threshold
            self.status = f"error: {reason}" if unhealthy else "connecting"
            self._settle()
            log.warning("MCP server %s: %s", self.spec.name, reason)
            with anyio.move_on_after(backoff_seconds(self.consecutive_failures)):
                await self._wake.wait()
            if self._wake.is_set() and not self._stop_requested():
                self.status = "connecting"
        self.status = "disabled" if not self.spec.enabled else "stopped"
        self._settle()
        self.finished.set()

    def _stop_requested(self) -> bool:
        # A method, so type checkers do not assume the flag kept its value across awaits.
        return self._stopped

    def _settle(self) -> None:
        self._settled.set()

    async def _connect_once(self, transport: ClientTransport) -> str | None:
        """One connection's life; the reason it ended (``None`` if asked to)."""
        spec = self.spec
        lost = anyio.Event()
        scope = anyio.CancelScope(deadline=anyio.current_time() + spec.timeout_secs)
        self._scope = scope
        connected = False
        try:
            with scope:
                env, headers = await self._credentials(spec)
                streams = transport.open(spec, env=env, headers=headers, lost=lost)
                client = Client(
                    streams,
                    mode="auto",
                    read_timeout_seconds=float(spec.timeout_secs),
                    client_info=mcp_types.Implementation(name="fangwire", version=__version__),
                    cache=None,
                )
                async with client:
                    tools = await self._list_tools(client)
                    await self._accept_tools(tools)
                    self.prompts = await self._list_prompts(client)
                    await self._list_resources(client)
                    scope.deadline = math.inf
                    connected = True
                    self._ready(client, lost)
                    await self._monitor(client, lost)
        except Exception as exc:
            self._refused_http = not connected and _refused_handshake(exc)
            return _describe(exc)
        finally:
            self._scope = None
        if scope.cancelled_caught and not connected and not self._wake.is_set():
            return f"timed out connecting after {spec.timeout_secs} s"
        return None

    def _ready(self, client: Client, lost: anyio.Event) -> None:
        self._client = client
        self._lost = lost
        self.protocol_version = client.protocol_version
        info = client.server_info
        self.server_info = info.model_dump(mode="json", exclude_none=True) if info else None
        self.status = "ready"
        self.generation += 1
        self.connected_since = self.last_ok = now_iso()
        self.consecutive_failures = 0
        log.info(
            "MCP server %s ready (%s, %d tools)",
            self.spec.name,
            self.protocol_version,
            len(self.tools),
        )
        self._settle()

    async def _accept_tools(self, tools: list[mcp_types.Tool]) -> None:
        """Compare ``tools`` with the approved fingerprints; tools never seen before are
        approved on sight, changed ones are flagged (and not offered, see the manager)."""
        prints = {tool.name: fingerprint(tool) for tool in tools}
        if self.approved is None and self._approvals is not None and not self._reapprove:
            self.approved = await self._approvals.load(self.spec.name)
        if self.approved is None or self._reapprove:
            approved = dict(prints)
            self._reapprove = False
        else:
            approved = {
                **{k: v for k, v in prints.items() if k not in self.approved},
                **self.approved,
            }
        if approved != self.approved:
            self.approved = approved
            if self._approvals is not None:
                await self._approvals.save(self.spec.name, approved)
        self.changed_tools = sorted(
            name for name, value in prints.items() if approved[name] != value
        )
        if self.changed_tools:
            log.warning(
                "MCP server %s changed the description of approved tools: %s",
                self.spec.name,
                ", ".join(self.changed_tools),
            )
        self.tools = tools
        self.generation += 1

    async def _list_tools(self, client: Client) -> list[mcp_types.Tool]:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def _list_prompts(self, client: Client) -> list[mcp_types.Prompt]:
        if client.server_capabilities.prompts is None:
            return []
        prompts: list[mcp_types.Prompt] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            page = await client.list_prompts(cursor=cursor)
            prompts.extend(page.prompts)
            cursor = page.next_cursor
            if not cursor:
                break
        return prompts

    async def _list_resources(self, client: Client) -> None:
        if client.server_capabilities.resources is None:
            return
        resources: list[mcp_types.Resource] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            page = await client.list_resources(cursor=cursor)
            resources.extend(page.resources)
            cursor = page.next_cursor
            if not cursor:
                break
        templates: list[mcp_types.ResourceTemplate] = []
        cursor = None
        for _ in range(MAX_TOOL_PAGES):
            listed = await client.list_resource_templates(cursor=cursor)
            templates.extend(listed.resource_templates)
            cursor = listed.next_cursor
            if not cursor:
                break
        self.resources, self.resource_templates = resources, templates

    async def read_resource(self, uri: str) -> mcp_types.ReadResourceResult:
        """Read ``uri`` from this server; :class:`ServerUnavailable` if not connected."""
        client = self._client
        if client is None or self.status != "ready":
            raise ServerUnavailable(f"MCP server {self.spec.name!r} is {self.status}")
        with anyio.fail_after(self.spec.timeout_secs):
            return await client.read_resource(uri)

    async def complete(
        self,
        ref: mcp_types.PromptReference | mcp_types.ResourceTemplateReference,
        argument: Mapping[str, str],
        context: Mapping[str, str] | None,
    ) -> list[str] | None:
        """Completion values from this server; ``None`` when it offers no completions."""
        client = self._client
        if client is None or self.status != "ready":
            raise ServerUnavailable(f"MCP server {self.spec.name!r} is {self.status}")
        if client.server_capabilities.completions is None:
            return None
        with anyio.fail_after(self.spec.timeout_secs):
            result = await client.complete(ref, dict(argument), dict(context) if context else None)
        return list(result.completion.values)

    async def get_prompt(
        self, prompt: str, arguments: Mapping[str, str]
    ) -> mcp_types.GetPromptResult:
        """Render ``prompt``; :class:`ServerUnavailable` if not connected."""
        client = self._client
        if client is None or self.status != "ready":
            raise ServerUnavailable(f"MCP server {self.spec.name!r} is {self.status}")
        with anyio.fail_after(self.spec.timeout_secs):
            return await client.get_prompt(prompt, dict(arguments))

    async def _monitor(self, client: Client, lost: anyio.Event) -> None:
        while True:
            with anyio.move_on_after(self.spec.health_interval_secs):
                await lost.wait()
            if lost.is_set():
                raise _Reconnect("connection lost")
            try:
                with anyio.fail_after(self.spec.timeout_secs):
                    tools = await self._list_tools(client)
            except Exception as exc:
                raise _Reconnect(f"health check failed: {_describe(exc)}") from None
            await self._accept_tools(tools)
            self.last_ok = now_iso()


#: What the SDK makes of a 4xx answer to its first POST (404: -32601, 405/400: -32603 or
#: -32600): the sign of an HTTP+SSE server at a Streamable HTTP URL.
_REFUSED_CODES = frozenset(
    {mcp_types.METHOD_NOT_FOUND, mcp_types.INTERNAL_ERROR, mcp_types.INVALID_REQUEST}
)


def _refused_handshake(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_refused_handshake(e) for e in exc.exceptions)
    return isinstance(exc, MCPError) and exc.code in _REFUSED_CODES


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]
