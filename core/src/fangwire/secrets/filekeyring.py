"""`EncryptedFileKeyring`: fangwire's own keyring backend, one AES-256-GCM encrypted JSON file.

File format (version 1)::

    {"format": "fangwire-secrets", "version": 1,
     "entries": {"<quote(service)>/<quote(username)>":
                    {"service": ..., "username": ..., "nonce": <b64>, "ciphertext": <b64>}}}

``quote`` is percent-encoding with no safe characters, so neither half of an entry key contains
``/`` and the key is unambiguous even when usernames contain ``/``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from keyring.backend import KeyringBackend
from keyring.compat import properties
from keyring.errors import PasswordDeleteError

from fangwire.fsutil import atomic_write
from fangwire.secrets.errors import SecretStoreError

__all__ = ["EncryptedFileKeyring"]

FILE_FORMAT = "fangwire-secrets"
FILE_VERSION = 1
KEY_SIZE = 32
_NONCE_SIZE = 12


def _entry_key(service: str, username: str) -> str:
    return f"{quote(service, safe='')}/{quote(username, safe='')}"


def _aad(service: str, username: str) -> bytes:
    # Escaping ':' (and '%', the escape character) keeps the AAD injective: unescaped,
    # ("a:b", "c") and ("a", "b:c") would share an AAD and their ciphertexts could be swapped.
    # Names without ':' or '%' give exactly "fangwire-secret:v1:{service}:{username}".
    def escape(text: str) -> str:
        return text.replace("%", "%25").replace(":", "%3A")

    return f"fangwire-secret:v1:{escape(service)}:{escape(username)}".encode()


class _Entry:
    __slots__ = ("ciphertext", "nonce", "service", "username")

    def __init__(self, service: str, username: str, nonce: bytes, ciphertext: bytes) -> None:
        self.service = service
        self.username = username
        self.nonce = nonce
        self.ciphertext = ciphertext

    def to_json(self) -> dict[str, str]:
        return {
            "service": self.service,
            "username": self.username,
            "nonce": base64.b64encode(self.nonce).decode("ascii"),
            "ciphertext": base64.b64encode(self.ciphertext).decode("ascii"),
        }


class EncryptedFileKeyring(KeyringBackend):
    """Keyring backend storing each password encrypted with AES-256-GCM in one JSON file.

    Contract:

    * Each entry has its own random 12-byte nonce and is bound to its service and username
      through the AAD, so ciphertexts cannot be moved between entries.
    * Reads decrypt only the requested entry. A wrong key or a tampered entry raises
      `SecretStoreError` naming the entry; an unreadable file raises `SecretStoreError`
      saying it is corrupt. Messages name the file by its base name only.
    * Writes are atomic (0600 temp file in the same directory, fsync, ``os.replace``, fsync of
      the directory), so the file is always complete and always mode 0600.
    * Read-modify-write cycles are serialized within the process by a lock. Other processes
      writing the same file concurrently can lose updates.
    * The priority is below keyring's fail backend, so keyring never selects it by itself.
    """

    @properties.classproperty
    def priority(cls) -> float:
        """Below keyring's fail backend (0): never auto-selected; fangwire builds it itself."""
        return -10.0

    def __init__(self, path: Path, key: bytes) -> None:
        # The base class copies KEYRING_PROPERTY_* environment variables onto the instance;
        # it runs first so that those can never replace the attributes set below.
        super().__init__()  # type: ignore[no-untyped-call]  # keyring leaves it untyped
        if len(key) != KEY_SIZE:
            raise ValueError(f"the key must be {KEY_SIZE} bytes, not {len(key)}")
        self._path = Path(path)
        self._aead = AESGCM(key)
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The file the secrets live in."""
        return self._path

    def get_password(self, service: str, username: str) -> str | None:
        """Return the decrypted password, or None when there is no such entry."""
        with self._lock:
            entry = self._load().get(_entry_key(service, username))
        if entry is None:
            return None
        return self._decrypt(entry)

    def set_password(self, service: str, username: str, password: str) -> None:
        """Encrypt and store ``password``, replacing any previous one."""
        nonce = secrets.token_bytes(_NONCE_SIZE)
        ciphertext = self._aead.encrypt(nonce, password.encode(), _aad(service, username))
        with self._lock:
            entries = self._load()
            entries[_entry_key(service, username)] = _Entry(service, username, nonce, ciphertext)
            self._save(entries)

    def delete_password(self, service: str, username: str) -> None:
        """Remove the entry; raise `PasswordDeleteError` when there is none."""
        with self._lock:
            entries = self._load()
            if entries.pop(_entry_key(service, username), None) is None:
                raise PasswordDeleteError(f"no password stored for {service}/{username}")
            self._save(entries)

    def _decrypt(self, entry: _Entry) -> str:
        try:
            plaintext = self._aead.decrypt(
                entry.nonce, entry.ciphertext, _aad(entry.service, entry.username)
            )
        except InvalidTag:
            raise SecretStoreError(
                f"cannot decrypt secret {entry.service}/{entry.username} in {self._path.name}: "
                "wrong master key, or the entry was tampered with"
            ) from None
        try:
            return plaintext.decode()
        except UnicodeDecodeError:  # pragma: no cover - only reachable with our own key
            raise SecretStoreError(
                f"secret {entry.service}/{entry.username} in {self._path.name} is not UTF-8"
            ) from None

    def _corrupt(self, reason: str) -> SecretStoreError:
        return SecretStoreError(f"secrets file {self._path.name} is corrupt: {reason}")

    def _load(self) -> dict[str, _Entry]:
        """Read and validate the whole file; a missing file is an empty store."""
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise self._corrupt("not valid JSON") from None
        if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
            raise self._corrupt(f"not a {FILE_FORMAT} file")
        version = document.get("version")
        if type(version) is not int or version != FILE_VERSION:
            raise SecretStoreError(
                f"secrets file {self._path.name} has unsupported version {version!r} "
                f"(this fangwire reads version {FILE_VERSION})"
            )
        raw_entries = document.get("entries")
        if not isinstance(raw_entries, dict):
            raise self._corrupt("'entries' is not an object")
        return {key: self._parse_entry(key, value) for key, value in raw_entries.items()}

    def _parse_entry(self, key: str, value: Any) -> _Entry:
        fields = ("service", "username", "nonce", "ciphertext")
        if not isinstance(value, dict) or not all(isinstance(value.get(f), str) for f in fields):
            raise self._corrupt(f"entry {key!r} is malformed")
        service: str = value["service"]
        username: str = value["username"]
        if _entry_key(service, username) != key:
            raise self._corrupt(f"entry {key!r} does not match its service and username")
        try:
            nonce = base64.b64decode(value["nonce"], validate=True)
            ciphertext = base64.b64decode(value["ciphertext"], validate=True)
        except binascii.Error:
            raise self._corrupt(f"entry {key!r} is not valid base64") from None
        if len(nonce) != _NONCE_SIZE:
            raise self._corrupt(f"entry {key!r} has a bad nonce")
        return _Entry(service, username, nonce, ciphertext)

    def _save(self, entries: dict[str, _Entry]) -> None:
        document = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "entries": {key: entries[key].to_json() for key in sorted(entries)},
        }
        data = json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self._path, data, mode=0o600)
