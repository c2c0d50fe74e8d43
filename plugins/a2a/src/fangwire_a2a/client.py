"""fangwire as an A2A client: discover external agents, trust them, send them tasks.

Rules:

- **Every outbound request goes through the shared outbound-URL guard**
  (:mod:`fangwire.security.ssrf`): private, loopback and metadata addresses are refused unless
  ``[a2a] allow_hosts`` lists them, DNS is pinned, redirects are not followed, responses are
  capped at ``[a2a] max_card_bytes``. The endpoint named inside a fetched card is checked too
  before it is registered (a card cannot point fangwire somewhere the operator did not allow).
- **Discovered agents start ``pending``.** Nothing is sent to an agent until an operator approves
  it. Re-discovering a trusted agent whose endpoint changed makes it pending again.
- **Version negotiation from the card:** a card listing a 1.0 interface is spoken to in 1.0, one
  with a 0.3 (or 0.2) interface in 0.3 — both through ``a2a-sdk``'s client, which picks the
  matching JSON-RPC or HTTP+JSON transport; a legacy card with neither ``supportedInterfaces``
  nor ``protocolVersion`` (A2A 0.1, as LibreFang serves) gets JSON-RPC ``tasks/send`` and
  ``tasks/get``.
- **Everything is audited**: ``a2a_discovered``, ``a2a_trusted``, ``a2a_send``, ``a2a_poll``,
  each written before the action it records (and its outcome after, for outbound calls).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from a2a.client import A2AClientError, ClientConfig, create_client
from a2a.client.card_resolver import parse_agent_card
from a2a.types.a2a_pb2 import (
    AgentCard,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    Task,
)
from a2a.utils.errors import A2AError
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError

from fangwire.http.errors import ApiError
from fangwire.security.ssrf import BlockedURL, fetch_limited, guarded_client, resolve_and_check
from fangwire.timeutil import rfc3339
from fangwire_a2a.rest import status_name
from fangwire_a2a.schema import A2A_MIGRATIONS
from fangwire_a2a.settings import A2ASettings

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

CARD_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")
MAX_PENDING = 1024
#: Protocol versions fangwire speaks as a client, most preferred first.
PROTOCOLS = ("1.0", "0.3", "0.1")
#: Protocol bindings spoken through the SDK (gRPC is not).
BINDINGS = ("JSONRPC", "HTTP+JSON")
LEGACY_STATES = {
    "submitted": "submitted",
    "working": "working",
    "completed": "completed",
    "failed": "failed",
    "canceled": "cancelled",
    "cancelled": "cancelled",
    "input-required": "input-required",
    "inputRequired": "input-required",
    "rejected": "rejected",
    "auth-required": "auth-required",
}


def _blocked(exc: BaseException) -> BlockedURL | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BlockedURL):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _upstream(message: str) -> ApiError:
    return ApiError(502, message, code="a2a_upstream_error")


def _blocked_error(exc: BlockedURL) -> ApiError:
    return ApiError(
        400, f"refused by the outbound URL guard: {exc.reason}", code="a2a_ssrf_blocked"
    )


def negotiate(raw: Mapping[str, Any], card: AgentCard) -> tuple[str, str]:
    """The protocol version to speak and the endpoint URL, from the card as served."""
    legacy = "supportedInterfaces" not in raw and "protocolVersion" not in raw
    if legacy:
        url = raw.get("url")
        if not isinstance(url, str) or not url:
            raise _upstream("the agent card names no endpoint url")
        return "0.1", url
    by_version: dict[str, str] = {}
    for interface in card.supported_interfaces:
        if interface.protocol_binding not in BINDINGS:
            continue
        major_minor = ".".join(interface.protocol_version.split(".")[:2])
        version = "0.3" if major_minor in ("0.2", "0.3") else major_minor
        by_version.setdefault(version, interface.url)
    for version in PROTOCOLS:
        if by_version.get(version):
            return version, by_version[version]
    offered = sorted({i.protocol_version for i in card.supported_interfaces})
    raise ApiError(
        502,
        f"the agent offers no protocol fangwire speaks (offered: {offered}; spoken: 1.0, 0.3, 0.1"
        " over JSON-RPC or HTTP+JSON)",
        code="a2a_unsupported_protocol",
    )


def base_and_card_urls(url: str) -> tuple[str, list[str]]:
    """The agent's base URL and the card URLs to try, from what the operator gave."""
    text = url.strip()
    for path in CARD_PATHS:
        if text.endswith(path):
            return text[: -len(path)], [text]
    base = text.rstrip("/")
    return base, [base + path for path in CARD_PATHS]


