"""Security headers sent on every response (OWASP secure headers for a JSON API).

Kept to what protects an API: every extra header is parsed and validated by the server on
every response, so headers that only matter for HTML pages are left out.
"""

from __future__ import annotations

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)

CACHE_CONTROL = (b"cache-control", b"no-store")
