"""Nostr primitives: keys (hex or NIP-19 bech32), NIP-01 events and NIP-04 encryption.

- Keys: a secret key is 32 bytes, given as 64 hex digits or as ``nsec1...`` (NIP-19, bech32);
  a public key is the 32-byte x coordinate (BIP-340 "x-only"), hex or ``npub1...``.
- Events (NIP-01): ``id`` is the SHA-256 of the JSON array ``[0, pubkey, created_at, kind,
  tags, content]`` written without whitespace and with non-ASCII characters as they are;
  ``sig`` is a BIP-340 Schnorr signature of the id. :func:`verify_event` checks both.
- NIP-04 direct messages: the shared secret is the x coordinate of ``our_secret * their_key``
  (their x-only key taken with an even y), used as an AES-256-CBC key with PKCS#7 padding;
  ``content = base64(ciphertext) + "?iv=" + base64(iv)``.

Signing and ECDH use ``coincurve`` (libsecp256k1); AES uses ``cryptography``. Both are imported
lazily so the module loads without the ``nostr`` extra.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_HEX128 = re.compile(r"^[0-9a-f]{128}$")
_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


class NostrError(ValueError):
    """A key, event or encrypted message that is not well formed or does not verify."""


# -- NIP-19 bech32 ----------------------------------------------------------------------------


def _polymod(values: Sequence[int]) -> int:
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(_BECH32_GENERATOR):
            if (top >> i) & 1:
                check ^= generator
    return check


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: Sequence[int], from_bits: int, to_bits: int, *, pad: bool) -> bytes:
    acc = bits = 0
    out = bytearray()
    max_value = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & max_value)
    if pad and bits:
        out.append((acc << (to_bits - bits)) & max_value)
    elif not pad and (bits >= from_bits or (acc << (to_bits - bits)) & max_value):
        raise NostrError("invalid bech32 padding")
    return bytes(out)


def bech32_decode(text: str) -> tuple[str, bytes]:
    """Decode a bech32 string (BIP-173) into its human-readable part and its bytes."""
    if text.lower() != text and text.upper() != text:
        raise NostrError("bech32 string mixes upper and lower case")
    text = text.lower()
    hrp, sep, rest = text.rpartition("1")
    if not sep or not hrp or len(rest) < 6 or any(c not in _BECH32_CHARSET for c in rest):
        raise NostrError("not a bech32 string")
    values = [_BECH32_CHARSET.index(c) for c in rest]
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise NostrError("bech32 checksum mismatch")
    return hrp, _convert_bits(values[:-6], 5, 8, pad=False)


def bech32_encode(hrp: str, data: bytes) -> str:
    values = list(_convert_bits(data, 8, 5, pad=True))
    polymod = _polymod([*_hrp_expand(hrp), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[v] for v in values + checksum)


def _key_bytes(text: str, hrp: str) -> bytes:
    text = text.strip()
    if _HEX64.match(text):
        return bytes.fromhex(text)
    if text.lower().startswith(hrp + "1"):
        got, data = bech32_decode(text)
        if got != hrp or len(data) != 32:
            raise NostrError(f"not an {hrp} key")
        return data
    raise NostrError(f"expected 64 hex digits or an {hrp}1... key")


# -- keys -------------------------------------------------------------------------------------


class Keys:
    """A secret key and its x-only public key (hex). ``repr`` never shows the secret."""

    def __init__(self, secret: str | bytes) -> None:
        from coincurve import PrivateKey

        raw = secret if isinstance(secret, bytes) else _key_bytes(secret, "nsec")
        try:
            self._secret = PrivateKey(raw)
        except ValueError:
            raise NostrError("secret key out of range") from None
        self.public_key = self._secret.public_key_xonly.format().hex()

    def __repr__(self) -> str:
        return f"<Keys {self.public_key}>"

    @classmethod
    def generate(cls) -> Keys:
        while True:
            try:
                return cls(os.urandom(32))
            except NostrError:  # pragma: no cover - probability ~2^-128
                continue

    @property
    def npub(self) -> str:
        return bech32_encode("npub", bytes.fromhex(self.public_key))

    def sign(self, digest: bytes, aux: bytes | None = None) -> bytes:
        """A BIP-340 signature of the 32-byte ``digest`` (fresh auxiliary randomness)."""
        return self._secret.sign_schnorr(digest, os.urandom(32) if aux is None else aux)

    def shared_x(self, public_key: str) -> bytes:
        """The x coordinate of ``secret * P`` where P is ``public_key`` with an even y."""
        from coincurve import PublicKey

        try:
            point = PublicKey(b"\x02" + bytes.fromhex(public_key))
        except ValueError:
            raise NostrError("public key is not on the curve") from None
        return point.multiply(self._secret.secret).format(compressed=True)[1:]


def public_key_hex(text: str) -> str:
    """A public key given as hex or ``npub1...``, as lowercase hex."""
    return _key_bytes(text, "npub").hex()


def schnorr_verify(public_key: bytes, digest: bytes, signature: bytes) -> bool:
    from coincurve import PublicKeyXOnly

    try:
        return bool(PublicKeyXOnly(public_key).verify(signature, digest))
    except (ValueError, TypeError):
        return False


# -- NIP-01 events ----------------------------------------------------------------------------


def event_id(
    pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str
) -> str:
    serial = json.dumps(
        [0, pubkey, created_at, kind, tags, content], separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(serial.encode("utf-8")).hexdigest()


def sign_event(
    keys: Keys, *, kind: int, content: str, tags: Sequence[Sequence[str]], created_at: int
) -> dict[str, Any]:
    tag_list = [list(t) for t in tags]
    eid = event_id(keys.public_key, created_at, kind, tag_list, content)
    return {
        "id": eid,
        "pubkey": keys.public_key,
        "created_at": created_at,
        "kind": kind,
        "tags": tag_list,
        "content": content,
        "sig": keys.sign(bytes.fromhex(eid)).hex(),
    }


def verify_event(event: Mapping[str, Any]) -> None:
    """Raise :class:`NostrError` unless ``event`` is well formed, its ``id`` is the hash of
    its fields and ``sig`` is its author's signature of that id."""
    try:
        eid, pubkey, sig = event["id"], event["pubkey"], event["sig"]
        created_at, kind, tags, content = (
            event["created_at"],
            event["kind"],
            event["tags"],
            event["content"],
        )
    except (KeyError, TypeError):
        raise NostrError("event lacks a required field") from None
    if not (isinstance(eid, str) and _HEX64.match(eid) and eid == eid.lower()):
        raise NostrError("event id is not 64 lowercase hex digits")
    if not (isinstance(pubkey, str) and _HEX64.match(pubkey) and pubkey == pubkey.lower()):
        raise NostrError("event pubkey is not 64 lowercase hex digits")
    if not (isinstance(sig, str) and _HEX128.match(sig)):
        raise NostrError("event sig is not 128 lowercase hex digits")
    if isinstance(created_at, bool) or not isinstance(created_at, int):
        raise NostrError("event created_at is not an integer")
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise NostrError("event kind is not an integer")
    if not isinstance(content, str):
        raise NostrError("event content is not a string")
    if not isinstance(tags, list) or not all(
        isinstance(t, list) and all(isinstance(v, str) for v in t) for t in tags
    ):
        raise NostrError("event tags are not lists of strings")
    if event_id(pubkey, created_at, kind, tags, content) != eid:
        raise NostrError("event id does not match its content")
    if not schnorr_verify(bytes.fromhex(pubkey), bytes.fromhex(eid), bytes.fromhex(sig)):
        raise NostrError("event signature does not verify")


# -- NIP-04 -----------------------------------------------------------------------------------


def nip04_encrypt(keys: Keys, recipient: str, text: str, iv: bytes | None = None) -> str:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    iv = os.urandom(16) if iv is None else iv
    padder = padding.PKCS7(128).padder()
    plain = padder.update(text.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(keys.shared_x(recipient)), modes.CBC(iv)).encryptor()
    cipher = encryptor.update(plain) + encryptor.finalize()
    return f"{base64.b64encode(cipher).decode()}?iv={base64.b64encode(iv).decode()}"


def nip04_decrypt(keys: Keys, sender: str, content: str) -> str:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    body, sep, iv_text = content.partition("?iv=")
    try:
        if not sep:
            raise ValueError("no ?iv= part")
        cipher = base64.b64decode(body, validate=True)
        iv = base64.b64decode(iv_text, validate=True)
        if len(iv) != 16 or not cipher or len(cipher) % 16:
            raise ValueError("bad lengths")
        decryptor = Cipher(algorithms.AES(keys.shared_x(sender)), modes.CBC(iv)).decryptor()
        padded = decryptor.update(cipher) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise NostrError(f"not a NIP-04 message for this key: {exc}") from None
