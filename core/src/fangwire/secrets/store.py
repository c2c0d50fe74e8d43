"""`SecretStore`: the asynchronous facade fangwire code uses to read and write secrets."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Final, TypeVar

import anyio
import anyio.to_thread
from keyring.backend import KeyringBackend
from keyring.errors import KeyringError, PasswordDeleteError

from fangwire.redaction import Redactor
from fangwire.secrets.errors import SecretStoreError
from fangwire.secrets.value import Secret

__all__ = ["SecretStore", "validate_secret_name"]

_T = TypeVar("_T")

_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:/-]{1,200}")


def validate_secret_name(name: str) -> str:
    """Return ``name`` if it is a valid secret name, else raise `ValueError`.

    Valid: 1 to 200 characters among ASCII letters, digits and ``_ . : / -``.
    """
    if not isinstance(name, str) or _NAME_PATTERN.fullmatch(name) is None:
        shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
        raise ValueError(
            f"invalid secret name {shown}: use 1 to 200 characters among letters, digits "
            "and _ . : / -"
        )
    return name


class SecretStore:
    """Named secrets kept in a keyring backend under one keyring service (``"fangwire"``).

    Contract:

    * Backend calls run in a worker thread, never on the event loop.
    * The backend is read at most once per name: the result (absent included) is cached and
      `set`/`delete` keep the cache in step. Changes made behind the store's back (another
      process) are seen only after `invalidate`.
    * Every value read or written is registered with the redactor. `delete` discards the
      value from the redactor unless another cached name holds the same value; a value
      replaced by `set` stays registered, since copies of a rotated secret may still be
      in flight.
    * Backend failures raise `SecretStoreError` (the keyring error is chained as the cause).
    * ``repr`` shows the backend class, never values.
    """

    def __init__(
        self, backend: KeyringBackend, redactor: Redactor, service: str = "fangwire"
    ) -> None:
        if not service:
            raise ValueError("the keyring service name must not be empty")
        self._backend = backend
        self._redactor = redactor
        self._service = service
        self._cache: dict[str, str | None] = {}
        # Serializes cache fills and writes, so a slow read cannot overwrite a newer value in
        # the cache. Cache hits do not take it.
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return (
            f"SecretStore(service={self._service!r}, backend={type(self._backend).__name__}, "
            f"cached={len(self._cache)})"
        )

    @property
    def backend(self) -> KeyringBackend:
        """The keyring backend the secrets live in."""
        return self._backend

    async def get(self, name: str) -> Secret | None:
        """Return the secret called ``name``, or None when there is none."""
        validate_secret_name(name)
        if name in self._cache:
            return _wrap(self._cache[name])
        async with self._lock:
            if name not in self._cache:
                value = await self._run(
                    "read", name, partial(self._backend.get_password, self._service, name)
                )
                if value is not None:
                    self._redactor.add(value)
                self._cache[name] = value
            return _wrap(self._cache[name])

    async def has(self, name: str) -> bool:
        """Return whether a secret called ``name`` exists."""
        return await self.get(name) is not None

    async def set(self, name: str, value: str | Secret) -> None:
        """Store ``value`` under ``name``, replacing any previous value.

        Raises `ValueError` for an invalid name or an empty value (use `delete`).
        """
        validate_secret_name(name)
        plain = value.reveal() if isinstance(value, Secret) else value
        if not plain:
            raise ValueError(f"secret {name!r} must not be empty; delete it instead")
        # Registered before the write so that anything logged during the write is scrubbed.
        self._redactor.add(plain)
        async with self._lock:
            await self._run(
                "write", name, partial(self._backend.set_password, self._service, name, plain)
            )
            self._cache[name] = plain

    async def delete(self, name: str) -> bool:
        """Delete the secret called ``name``; return False when there was none."""
        validate_secret_name(name)
        async with self._lock:
            if name in self._cache and self._cache[name] is None:
                return False
            existed = await self._run(
                "delete", name, partial(_delete, self._backend, self._service, name)
            )
            if not existed:
                self._cache[name] = None
                return False
            old = self._cache.get(name)
            self._cache[name] = None
            if old is not None and old not in self._cache.values():
                self._redactor.discard(old)
            return True

    def invalidate(self, name: str | None = None) -> None:
        """Forget the cached value of ``name`` (all names when None); the next read hits the
        backend. Values stay registered with the redactor."""
        if name is None:
            self._cache.clear()
        else:
            self._cache.pop(name, None)

    async def _run(self, action: str, name: str, call: Callable[[], _T]) -> _T:
        try:
            return await anyio.to_thread.run_sync(call)
        except KeyringError as error:
            raise SecretStoreError(
                f"the secrets backend could not {action} secret {name!r} ({type(error).__name__})"
            ) from error


def _delete(backend: KeyringBackend, service: str, name: str) -> bool:
    try:
        backend.delete_password(service, name)
    except PasswordDeleteError:
        return False
    return True


def _wrap(value: str | None) -> Secret | None:
    return None if value is None else Secret(value)
