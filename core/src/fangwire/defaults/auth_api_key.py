"""The API-key auth provider: the master key from ``config.toml`` or the environment.

Accepted keys, any of which makes the caller an owner (as in LibreFang):

- ``api_key`` at the top level of ``config.toml`` (several keys: one per line, for rotation);
- ``api_key_hash``: ``$sha256$<hex digest of the key>``, so the file need not hold the key;
- the ``FANGWIRE_API_KEY`` environment variable.

Presented keys are hashed with SHA-256 and compared with every configured digest using
``hmac.compare_digest``, so neither the key's content nor its length leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

from fangwire.auth import AuthProvider, Principal, Role
from fangwire.hookspecs import hookimpl

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

HASH_PREFIX = "$sha256$"


def hash_api_key(key: str) -> str:
    """The ``api_key_hash`` value for ``key``."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeyProvider(AuthProvider):
    """Owner access for holders of the configured master API key."""

    provider_id = "api_key"
    display_name = "API key"
    order = 10

    _cache: tuple[object, tuple[bytes, ...]] | None = None

    def _digests(self) -> tuple[bytes, ...]:
        """SHA-256 digests of every accepted key, recomputed only when the config changes."""
        config = self.runtime.config
        cached = self._cache
        if cached is not None and cached[0] is config:
            return cached[1]
        digests = self._compute_digests()
        self._cache = (config, digests)
        return digests

    def _compute_digests(self) -> tuple[bytes, ...]:
        config = self.runtime.config
        keys = [k.strip() for k in config.api_key.splitlines() if k.strip()]
        keys += [
            k.strip()
            for k in self.runtime.environ.get("FANGWIRE_API_KEY", "").splitlines()
            if k.strip()
        ]
        digests = [_digest(k) for k in keys]
        configured_hash = config.api_key_hash.strip()
        if configured_hash:  # validated when the config was loaded
            digests.append(bytes.fromhex(configured_hash.removeprefix(HASH_PREFIX)))
        return tuple(digests)

    def is_configured(self) -> bool:
        return bool(self._digests())

    async def authenticate(self, credential: str, connection: HTTPConnection) -> Principal | None:
        presented = _digest(credential)
        matched = False
        for digest in self._digests():
            # Compare against every digest (no early exit) to keep timing uniform.
            matched |= hmac.compare_digest(presented, digest)
        if not matched:
            return None
        return Principal(
            subject="api-key:" + presented.hex()[:12],
            role=Role.OWNER,
            provider=self.provider_id,
            credential_id=presented.hex()[:12],
        )


@hookimpl
def register_auth_providers(register: Callable[[type[AuthProvider]], None]) -> None:
    register(ApiKeyProvider)