def _remote_status(task: Mapping[str, Any], protocol: str) -> str:
    if protocol == "0.1":
        status = task.get("status")
        state = status.get("state") if isinstance(status, Mapping) else status
        return LEGACY_STATES.get(str(state), "unknown")
    parsed = ParseDict(dict(task), Task(), ignore_unknown_fields=True)
    return status_name(parsed.status.state)


def _texts(task: Mapping[str, Any]) -> list[str]:
    texts: list[str] = []
    for artifact in task.get("artifacts") or []:
        for part in artifact.get("parts") or []:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    if not texts:
        for message in task.get("messages") or task.get("history") or []:
            if isinstance(message, Mapping) and message.get("role") in ("agent", "ROLE_AGENT"):
                texts = [p["text"] for p in message.get("parts") or [] if "text" in p]
    return texts


class RemoteAgents:
    """Discovered agents and the tasks sent to them, for one runtime."""

    def __init__(self, runtime: Runtime, settings: A2ASettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.policy = settings.outbound_policy()

    async def start(self) -> None:
        await self.runtime.store.migrate(A2A_MIGRATIONS)

    # -- registry -------------------------------------------------------------------------------

    async def find(self, ref: str) -> dict[str, Any] | None:
        """A known agent by id, by URL (as given or with a card path), or by name."""
        row = await self.runtime.store.fetch_one(
            "SELECT * FROM a2a_remote_agents WHERE id = ? OR url = ?", (ref, ref)
        )
        if row is None:
            base, _ = base_and_card_urls(ref)
            row = await self.runtime.store.fetch_one(
                "SELECT * FROM a2a_remote_agents WHERE url = ? OR name = ?"
                " ORDER BY created_at LIMIT 1",
                (base, ref),
            )
        return row

    async def all(self) -> list[dict[str, Any]]:
        return await self.runtime.store.fetch_all(
            "SELECT * FROM a2a_remote_agents ORDER BY created_at, id"
        )

    @staticmethod
    def view(row: Mapping[str, Any]) -> dict[str, Any]:
        card = json.loads(row["card"])
        skills = [
            {"id": s.get("id"), "name": s.get("name"), "description": s.get("description")}
            for s in card.get("skills") or []
            if isinstance(s, Mapping)
        ]
        return {
            "id": row["id"],
            "name": row["name"],
            "url": row["url"],
            "description": row["description"],
            "version": row["version"],
            "skills": skills,
            "status": row["status"],
            "protocol": row["protocol"],
            "endpoint": row["endpoint"],
            "discovered_by": row["discovered_by"],
            "approved_by": row["approved_by"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "card": card,
        }

    # -- discovery ------------------------------------------------------------------------------

    async def fetch_card(self, url: str) -> tuple[str, dict[str, Any]]:
        """Fetch the card (``agent-card.json``, then ``agent.json``); return base URL and JSON."""
        base, candidates = base_and_card_urls(url)
        problems: list[str] = []
        async with guarded_client(self.policy) as http:
            for card_url in candidates:
                try:
                    response = await fetch_limited(
                        http, "GET", card_url, headers={"Accept": "application/json"}
                    )
                except BlockedURL as exc:
                    raise _blocked_error(exc) from None
                except httpx.HTTPError as exc:
                    problems.append(f"{card_url}: {type(exc).__name__}")
                    continue
                if response.is_redirect:
                    problems.append(f"{card_url}: redirect ({response.status_code}) not followed")
                    continue
                if response.status_code != 200:
                    problems.append(f"{card_url}: HTTP {response.status_code}")
                    continue
                try:
                    data = json.loads(response.content)
                except ValueError:
                    problems.append(f"{card_url}: not JSON")
                    continue
                if not isinstance(data, dict):
                    problems.append(f"{card_url}: not a JSON object")
                    continue
                return base, data
        raise _upstream("could not fetch an agent card: " + "; ".join(problems))

    async def discover(self, url: str, *, actor: str) -> tuple[dict[str, Any], bool]:
        """Fetch and register the agent at ``url``; return its view and whether it is new."""
        base, raw = await self.fetch_card(url)
        try:
            card = parse_agent_card(copy.deepcopy(raw))
        except (ParseError, ValueError, TypeError) as exc:
            raise _upstream(f"the agent card is not valid: {exc}") from None
        protocol, endpoint = negotiate(raw, card)
        try:
            await resolve_and_check(endpoint, self.policy)
        except BlockedURL as exc:
            raise _blocked_error(exc) from None
        name = card.name.strip() or base
        store = self.runtime.store
        existing = await store.fetch_one("SELECT * FROM a2a_remote_agents WHERE url = ?", (base,))
        clash = await store.fetch_one(
            "SELECT url FROM a2a_remote_agents WHERE name = ? AND url != ?", (name, base)
        )
        if clash is not None:
            raise ApiError(
                409,
                f"an agent named {name!r} is already registered from {clash['url']}",
                code="a2a_name_conflict",
            )
        if existing is None:
            pending = await store.fetch_one(
                "SELECT COUNT(*) AS n FROM a2a_remote_agents WHERE status = 'pending'"
            )
            if pending is not None and int(pending["n"]) >= MAX_PENDING:
                raise ApiError(
                    429, f"too many agents await approval (limit {MAX_PENDING})", code="a2a_busy"
                )
        status = "pending"
        if existing is not None and existing["status"] == "trusted":
            status = "trusted" if existing["endpoint"] == endpoint else "pending"
        details = {"url": base, "name": name, "protocol": protocol, "endpoint": endpoint}
        await self.runtime.audit.record(
            "a2a_discovered", details={**details, "actor": actor, "status": status}
        )
        now = rfc3339()
        agent_id = existing["id"] if existing is not None else str(uuid.uuid4())
        await store.execute(
            "INSERT INTO a2a_remote_agents (id, url, name, description, version, card, protocol,"
            " endpoint, status, discovered_by, approved_by, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)"
            " ON CONFLICT(url) DO UPDATE SET name = excluded.name,"
            " description = excluded.description, version = excluded.version,"
            " card = excluded.card, protocol = excluded.protocol, endpoint = excluded.endpoint,"
            " status = ?, updated_at = excluded.updated_at",
            (
                agent_id,
                base,
                name,
                card.description[:2000],
                card.version[:200],
                json.dumps(raw, separators=(",", ":")),
                protocol,
                endpoint,
                status,
                actor,
                now,
                now,
                status,
            ),
        )
        row = await store.fetch_one("SELECT * FROM a2a_remote_agents WHERE id = ?", (agent_id,))
        assert row is not None  # noqa: S101 - written just above
        return self.view(row), existing is None

    async def approve(self, ref: str, *, actor: str) -> dict[str, Any]:
        row = await self.find(ref)
        if row is None:
            raise ApiError(404, f"no discovered agent {ref!r}", code="not_found")
        await self.runtime.audit.record(
            "a2a_trusted", details={"url": row["url"], "name": row["name"], "actor": actor}
        )
        await self.runtime.store.execute(
            "UPDATE a2a_remote_agents SET status = 'trusted', approved_by = ?, updated_at = ?"
            " WHERE id = ?",
            (actor, rfc3339(), row["id"]),
        )
        fresh = await self.find(row["id"])
        assert fresh is not None  # noqa: S101
        return self.view(fresh)

    async def trusted(self, ref: str, field: str) -> dict[str, Any]:
        row = await self.find(ref)
        if row is None:
            raise ApiError(
                404,
                f"{field}: no discovered agent {ref!r} (discover it first)",
                code="not_found",
            )
        if row["status"] != "trusted":
            raise ApiError(
                403,
                f"{field}: the agent {row['name']!r} awaits approval"
                f" (POST /api/a2a/agents/{row['id']}/approve)",
                code="a2a_agent_pending_approval",
            )
        return row

    # -- tasks ----------------------------------------------------------------------------------

    async def send(
        self,
        agent: Mapping[str, Any],
        text: str,
        *,
        actor: str,
        context_id: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        details = {"url": agent["url"], "name": agent["name"], "protocol": agent["protocol"]}
        await self.runtime.audit.record(
            "a2a_send", details={**details, "actor": actor}, outcome="pending"
        )
        try:
            with anyio.fail_after(self.settings.outbound_timeout_seconds):
                if agent["protocol"] == "0.1":
                    task = await self._send_legacy(agent, text, context_id)
                else:
                    task = await self._send_sdk(agent, text, context_id, wait)
        except TimeoutError:
            await self._audit_failure("a2a_send", details, actor, "timed out")
            raise ApiError(
                504,
                f"the agent did not answer within {self.settings.outbound_timeout_seconds} s",
                code="a2a_upstream_timeout",
            ) from None
        except ApiError as exc:
            await self._audit_failure("a2a_send", details, actor, exc.message)
            raise
        task_id = str(task.get("id") or uuid.uuid4())
        state = _remote_status(task, agent["protocol"])
        now = rfc3339()
        await self.runtime.store.execute(
            "INSERT INTO a2a_remote_tasks (id, agent_id, protocol, state, task, sent_by,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET state = excluded.state, task = excluded.task,"
            " updated_at = excluded.updated_at",
            (task_id, agent["id"], agent["protocol"], state, json.dumps(task), actor, now, now),
        )
        await self.runtime.audit.record(
            "a2a_send", details={**details, "actor": actor, "task_id": task_id, "status": state}
        )
        return self.task_view(task_id, agent, state, task)

    async def poll(self, task_id: str, agent_ref: str | None, *, actor: str) -> dict[str, Any]:
        row = await self.runtime.store.fetch_one(
            "SELECT * FROM a2a_remote_tasks WHERE id = ?", (task_id,)
        )
        if row is not None:
            agent = await self.trusted(row["agent_id"], "task")
        elif agent_ref is not None:
            agent = await self.trusted(agent_ref, "url")
        else:
            raise ApiError(
                404,
                f"no task {task_id!r} was sent from here (name its agent with ?url= or ?agent_id=)",
                code="not_found",
            )
        details = {"url": agent["url"], "task_id": task_id, "actor": actor}
        await self.runtime.audit.record("a2a_poll", details=details, outcome="pending")
        try:
            with anyio.fail_after(self.settings.outbound_timeout_seconds):
                if agent["protocol"] == "0.1":
                    task = await self._get_legacy(agent, task_id)
                else:
                    task = await self._get_sdk(agent, task_id)
        except TimeoutError:
            await self._audit_failure("a2a_poll", details, actor, "timed out")
            raise ApiError(
                504, "the agent did not answer in time", code="a2a_upstream_timeout"
            ) from None
        except ApiError as exc:
            await self._audit_failure("a2a_poll", details, actor, exc.message)
            raise
        state = _remote_status(task, agent["protocol"])
        await self.runtime.store.execute(
            "INSERT INTO a2a_remote_tasks (id, agent_id, protocol, state, task, sent_by,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET state = excluded.state, task = excluded.task,"
            " updated_at = excluded.updated_at",
            (task_id, agent["id"], agent["protocol"], state, json.dumps(task), actor,
             rfc3339(), rfc3339()),
        )  # fmt: skip
        await self.runtime.audit.record("a2a_poll", details={**details, "status": state})
        return self.task_view(task_id, agent, state, task)

    async def _audit_failure(
        self, event: str, details: Mapping[str, Any], actor: str, error: str
    ) -> None:
        await self.runtime.audit.record(
            event, details={**details, "actor": actor, "error": error}, outcome="error"
        )

    @staticmethod
    def task_view(
        task_id: str, agent: Mapping[str, Any], state: str, task: Mapping[str, Any]
    ) -> dict[str, Any]:
        texts = _texts(task) if state == "completed" else []
        return {
            "task_id": task_id,
            "agent_id": agent["id"],
            "url": agent["url"],
            "protocol": agent["protocol"],
            "status": state,
            "result": (
                {"role": "agent", "parts": [{"type": "text", "text": t} for t in texts]}
                if state == "completed"
                else None
            ),
            "task": task,
        }

    # -- the SDK for 1.0 and 0.3 ------------------------------------------------------------------

    @staticmethod
    def _client_config(http: httpx.AsyncClient) -> ClientConfig:
        return ClientConfig(
            httpx_client=http, streaming=False, supported_protocol_bindings=list(BINDINGS)
        )

    def _card(self, agent: Mapping[str, Any]) -> AgentCard:
        return parse_agent_card(json.loads(agent["card"]))

    async def _send_sdk(
        self, agent: Mapping[str, Any], text: str, context_id: str | None, wait: bool
    ) -> dict[str, Any]:
        message = Message(
            message_id=str(uuid.uuid4()),
            role=Role.ROLE_USER,
            parts=[Part(text=text)],
            context_id=context_id or "",
        )
        request = SendMessageRequest(
            message=message,
            configuration=SendMessageConfiguration(
                return_immediately=not wait, accepted_output_modes=["text/plain", "text"]
            ),
        )
        last: dict[str, Any] | None = None
        async with guarded_client(self.policy) as http:
            client = await create_client(self._card(agent), self._client_config(http))
            try:
                async for event in client.send_message(request):
                    if event.HasField("task"):
                        last = MessageToDict(event.task)
                    elif event.HasField("message"):
                        reply = MessageToDict(event.message)
                        last = {
                            "id": reply.get("taskId") or reply.get("messageId"),
                            "contextId": reply.get("contextId", ""),
                            "status": {"state": "TASK_STATE_COMPLETED", "message": reply},
                            "artifacts": [{"artifactId": "message", "parts": reply["parts"]}],
                        }
            except (A2AClientError, A2AError, httpx.HTTPError) as exc:
                raise self._sdk_error(exc) from None
            finally:
                await client.close()
        if last is None:
            raise _upstream("the agent answered with neither a task nor a message")
        return last

    async def _get_sdk(self, agent: Mapping[str, Any], task_id: str) -> dict[str, Any]:
        async with guarded_client(self.policy) as http:
            client = await create_client(self._card(agent), self._client_config(http))
            try:
                task = await client.get_task(GetTaskRequest(id=task_id))
            except (A2AClientError, A2AError, httpx.HTTPError) as exc:
                raise self._sdk_error(exc) from None
            finally:
                await client.close()
        return MessageToDict(task)

    @staticmethod
    def _sdk_error(exc: Exception) -> ApiError:
        blocked = _blocked(exc)
        if blocked is not None:
            return _blocked_error(blocked)
        name = type(exc).__name__
        if name == "TaskNotFoundError":
            return ApiError(404, "the agent knows no such task", code="a2a_remote_not_found")
        return _upstream(f"the agent failed: {name}: {exc}")

    # -- A2A 0.1 (tasks/send) ---------------------------------------------------------------------

    async def _rpc(self, endpoint: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method, "params": params}
        async with guarded_client(self.policy) as http:
            try:
                response = await fetch_limited(http, "POST", endpoint, json=body)
            except BlockedURL as exc:
                raise _blocked_error(exc) from None
            except httpx.HTTPError as exc:
                raise _upstream(f"the agent failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise _upstream(f"the agent answered HTTP {response.status_code}")
        try:
            reply = json.loads(response.content)
        except ValueError:
            raise _upstream("the agent answered with something that is not JSON") from None
        if not isinstance(reply, dict):
            raise _upstream("the agent answered with something that is not a JSON-RPC response")
        error = reply.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            if code == -32001:
                raise ApiError(404, "the agent knows no such task", code="a2a_remote_not_found")
            raise _upstream(f"the agent answered error {code}: {error.get('message')}")
        result = reply.get("result")
        if not isinstance(result, dict):
            raise _upstream("the agent's answer has no task")
        return result

    async def _send_legacy(
        self, agent: Mapping[str, Any], text: str, context_id: str | None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "message": {"role": "user", "parts": [{"type": "text", "text": text}]},
        }
        if context_id:
            params["sessionId"] = context_id
        return await self._rpc(agent["endpoint"], "tasks/send", params)

    async def _get_legacy(self, agent: Mapping[str, Any], task_id: str) -> dict[str, Any]:
        return await self._rpc(agent["endpoint"], "tasks/get", {"id": task_id})
