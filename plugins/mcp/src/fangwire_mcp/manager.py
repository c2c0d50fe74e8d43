"""The MCP server manager: configured servers, their connections, and their tools.

Servers are configured in ``config.toml`` as ``[mcp.servers.<name>]`` tables (see
:mod:`fangwire_mcp.spec`); their credentials are in the secret store. The manager runs one
:class:`~fangwire_mcp.connection.ServerConnection` task per server in a task group of its own
and exposes every connected server's tools as ``mcp_{server}_{tool}``.

Every change (add, replace, remove, reconnect, reload) and every proxied tool call is audited;
audit details name servers and tools, never arguments or credentials.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types
from anyio.abc import TaskGroup
from mcp.shared.dispatcher import ProgressFnT

from fangwire.store.core_migrations import kv_get, kv_set
from fangwire_mcp.catalog import Catalog
from fangwire_mcp.client_transport import ClientTransport
from fangwire_mcp.connection import ServerConnection
from fangwire_mcp.naming import tool_name
from fangwire_mcp.resources import match_template
from fangwire_mcp.spec import Credentials, ServerSpec, SpecError, secret_name, spec_from_body

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

log = logging.getLogger("fangwire.mcp.manager")

STOP_TIMEOUT_SECONDS = 10.0


class ServerExists(Exception):
    pass


class UnknownServer(Exception):
    pass


class ToolNotApproved(Exception):
    """The tool's description or schema changed since an operator approved it."""


class StoredApprovals:
    """Approved tool fingerprints in the store's ``kv`` table, one JSON value per server."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @staticmethod
    def key(server: str) -> str:
        return f"mcp.approved_tools.{server}"

    async def load(self, server: str) -> dict[str, str] | None:
        raw = await kv_get(self.runtime.store, self.key(server))
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else None

    async def save(self, server: str, prints: Mapping[str, str]) -> None:
        await kv_set(self.runtime.store, self.key(server), json.dumps(dict(prints)))

    async def forget(self, server: str) -> None:
        await self.runtime.store.execute("DELETE FROM kv WHERE key = ?", (self.key(server),))


class ProxiedTool:
    """A connected server's tool under its exposed name."""

    __slots__ = ("connection", "name", "tool")

    def __init__(self, name: str, connection: ServerConnection, tool: mcp_types.Tool) -> None:
        self.name = name
        self.connection = connection
        self.tool = tool


