"""Signed checkpoints for the audit log: C2SP ``tlog-checkpoint`` in a C2SP ``signed-note``.

Body (https://c2sp.org/tlog-checkpoint)::

    <origin>\\n
    <size, decimal>\\n
    <base64(root hash)>\\n
    timestamp <RFC 3339 UTC>\\n
    chain-tip <base64(32-byte hash)>\\n      (only when ``chain_tip`` is set)

The lines after the root are checkpoint *extension lines* (allowed by the spec after the root
line).  fangwire always writes the ``timestamp`` extension and requires it when parsing; the
optional ``chain-tip`` extension (the audit log's hash-chain tip at ``size``) follows it.  No
other extension lines are accepted.

Signed note (https://c2sp.org/signed-note): the body, an empty line, then one or more
signature lines ``— <key name> <base64(key hash || signature)>`` (U+2014 EM DASH), where the
key hash is ``SHA-256(key name || 0x0A || 0x01 || Ed25519 public key)[:4]`` and the Ed25519
signature covers the body bytes.  Verifier keys use the ``<name>+<hex key hash>+<base64(0x01
|| public key)>`` vkey format.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
import re
import stat
from pathlib import Path
from typing import NamedTuple

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from fangwire.auditlog.merkle import HASH_SIZE
from fangwire.timeutil import rfc3339

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointSigner",
    "NoteSignature",
    "key_hash",
    "load_or_create_signing_key",
    "parse_note",
    "parse_verifier_key",
    "utc_timestamp",
    "verify_note",
]

SIG_TYPE_ED25519 = 0x01
_EM_DASH = "\u2014"
_SIG_PREFIX = _EM_DASH + " "
_MAX_NOTE_CHARS = 1 << 20
_MAX_SIGNATURES = 100
_ED25519_SIG_SIZE = 64
_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


class CheckpointError(Exception):
    """A checkpoint, signed note, verifier key or signing key file is malformed or invalid."""


def utc_timestamp(now: dt.datetime | None = None) -> str:
    """RFC 3339 UTC timestamp with microseconds, e.g. ``2024-01-02T03:04:05.678901Z``."""
    return rfc3339(now)


def _utf8_ok(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def _valid_timestamp(value: str) -> bool:
    if not _TIMESTAMP_RE.fullmatch(value):
        return False
    try:
        dt.datetime.fromisoformat(value[:19])
    except ValueError:
        return False
    return True


def _valid_origin(value: str) -> bool:
    return (
        bool(value)
        and value == value.strip()
        and "\n" not in value
        and not _CONTROL_RE.search(value)
        and _utf8_ok(value)
    )


def _check_origin(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _valid_origin(value):
        raise CheckpointError(f"invalid checkpoint origin {value!r}")


def _check_size(_: object, __: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
        raise CheckpointError(f"invalid checkpoint size {value!r}")


def _check_root(_: object, __: attrs.Attribute[bytes], value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise CheckpointError("checkpoint root must be a 32-byte hash")


def _check_timestamp(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _valid_timestamp(value):
        raise CheckpointError(f"invalid checkpoint timestamp {value!r} (RFC 3339 UTC, 'Z')")


def _check_tip(_: object, __: attrs.Attribute[bytes | None], value: bytes | None) -> None:
    if value is not None and (not isinstance(value, bytes) or len(value) != HASH_SIZE):
        raise CheckpointError("checkpoint chain tip must be a 32-byte hash")


@attrs.frozen
class Checkpoint:
    """A tree head: ``size`` leaves with Merkle root ``root`` for log ``origin``."""

    origin: str = attrs.field(validator=_check_origin)
    size: int = attrs.field(validator=_check_size)
    root: bytes = attrs.field(validator=_check_root)
    timestamp: str = attrs.field(validator=_check_timestamp)
    chain_tip: bytes | None = attrs.field(default=None, kw_only=True, validator=_check_tip)

    def body(self) -> str:
        """The signed note text (C2SP checkpoint body plus the extension lines)."""
        root = base64.b64encode(self.root).decode("ascii")
        body = f"{self.origin}\n{self.size}\n{root}\ntimestamp {self.timestamp}\n"
        if self.chain_tip is not None:
            body += f"chain-tip {base64.b64encode(self.chain_tip).decode('ascii')}\n"
        return body

    @classmethod
    def from_body(cls, text: str) -> Checkpoint:
        """Parse :meth:`body` output; raises :class:`CheckpointError`."""
        if not isinstance(text, str) or not text.endswith("\n"):
            raise CheckpointError("malformed checkpoint: body must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) not in (4, 5):
            raise CheckpointError(f"malformed checkpoint: expected 4 or 5 lines, got {len(lines)}")
        origin, size_text, root_text, ext = lines[:4]
        if not _SIZE_RE.fullmatch(size_text):
            raise CheckpointError("malformed checkpoint: bad tree size")
        root = _b64decode(root_text, "root hash")
        if not ext.startswith("timestamp "):
            raise CheckpointError("malformed checkpoint: missing timestamp extension line")
        tip: bytes | None = None
        if len(lines) == 5:
            if not lines[4].startswith("chain-tip "):
                raise CheckpointError("malformed checkpoint: unknown extension line")
            tip = _b64decode(lines[4].removeprefix("chain-tip "), "chain tip")
        return cls(origin, int(size_text), root, ext.removeprefix("timestamp "), chain_tip=tip)


class NoteSignature(NamedTuple):
    key_name: str
    key_hash: bytes  # 4 bytes
    signature: bytes


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CheckpointError(f"malformed {what}: not base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise CheckpointError(f"malformed {what}: non-canonical base64")
    return raw


def _valid_key_name(name: str) -> bool:
    return (
        isinstance(name, str)
        and bool(name)
        and "+" not in name
        and not any(c.isspace() for c in name)
        and not _CONTROL_RE.search(name)
        and _utf8_ok(name)
    )


def key_hash(name: str, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || 0x01 || public_key)[:4]`` (Ed25519 signed-note key ID)."""
    data = name.encode("utf-8") + b"\n" + bytes([SIG_TYPE_ED25519]) + public_key
    return hashlib.sha256(data).digest()[:4]


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class CheckpointSigner:
    """Signs checkpoints as C2SP signed notes with an Ed25519 key under ``key_name``."""

    def __init__(self, private_key: Ed25519PrivateKey, key_name: str) -> None:
        if not _valid_key_name(key_name):
            raise CheckpointError(f"invalid key name {key_name!r}")
        self._key = private_key
        self.key_name = key_name
        self.public_key_bytes = _public_bytes(private_key.public_key())
        self.key_hash = key_hash(key_name, self.public_key_bytes)

    def sign(self, cp: Checkpoint) -> str:
        """The full signed note: body, blank line, one signature line."""
        body = cp.body()
        signature = self._key.sign(body.encode("utf-8"))
        sig = base64.b64encode(self.key_hash + signature).decode("ascii")
        return f"{body}\n{_SIG_PREFIX}{self.key_name} {sig}\n"

    def verifier_key(self) -> str:
        """``<name>+<hex key hash>+<base64(0x01 || public key)>``."""
        key = base64.b64encode(bytes([SIG_TYPE_ED25519]) + self.public_key_bytes).decode("ascii")
        return f"{self.key_name}+{self.key_hash.hex()}+{key}"


