"""What every layer needs to know about a request, read in one pass over its headers.

The envelope middleware reads these once and keeps them in the scope; the Host/Origin rules,
the gatekeeper and the body limit use them instead of parsing headers again.
"""

from __future__ import annotations

import functools
import ipaddress
import re

import attrs
from starlette.types import Scope

FACTS_KEY = "fangwire.facts"

_INBOUND_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


@functools.lru_cache(maxsize=4096)
def is_loopback_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.define
class RequestFacts:
    """``client`` is the peer address; ``loopback`` is true only for a direct loopback peer
    (a request relayed by a proxy is never loopback). ``credential`` comes from
    ``Authorization: Bearer`` or ``X-API-Key`` — never from the query string — and is ``""``
    when such a header is present but unusable. ``request_id`` is the caller's
    ``X-Request-ID`` when it is a sane token."""

    client: str
    loopback: bool
    host: str
    origin: str
    request_id: str | None
    credential: str | None
    content_length: str | None
    chunked: bool

    @property
    def may_have_body(self) -> bool:
        """HTTP/1.1 without Content-Length or Transfer-Encoding carries no body."""
        return self.content_length is not None or self.chunked

    @classmethod
    def read(cls, scope: Scope) -> RequestFacts:
        host = origin = ""
        request_id = authorization = api_key = content_length = None
        proxied = chunked = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"x-request-id":
                text = value.decode("latin-1")
                request_id = text if _INBOUND_ID.match(text) else None
            elif name in (b"x-forwarded-for", b"forwarded"):
                proxied = True
        peer = scope.get("client")
        client = str(peer[0]) if peer else "unknown"
        return cls(
            client=client,
            loopback=not proxied and is_loopback_address(client),
            host=host,
            origin=origin,
            request_id=request_id,
            credential=_credential(authorization, api_key),
            content_length=content_length,
            chunked=chunked,
        )


def _credential(authorization: str | None, api_key: str | None) -> str | None:
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return ""
    if api_key is not None:
        return api_key.strip()
    return None


def facts_of(scope: Scope) -> RequestFacts:
    """The facts for this request (read and kept in the scope on first use)."""
    facts = scope.get(FACTS_KEY)
    if facts is None:
        facts = scope[FACTS_KEY] = RequestFacts.read(scope)
    return facts