class McpManager:
    """Owns the server connections of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.catalog = Catalog(runtime.home / "mcp" / "catalog")
        self.connections: dict[str, ServerConnection] = {}
        self.config_errors: dict[str, str] = {}
        self._tg: TaskGroup | None = None
        self._host: asyncio.Task[None] | None = None
        self._lock = anyio.Lock()
        self._index: dict[str, ProxiedTool] | None = None
        self._index_key: tuple[tuple[int, int, bool], ...] = ()
        self.approvals = StoredApprovals(runtime)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        ready = anyio.Event()
        self._host = asyncio.get_running_loop().create_task(self._main(ready))
        with anyio.fail_after(STOP_TIMEOUT_SECONDS):
            await ready.wait()
        for spec in self.configured_specs():
            self._launch(spec)

    async def _main(self, ready: anyio.Event) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                ready.set()
                await anyio.sleep_forever()
        finally:
            self._tg = None
            ready.set()

    async def stop(self) -> None:
        for connection in self.connections.values():
            connection.stop()
        host, self._host = self._host, None
        if host is None:
            return
        with anyio.move_on_after(STOP_TIMEOUT_SECONDS):
            for connection in list(self.connections.values()):
                await connection.finished.wait()
        host.cancel()
        with anyio.move_on_after(STOP_TIMEOUT_SECONDS):
            await asyncio.wait({host})
        if not host.done():
            log.warning("MCP connections did not stop in time")

    # -- configuration ------------------------------------------------------------------------

    def _servers_table(self) -> Mapping[str, Any]:
        mcp = self.runtime.config.mcp
        servers = mcp.get("servers", {}) if isinstance(mcp, Mapping) else {}
        return servers if isinstance(servers, Mapping) else {}

    def configured_specs(self) -> list[ServerSpec]:
        """Specs from ``config.toml``; a bad table is recorded in :attr:`config_errors`."""
        specs = []
        self.config_errors = {}
        for name, table in self._servers_table().items():
            try:
                if not isinstance(table, Mapping):
                    raise SpecError("expected a table")
                spec, credentials = spec_from_body(table, name=name)
                if credentials:
                    raise SpecError("credential values do not belong in config.toml")
            except SpecError as exc:
                self.config_errors[name] = f"mcp.servers.{name}: {exc}"
                log.error("config.toml: mcp.servers.%s: %s", name, exc)
                continue
            specs.append(spec)
        return specs

    def _transport(self, spec: ServerSpec) -> ClientTransport | None:
        transport = self.runtime.transports.get(spec.transport)
        return transport if isinstance(transport, ClientTransport) else None

    def _launch(self, spec: ServerSpec) -> ServerConnection:
        fallback = self.runtime.transports.get("sse") if spec.transport == "http" else None
        connection = ServerConnection(
            spec,
            self._transport(spec),
            self._credentials,
            self.approvals,
            legacy_fallback=fallback if isinstance(fallback, ClientTransport) else None,
        )
        self.connections[spec.name] = connection
        self._index = None
        if self._tg is not None:
            self._tg.start_soon(self._run, connection)
        return connection

    async def _run(self, connection: ServerConnection) -> None:
        try:
            await connection.run()
        finally:
            self._index = None

    async def _credentials(self, spec: ServerSpec) -> tuple[dict[str, str], dict[str, str]]:
        """Environment and header values for ``spec`` (secrets first, then the daemon's
        own environment for declared names that have no stored value)."""
        env: dict[str, str] = {}
        for name in spec.env:
            secret = await self.runtime.secrets.get(secret_name(spec.name, "env", name))
            if secret is not None:
                env[name] = secret.reveal()
            elif name in self.runtime.environ:
                env[name] = self.runtime.environ[name]
        headers: dict[str, str] = {}
        for name in spec.headers:
            secret = await self.runtime.secrets.get(secret_name(spec.name, "header", name))
            if secret is not None:
                headers[name] = secret.reveal()
        return env, headers

    async def _store_credentials(self, name: str, credentials: Credentials) -> None:
        for (kind, key), value in credentials.items():
            await self.runtime.secrets.set(secret_name(name, kind, key), value)

    async def _forget_credentials(self, spec: ServerSpec) -> None:
        for key in spec.env:
            await self.runtime.secrets.delete(secret_name(spec.name, "env", key))
        for key in spec.headers:
            await self.runtime.secrets.delete(secret_name(spec.name, "header", key))

    # -- changes ------------------------------------------------------------------------------

    async def add(self, spec: ServerSpec, credentials: Credentials, *, actor: str) -> None:
        """Save a new server and start connecting; :class:`ServerExists` if the name is taken."""
        async with self._lock:
            if spec.name in self.connections or spec.name in self._servers_table():
                raise ServerExists(spec.name)
            await self._audit("mcp_server_add", spec, actor, "pending")
            try:
                await self._store_credentials(spec.name, credentials)
                await self.runtime.change_config(
                    ["mcp", "servers", spec.name], spec.table(), actor=actor
                )
            except Exception:
                with anyio.CancelScope(shield=True):
                    await self._forget_credentials(spec)
                    await self._audit("mcp_server_add", spec, actor, "error")
                raise
            self._launch(spec)
            await self._audit("mcp_server_add", spec, actor, "ok")

    async def replace(self, spec: ServerSpec, credentials: Credentials, *, actor: str) -> None:
        async with self._lock:
            old = self.connections.get(spec.name)
            if old is None:
                raise UnknownServer(spec.name)
            await self._audit("mcp_server_replace", spec, actor, "pending")
            await self._store_credentials(spec.name, credentials)
            await self.runtime.change_config(
                ["mcp", "servers", spec.name], spec.table(), actor=actor
            )
            old.stop()
            self._launch(spec)
            await self._audit("mcp_server_replace", spec, actor, "ok")

    async def remove(self, name: str, *, actor: str) -> ServerSpec:
        async with self._lock:
            connection = self.connections.get(name)
            if connection is None:
                raise UnknownServer(name)
            spec = connection.spec
            await self._audit("mcp_server_remove", spec, actor, "pending")
            await self.runtime.change_config(
                ["mcp", "servers", name], None, actor=actor, remove=True
            )
            connection.stop()
            del self.connections[name]
            self._index = None
            await self._forget_credentials(spec)
            await self.approvals.forget(name)
            await self._audit("mcp_server_remove", spec, actor, "ok")
            return spec

    async def reconnect(self, name: str, *, actor: str, wait: float) -> ServerConnection:
        """Reconnect now (approving the current tool descriptions); wait up to ``wait``
        seconds for the attempt to settle."""
        connection = self.connections.get(name)
        if connection is None:
            raise UnknownServer(name)
        settled = connection.request_reconnect(approve=True)
        with anyio.move_on_after(wait):
            await settled.wait()
        await self._audit("mcp_server_reconnect", connection.spec, actor, "ok")
        return connection

    async def reload(self, *, actor: str) -> dict[str, Any]:
        """Re-read the catalog and ``config.toml``; start, stop or restart what changed."""
        async with self._lock:
            templates = self.catalog.reload()
            self.runtime.reload_config()
            wanted = {spec.name: spec for spec in self.configured_specs()}
            started: list[str] = []
            stopped: list[str] = []
            for name in list(self.connections):
                if name not in wanted:
                    self.connections.pop(name).stop()
                    stopped.append(name)
            for name, spec in wanted.items():
                current = self.connections.get(name)
                if current is not None and current.spec == spec:
                    continue
                if current is not None:
                    current.stop()
                self._launch(spec)
                started.append(name)
            self._index = None
            await self.runtime.audit.record(
                "mcp_reload",
                details={"actor": actor, "started": started, "stopped": stopped},
                outcome="ok",
            )
            return {"templates": templates, "started": started, "stopped": stopped}

    async def _audit(self, event: str, spec: ServerSpec, actor: str, outcome: str) -> None:
        await self.runtime.audit.record(
            event,
            details={
                "server": spec.name,
                "transport": spec.transport,
                "template_id": spec.template_id or "",
                "actor": actor,
            },
            outcome=outcome,
        )

    # -- tools --------------------------------------------------------------------------------

    def tools(self) -> dict[str, ProxiedTool]:
        """Every connected server's tools by exposed name (first server wins a clash).

        A tool whose description changed since it was approved is left out until an operator
        reconnects its server.
        """
        key = tuple((id(c), c.generation, c.connected) for c in self.connections.values())
        index = self._index
        if index is not None and key == self._index_key:
            return index
        index = {}
        for name in sorted(self.connections):
            connection = self.connections[name]
            if not connection.connected:
                continue
            changed = set(connection.changed_tools)
            for tool in connection.tools:
                if tool.name in changed:
                    continue
                exposed = tool_name(name, tool.name)
                index.setdefault(exposed, ProxiedTool(exposed, connection, tool))
        self._index = index
        self._index_key = key
        return index

    def invalidate(self) -> None:
        self._index = None

    def resources(self) -> dict[str, tuple[ServerConnection, mcp_types.Resource]]:
        """Every connected server's resources by URI (first server wins a clash)."""
        found: dict[str, tuple[ServerConnection, mcp_types.Resource]] = {}
        for name in sorted(self.connections):
            connection = self.connections[name]
            if connection.connected:
                for resource in connection.resources:
                    found.setdefault(str(resource.uri), (connection, resource))
        return found

    def resource_templates(self) -> list[tuple[ServerConnection, mcp_types.ResourceTemplate]]:
        return [
            (connection, template)
            for _, connection in sorted(self.connections.items())
            if connection.connected
            for template in connection.resource_templates
        ]

    def resource_owner(self, uri: str) -> ServerConnection | None:
        """The connected server that lists ``uri`` or has a template matching it."""
        listed = self.resources().get(uri)
        if listed is not None:
            return listed[0]
        for connection, template in self.resource_templates():
            if match_template(template.uri_template, uri) is not None:
                return connection
        return None

    async def read_resource(self, uri: str, *, actor: str) -> mcp_types.ReadResourceResult:
        """Read a proxied resource; ``KeyError`` if no connected server offers ``uri``."""
        connection = self.resource_owner(uri)
        if connection is None:
            raise KeyError(uri)
        outcome = "error"
        try:
            result = await connection.read_resource(uri)
            outcome = "ok"
            return result
        finally:
            with anyio.CancelScope(shield=True):
                await self.runtime.audit.record(
                    "mcp_resource_read",
                    details={"server": connection.spec.name, "uri": uri[:500], "actor": actor},
                    outcome=outcome,
                )

    def prompts(self) -> dict[str, tuple[ServerConnection, mcp_types.Prompt]]:
        """Every connected server's prompts by exposed name (first server wins a clash)."""
        found: dict[str, tuple[ServerConnection, mcp_types.Prompt]] = {}
        for name in sorted(self.connections):
            connection = self.connections[name]
            if connection.connected:
                for prompt in connection.prompts:
                    found.setdefault(tool_name(name, prompt.name), (connection, prompt))
        return found

    async def get_prompt(
        self, exposed: str, arguments: Mapping[str, str], *, actor: str
    ) -> mcp_types.GetPromptResult:
        """Render a proxied prompt by its exposed name; ``KeyError`` if there is none."""
        connection, prompt = self.prompts()[exposed]
        outcome = "error"
        try:
            result = await connection.get_prompt(prompt.name, arguments)
            outcome = "ok"
            return result
        finally:
            with anyio.CancelScope(shield=True):
                await self.runtime.audit.record(
                    "mcp_prompt_get",
                    details={"server": connection.spec.name, "prompt": prompt.name, "actor": actor},
                    outcome=outcome,
                )

    async def call(
        self,
        exposed: str,
        arguments: Mapping[str, Any],
        *,
        actor: str,
        progress: ProgressFnT | None = None,
    ) -> mcp_types.CallToolResult:
        """Call a proxied tool by its exposed name; ``KeyError`` if there is none,
        :class:`ToolNotApproved` if it changed since approval."""
        proxied = self.tools().get(exposed)
        if proxied is None:
            self._index = None
            proxied = self.tools().get(exposed)
        if proxied is None:
            for connection in self.connections.values():
                if any(
                    tool_name(connection.spec.name, t) == exposed for t in connection.changed_tools
                ):
                    raise ToolNotApproved(exposed)
            raise KeyError(exposed)
        connection = proxied.connection
        outcome = "error"
        try:
            result = await connection.call_tool(proxied.tool.name, arguments, progress=progress)
            outcome = "tool_error" if result.is_error else "ok"
            return result
        finally:
            with anyio.CancelScope(shield=True):
                await self.runtime.audit.record(
                    "mcp_tool_call",
                    details={
                        "server": connection.spec.name,
                        "tool": proxied.tool.name,
                        "actor": actor,
                    },
                    outcome=outcome,
                )
