"""Choosing the keyring backend fangwire stores its secrets in."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal, get_args

import attrs
import keyring.backend
from keyring.backend import KeyringBackend
from keyring.backends import chainer, fail, null

from fangwire.secrets.errors import SecretStoreError
from fangwire.secrets.filekeyring import EncryptedFileKeyring
from fangwire.secrets.masterkey import load_master_key
from fangwire.secrets.memory import MemoryKeyring

__all__ = [
    "BACKEND_ENV",
    "SECRETS_FILE_NAME",
    "BackendKind",
    "BackendPreference",
    "ChosenBackend",
    "choose_backend",
    "find_system_keyring",
]

_log = logging.getLogger(__name__)

BackendKind = Literal["system", "file", "memory"]
BackendPreference = Literal["auto", "system", "file", "memory"]

BACKEND_ENV: Final = "FANGWIRE_SECRETS_BACKEND"
SECRETS_FILE_NAME: Final = "secrets.enc"
DEFAULT_PROBE_TIMEOUT: Final = 5.0

_PREFERENCES: Final[tuple[str, ...]] = get_args(BackendPreference)
_NOT_SYSTEM: Final = (
    fail.Keyring,
    null.Keyring,
    chainer.ChainerBackend,
    EncryptedFileKeyring,
    MemoryKeyring,
)


@attrs.frozen
class ChosenBackend:
    """The backend `choose_backend` picked, what kind it is, and a description for humans.

    ``description`` never contains an absolute path.
    """

    backend: KeyringBackend
    kind: BackendKind
    description: str


def choose_backend(
    home: Path,
    environ: Mapping[str, str],
    preference: str = "auto",
    *,
    probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
) -> ChosenBackend:
    """Build the secrets backend for the fangwire home directory ``home``.

    ``preference`` (overridden by a non-empty ``FANGWIRE_SECRETS_BACKEND`` in ``environ``):

    * ``"auto"``: the usable system keyring if there is one (see `find_system_keyring`),
      otherwise the encrypted file;
    * ``"file"``: `EncryptedFileKeyring` at ``home / "secrets.enc"`` keyed by
      `load_master_key` (which may create ``home / "master.key"``);
    * ``"system"``: the usable system keyring, `SecretStoreError` when there is none;
    * ``"memory"``: a fresh `MemoryKeyring` (nothing persists).

    Raises `ValueError` for an unknown preference. Never calls ``keyring.set_keyring``.
    """
    chosen = preference
    from_env = environ.get(BACKEND_ENV, "").strip().lower()
    if from_env:
        chosen = from_env
    if chosen not in _PREFERENCES:
        source = BACKEND_ENV if from_env else "secrets backend preference"
        raise ValueError(f"{source} must be one of {', '.join(_PREFERENCES)}, not {chosen!r}")

    if chosen == "memory":
        return ChosenBackend(MemoryKeyring(), "memory", "in memory (not persistent)")
    if chosen in ("auto", "system"):
        system = find_system_keyring(timeout=probe_timeout)
        if system is not None:
            cls = type(system)
            return ChosenBackend(
                system, "system", f"system keyring ({cls.__module__}.{cls.__qualname__})"
            )
        if chosen == "system":
            raise SecretStoreError(
                "no usable system keyring (secrets backend 'system'); "
                "use 'file' or 'auto' for fangwire's encrypted file"
            )
        _log.info("no usable system keyring; secrets go to the encrypted file")
    key = load_master_key(home, environ)
    return ChosenBackend(
        EncryptedFileKeyring(home / SECRETS_FILE_NAME, key),
        "file",
        "encrypted file (AES-256-GCM)",
    )


def find_system_keyring(timeout: float = DEFAULT_PROBE_TIMEOUT) -> KeyringBackend | None:
    """Return the highest-priority usable system keyring, or None.

    Usable: one of keyring's discovered backends with priority >= 1 that is not keyring's
    fail, null or chainer backend, not from ``keyrings.alt`` (plaintext files) and not one of
    fangwire's own backends. Discovery probes D-Bus and plugins, which can block on a broken
    desktop session, so it runs in a daemon thread: after ``timeout`` seconds the probe is
    abandoned and None is returned.
    """
    found: list[KeyringBackend | None] = []

    def probe() -> None:
        try:
            found.append(_best_system_keyring())
        except Exception:
            _log.warning("probing the system keyrings failed", exc_info=True)

    thread = threading.Thread(target=probe, name="fangwire-keyring-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        _log.warning("probing the system keyrings took longer than %.1f s; not using one", timeout)
        return None
    return found[0] if found else None


def _best_system_keyring() -> KeyringBackend | None:
    best: KeyringBackend | None = None
    best_priority = 0.0
    for candidate in keyring.backend.get_all_keyring():
        if isinstance(candidate, _NOT_SYSTEM):
            continue
        if type(candidate).__module__.startswith("keyrings.alt"):
            continue
        try:
            # Read once: some backends re-probe their service on every access.
            priority = float(type(candidate).priority)
        except Exception:  # noqa: S112 - a backend that cannot rate itself is unusable
            continue
        if priority >= 1 and (best is None or priority > best_priority):
            best, best_priority = candidate, priority
    return best
