"""Who may call what, and how often.

For each request to a declared route the gatekeeper, in order:

1. refuses a client locked out after too many failed credentials (429, ``auth_locked_out``);
2. charges the route's cost to the client's GCRA budget (429, ``rate_limited``);
3. on non-public routes, authenticates the presented credential through the registered auth
   providers (401) and checks the route's role (403).

While no auth provider holds a credential, the daemon serves loopback callers only and treats
them as owners; everyone else gets 401. Loopback callers are rate limited too when a key is
configured, unless ``rate_limit.apply_to_loopback`` is false.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from fangwire.auth import Principal, Role
from fangwire.http.context import AUTH_CONFIGURED_KEY, PRINCIPAL_KEY
from fangwire.http.errors import ApiError
from fangwire.http.facts import RequestFacts, facts_of
from fangwire.ratelimit import Decision, GcraLimiter

if TYPE_CHECKING:
    from fangwire.http.routes import RouteSpec
    from fangwire.runtime import Runtime

log = logging.getLogger("fangwire.auth")

LOCAL_PRINCIPAL = Principal(subject="local", role=Role.OWNER, provider="loopback")


class Gatekeeper:
    """Authentication, authorisation and rate limiting for one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        limits = runtime.config.rate_limit
        self.requests = GcraLimiter(
            rate=limits.api_requests_per_minute, period=60.0, burst=limits.burst
        )
        self.auth_failures = GcraLimiter(
            rate=limits.auth_failures_allowed, period=float(limits.auth_failure_window_seconds)
        )

    @property
    def auth_configured(self) -> bool:
        return any(p.is_configured() for p in self.runtime.auth_providers)

    async def admit(self, connection: HTTPConnection, spec: RouteSpec) -> Decision | None:
        """Check the caller against ``spec``; return the rate-limit decision (if limited) or
        raise :class:`ApiError`. Stores the principal in the scope."""
        facts = facts_of(connection.scope)
        client = facts.client
        configured = connection.scope.get(AUTH_CONFIGURED_KEY)
        if configured is None:
            configured = self.auth_configured
        limited = not facts.loopback or (
            configured and self.runtime.config.rate_limit.apply_to_loopback
        )
        if limited:
            lock = self.auth_failures.check(client, 1, spend=False)
            if not lock.allowed:
                raise ApiError(
                    429,
                    "too many failed credentials from this client; try again later",
                    code="auth_locked_out",
                    headers={"Retry-After": lock.headers()["Retry-After"]},
                )
        decision: Decision | None = None
        if limited and spec.cost > 0 and self.runtime.config.rate_limit.enabled:
            decision = self.requests.check(client, spec.cost)
            if not decision.allowed:
                raise ApiError(
                    429,
                    "rate limit exceeded; slow down",
                    code="rate_limited",
                    headers=decision.headers(),
                )
        if spec.role is None:
            return decision
        principal = await self._authenticate(connection, facts, configured, limited)
        if not principal.allows(spec.role):
            await self._audit(
                "permission_denied",
                {
                    "subject": principal.subject,
                    "role": principal.role.label,
                    "required": spec.role.label,
                    "path": connection.url.path,
                },
                "denied",
            )
            log.warning(
                "permission denied: %s (%s) needs %s for %s",
                principal.subject,
                principal.role.label,
                spec.role.label,
                connection.url.path,
            )
            raise ApiError(
                403,
                f"role {principal.role.label!r} may not use this route; "
                f"it needs {spec.role.label!r}",
                code="forbidden",
            )
        connection.scope[PRINCIPAL_KEY] = principal
        return decision

    async def _audit(self, event_type: str, details: dict[str, str], outcome: str) -> None:
        """Record a denial; the request is refused whether or not the entry could be written."""
        try:
            await self.runtime.audit.record(event_type, details=details, outcome=outcome)
        except Exception:
            log.exception("could not audit %s", event_type)

    async def _authenticate(
        self, connection: HTTPConnection, facts: RequestFacts, configured: bool, limited: bool
    ) -> Principal:
        client = facts.client
        credential = facts.credential
        if not configured:
            if facts.loopback:
                return LOCAL_PRINCIPAL
            raise ApiError(
                401,
                "no API key is configured, so only loopback callers are served",
                code="unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not credential:
            raise ApiError(
                401,
                "missing credential: send Authorization: Bearer <key> or X-API-Key: <key>",
                code="unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )
        for provider in self.runtime.auth_providers:
            principal = await provider.authenticate(credential, connection)
            if principal is not None:
                return principal
        locked_now = False
        if limited:
            self.auth_failures.check(client)
            locked_now = not self.auth_failures.check(client, 1, spend=False).allowed
        log.warning("authentication failed from %s for %s", client, connection.url.path)
        await self._audit("auth_failure", {"client": client, "path": connection.url.path}, "denied")
        if locked_now:
            await self._audit("auth_lockout", {"client": client}, "denied")
        raise ApiError(
            401,
            "invalid credential",
            code="unauthorized",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
