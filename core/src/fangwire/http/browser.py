"""Defences for a daemon that browsers can reach: Host and Origin checks.

A web page can make a browser send requests to ``127.0.0.1``; DNS rebinding can even make
them look same-origin. So, while no API key is configured (loopback callers are trusted), the
``Host`` header must name this machine; and a state-changing request that carries an
``Origin`` must come from the same origin or from a configured CORS origin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fangwire.config import HttpConfig, is_loopback_host
from fangwire.http.facts import RequestFacts

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def browser_refusal(
    facts: RequestFacts, method: str, http: HttpConfig, *, auth_configured: bool
) -> tuple[str, str] | None:
    """``(code, message)`` for a request the Host/Origin rules refuse (403), else ``None``."""
    if not auth_configured and facts.host:
        name = _host_name(facts.host).lower()
        if not is_loopback_host(name) and name not in http.allowed_hosts:
            return "forbidden_host", f"host {name!r} is not allowed; add it to http.allowed_hosts"
    origin = facts.origin
    if origin and method not in SAFE_METHODS:
        same_origin = urlsplit(origin).netloc.lower() == facts.host.lower()
        if not same_origin and origin not in http.cors_origins:
            return (
                "forbidden_origin",
                f"origin {origin!r} may not call this API; add it to http.cors_origins",
            )
    return None
