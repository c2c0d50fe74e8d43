"""Per-request values stored in the ASGI scope, and accessors for endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from starlette.types import Scope

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from fangwire.auth import Principal
    from fangwire.runtime import Runtime

REQUEST_ID_KEY = "fangwire.request_id"
PRINCIPAL_KEY = "fangwire.principal"
RUNTIME_KEY = "fangwire.runtime"
#: Whether any auth provider holds a credential, computed once per request.
AUTH_CONFIGURED_KEY = "fangwire.auth_configured"


def request_id_of(scope: Scope) -> str:
    return cast(str, scope.get(REQUEST_ID_KEY, "-"))


def runtime_of(connection: HTTPConnection) -> Runtime:
    """The runtime serving this request."""
    return cast("Runtime", connection.scope[RUNTIME_KEY])


def principal_of(connection: HTTPConnection) -> Principal | None:
    """The authenticated caller, or ``None`` on a public route."""
    return cast("Principal | None", connection.scope.get(PRINCIPAL_KEY))


def actor_of(connection: HTTPConnection) -> str:
    """Who the audit log names for this request: the caller's subject, or ``anonymous``."""
    principal = principal_of(connection)
    return principal.subject if principal is not None else "anonymous"