def parse_verifier_key(vkey: str) -> tuple[str, bytes, Ed25519PublicKey]:
    """Parse a vkey into ``(name, key hash, public key)``; raises :class:`CheckpointError`."""
    if not isinstance(vkey, str):
        raise CheckpointError("malformed verifier key")
    parts = vkey.split("+", 2)  # the base64 key may itself contain "+"
    if len(parts) != 3:
        raise CheckpointError("malformed verifier key: expected name+hash+key")
    name, hash_hex, key_b64 = parts
    if not _valid_key_name(name):
        raise CheckpointError("malformed verifier key: bad key name")
    if not re.fullmatch(r"[0-9a-f]{8}", hash_hex):
        raise CheckpointError("malformed verifier key: bad key hash")
    raw = _b64decode(key_b64, "verifier key")
    if len(raw) != 33 or raw[0] != SIG_TYPE_ED25519:
        raise CheckpointError("malformed verifier key: not an Ed25519 key")
    if key_hash(name, raw[1:]) != bytes.fromhex(hash_hex):
        raise CheckpointError("malformed verifier key: key hash does not match key")
    try:
        public = Ed25519PublicKey.from_public_bytes(raw[1:])
    except ValueError:
        raise CheckpointError("malformed verifier key: invalid public key") from None
    return name, bytes.fromhex(hash_hex), public


