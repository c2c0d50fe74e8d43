"""The master key that encrypts fangwire's secrets file."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from fangwire.secrets.errors import SecretStoreError

__all__ = ["KEY_FILE_NAME", "MASTER_KEY_ENV", "load_master_key"]

MASTER_KEY_ENV = "FANGWIRE_MASTER_KEY"
KEY_FILE_NAME = "master.key"
_KEY_SIZE = 32

# A fixed salt is acceptable here: the derived key protects a single local file, and the
# passphrase is the operator's own secret, not one of many user passwords stored side by side.
# A per-installation salt would defeat precomputation across installations, but it would have
# to be stored next to the secrets file and would make the passphrase alone insufficient to
# recover the secrets, which is the point of configuring one.
_SCRYPT_SALT = b"fangwire-master-key-v1"
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
# scrypt needs 128 * n * r bytes (32 MiB here), exactly OpenSSL's default ceiling.
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def load_master_key(home: Path, environ: Mapping[str, str]) -> bytes:
    """Return the 32-byte master key.

    From ``FANGWIRE_MASTER_KEY`` when set: 64 hex digits, or urlsafe or standard base64 (padding
    optional) of exactly 32 bytes, are used as the key; any other value is a passphrase
    stretched with scrypt (n=2**15, r=8, p=1, salt ``b"fangwire-master-key-v1"``). An empty or
    blank value is an error.

    Otherwise from ``home / "master.key"`` (urlsafe base64 text), created with 32 random bytes
    and mode 0600 when missing. An existing key file readable or writable by group or others
    is refused.

    Raises `SecretStoreError` for an empty variable, an insecure or malformed key file.
    Meant for start-up only: messages may contain absolute paths.
    """
    configured = environ.get(MASTER_KEY_ENV)
    if configured is not None:
        return _key_from_env(configured)
    return _key_from_file(home / KEY_FILE_NAME)


def _key_from_env(value: str) -> bytes:
    if not value.strip():
        raise SecretStoreError(f"{MASTER_KEY_ENV} is set but empty")
    decoded = _decode_key(value.strip())
    if decoded is not None:
        return decoded
    return hashlib.scrypt(
        value.encode(),
        salt=_SCRYPT_SALT,
        n=_SCRYPT_N,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM,
        dklen=_KEY_SIZE,
    )


def _decode_key(text: str) -> bytes | None:
    """Decode hex or base64 text of exactly 32 bytes; None when it is neither."""
    if len(text) == 2 * _KEY_SIZE:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    padded = text + "=" * (-len(text) % 4)
    for altchars in (b"-_", None):
        try:
            decoded = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(decoded) == _KEY_SIZE:
            return decoded
    return None


def _key_from_file(path: Path) -> bytes:
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_bytes(_KEY_SIZE)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        # Another process created it between our read and our create: use theirs.
        return _read_key_file(path)
    try:
        os.write(fd, base64.urlsafe_b64encode(key) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def _read_key_file(path: Path) -> bytes:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if os.name != "nt" and mode & 0o077:
        raise SecretStoreError(
            f"refusing to use {path}: {KEY_FILE_NAME} is accessible by group or others "
            f"(mode {mode:04o}); run `chmod 600 {path}`"
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = base64.b64decode(text.encode("ascii", errors="replace"), b"-_", validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != _KEY_SIZE:
        raise SecretStoreError(
            f"{KEY_FILE_NAME} at {path} is malformed: expected urlsafe base64 of {_KEY_SIZE} bytes"
        )
    return key
