"""Principals, roles and the auth provider interface.

The core extracts the presented credential (``Authorization: Bearer`` or ``X-API-Key``) and
asks each registered :class:`AuthProvider` in turn; the first principal returned wins. Rules
that hold whatever providers are installed (loopback-only service without a key, lockout after
repeated failures, role checks) live in :mod:`fangwire.http.security`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, ClassVar

import attrs

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from fangwire.runtime import Runtime


class Role(enum.IntEnum):
    """What a principal may do; each role includes every lower one."""

    VIEWER = 0
    USER = 1
    ADMIN = 2
    OWNER = 3

    @classmethod
    def parse(cls, value: str) -> Role:
        """Return the role named ``value`` (case-insensitive); ``ValueError`` names bad input."""
        try:
            return cls[value.strip().upper()]
        except KeyError:
            names = ", ".join(r.name.lower() for r in cls)
            raise ValueError(f"unknown role {value!r}; expected one of {names}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@attrs.frozen
class Principal:
    """An authenticated caller.

    ``subject`` identifies the caller for rate limiting and audit (never a secret);
    ``credential_id`` names the credential used (a key id or fingerprint, never the key).
    """

    subject: str
    role: Role
    provider: str
    credential_id: str | None = None

    def allows(self, required: Role) -> bool:
        return self.role >= required


class AuthProvider:
    """Base class for auth providers registered through ``register_auth_providers``.

    Subclasses set ``provider_id`` and implement :meth:`authenticate`. The core constructs one
    instance per runtime with the runtime as sole argument.
    """

    provider_id: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    #: Lower runs first.
    order: ClassVar[int] = 100

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def is_configured(self) -> bool:
        """True when this provider holds at least one credential it could accept.

        While no provider is configured the daemon serves loopback callers only.
        """
        return False

    async def authenticate(self, credential: str, connection: HTTPConnection) -> Principal | None:
        """Return the principal for ``credential``, or ``None`` if this provider does not know it.

        Must compare secrets in constant time and must not log or store the credential.
        """
        raise NotImplementedError
