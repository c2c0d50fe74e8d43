"""`MemoryKeyring`: a keyring backend that keeps secrets in process memory."""

from __future__ import annotations

import threading

from keyring.backend import KeyringBackend
from keyring.compat import properties
from keyring.errors import PasswordDeleteError

__all__ = ["MemoryKeyring"]


class MemoryKeyring(KeyringBackend):
    """Thread-safe in-memory keyring for tests and plugin-author fixtures; nothing persists.

    Every instance is independent. The priority is below keyring's own fail backend (0), so
    keyring's automatic selection never picks it: fangwire instantiates it explicitly.
    """

    @properties.classproperty
    def priority(cls) -> float:
        """Below every real backend and below keyring's fail backend: never auto-selected."""
        return -10.0

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # keyring leaves it untyped
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        """Return the stored password, or None."""
        with self._lock:
            return self._entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        """Store ``password``, replacing any previous one."""
        with self._lock:
            self._entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        """Remove the password; raise `PasswordDeleteError` when there is none."""
        with self._lock:
            if self._entries.pop((service, username), None) is None:
                raise PasswordDeleteError(f"no password stored for {service}/{username}")