def _split_note(text: str) -> tuple[str, list[NoteSignature]]:
    if not isinstance(text, str):
        raise CheckpointError("malformed note: not text")
    if len(text) > _MAX_NOTE_CHARS:
        raise CheckpointError("malformed note: too large")
    if _CONTROL_RE.search(text) or not _utf8_ok(text):
        raise CheckpointError("malformed note: control characters or invalid text")
    split = text.rfind("\n\n")
    if split < 0:
        raise CheckpointError("malformed note: no signature block")
    body, sig_block = text[: split + 1], text[split + 2 :]
    if not sig_block.endswith("\n"):
        raise CheckpointError("malformed note: signature block must end with a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise CheckpointError("malformed note: too many signatures")
    signatures: list[NoteSignature] = []
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError("malformed note: bad signature line")
        fields = line[len(_SIG_PREFIX) :].split(" ")
        if len(fields) != 2 or not _valid_key_name(fields[0]):
            raise CheckpointError("malformed note: bad signature line")
        raw = _b64decode(fields[1], "signature")
        if len(raw) < 5:
            raise CheckpointError("malformed note: signature too short")
        signatures.append(NoteSignature(fields[0], raw[:4], raw[4:]))
    return body, signatures


def parse_note(text: str) -> tuple[Checkpoint, list[NoteSignature]]:
    """Parse (without verifying) a signed checkpoint note; raises :class:`CheckpointError`."""
    body, signatures = _split_note(text)
    return Checkpoint.from_body(body), signatures


def verify_note(text: str, verifier_key: str) -> Checkpoint:
    """Verify ``text`` against ``verifier_key`` and return its checkpoint.

    Signatures by other keys are ignored; at least one by this key must be present and every
    signature by this key must verify.  Raises :class:`CheckpointError` otherwise.
    """
    name, khash, public = parse_verifier_key(verifier_key)
    body, signatures = _split_note(text)
    checkpoint = Checkpoint.from_body(body)
    mine = [s for s in signatures if s.key_name == name and s.key_hash == khash]
    if not mine:
        raise CheckpointError(f"unknown key: note has no signature by {name!r}")
    data = body.encode("utf-8")
    for sig in mine:
        if len(sig.signature) != _ED25519_SIG_SIZE:
            raise CheckpointError("bad signature: wrong length")
        try:
            public.verify(sig.signature, data)
        except InvalidSignature:
            raise CheckpointError("bad signature") from None
    return checkpoint


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the Ed25519 seed (base64, one line) at ``path``, creating it (mode 0600) if absent.

    Refuses (:class:`CheckpointError`) a file readable or writable by group/other, a
    non-regular file, or malformed content.  Other ``OSError`` propagate.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return _load_signing_key(path)
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, base64.b64encode(seed) + b"\n")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return key


def _load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        if path.is_symlink():
            raise CheckpointError(f"signing key {path} is a symlink") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"signing key {path} is not a regular file")
        if st.st_mode & 0o077:
            raise CheckpointError(
                f"signing key {path} has insecure mode {stat.S_IMODE(st.st_mode):04o} "
                "(must not be accessible by group/other; use 0600)"
            )
        content = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        text = content.decode("ascii").strip()
    except UnicodeDecodeError:
        raise CheckpointError(f"signing key {path} is malformed") from None
    try:
        seed = _b64decode(text, "signing key")
    except CheckpointError:
        raise CheckpointError(f"signing key {path} is malformed") from None
    if len(seed) != 32:
        raise CheckpointError(f"signing key {path} is malformed: seed must be 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(seed)
