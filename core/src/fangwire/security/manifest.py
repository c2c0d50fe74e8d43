"""Ed25519 detached signatures over agent/plugin manifests.

Canonical form (what is signed)::

    json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
               allow_nan=False).encode("utf-8")

so key order and whitespace do not matter. Before serialising, the manifest is checked to be
plain JSON data: str keys only (json would otherwise turn ``1`` into ``"1"`` and let two
different manifests sign identically), values of type dict/list/tuple/str/int/float/bool/None,
no NaN/Infinity, at most 64 levels deep. A manifest that fails this raises `ManifestError`.
The signature is detached (it is not a field of the manifest) and travels as standard base64 of
the 64 raw signature bytes.

Trusted keys are a mapping of operator labels to raw 32-byte Ed25519 public keys; the labels are
not used for verification. A key id is the first 8 hex characters of SHA-256 of the raw public
key (`key_id`); it identifies a signer in logs and errors and is not a security boundary.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "NO_SIGNERS",
    "ManifestError",
    "canonical_json",
    "key_id",
    "sign_manifest",
    "state",
    "verify_manifest",
]

NO_SIGNERS = "no trusted manifest signers configured"

_MAX_DEPTH = 64
_SIGNATURE_LEN = 64
_PUBLIC_KEY_LEN = 32


class ManifestError(ValueError):
    """A manifest could not be canonicalised, signed or verified; the message says why."""


def _plain(value: object, depth: int) -> object:
    """Validate ``value`` as JSON data and return it as plain dict/list/scalars."""
    if depth > _MAX_DEPTH:
        raise ManifestError(f"manifest nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestError("manifest contains NaN or Infinity, which JSON cannot represent")
        return value
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ManifestError(f"manifest keys must be strings, got {type(key).__name__}")
            out[key] = _plain(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, depth + 1) for item in value]
    raise ManifestError(f"manifest value of type {type(value).__name__} is not JSON data")


def canonical_json(manifest: Mapping[str, object]) -> bytes:
    """Return the canonical UTF-8 JSON bytes of ``manifest`` (see the module docstring)."""
    if not isinstance(manifest, Mapping):
        raise ManifestError("manifest must be a JSON object (mapping)")
    plain = _plain(manifest, 0)
    try:
        text = json.dumps(
            plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")
    except (TypeError, ValueError) as exc:  # e.g. lone surrogates (UnicodeEncodeError)
        raise ManifestError(f"manifest cannot be serialised: {type(exc).__name__}") from None


def _raw_public(public_key: bytes | Ed25519PublicKey) -> bytes:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return bytes(public_key)


def key_id(public_key: bytes | Ed25519PublicKey) -> str:
    """First 8 hex characters of SHA-256 over the raw 32-byte public key."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:8]


def sign_manifest(manifest: Mapping[str, object], private_key: Ed25519PrivateKey) -> str:
    """Sign the canonical JSON of ``manifest``; return the detached signature as base64."""
    signature = private_key.sign(canonical_json(manifest))
    return base64.b64encode(signature).decode("ascii")


def _load_keys(trusted_keys: Mapping[str, bytes]) -> list[Ed25519PublicKey]:
    keys: list[Ed25519PublicKey] = []
    for raw in trusted_keys.values():
        if not isinstance(raw, bytes | bytearray) or len(raw) != _PUBLIC_KEY_LEN:
            continue
        try:
            keys.append(Ed25519PublicKey.from_public_bytes(bytes(raw)))
        except ValueError:
            continue
    return keys


def verify_manifest(
    manifest: Mapping[str, object], signature_b64: str, trusted_keys: Mapping[str, bytes]
) -> str:
    """Verify ``signature_b64`` over ``manifest`` against ``trusted_keys``; return the key id.

    Raises `ManifestError` when no signers are configured, no configured key is a valid
    Ed25519 public key, the signature is not 64 bytes of strict base64, the manifest is not
    canonicalisable, or no trusted key verifies the signature.
    """
    if not trusted_keys:
        raise ManifestError(NO_SIGNERS)
    keys = _load_keys(trusted_keys)
    if not keys:
        raise ManifestError("no valid Ed25519 public keys among the trusted manifest signers")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ManifestError("signature is not valid base64") from None
    if len(signature) != _SIGNATURE_LEN:
        raise ManifestError(f"signature must be {_SIGNATURE_LEN} bytes, got {len(signature)}")
    payload = canonical_json(manifest)
    for key in keys:
        try:
            key.verify(signature, payload)
        except InvalidSignature:
            continue
        return key_id(key)
    raise ManifestError("signature does not verify with any trusted manifest signer")


def state(trusted_keys: Mapping[str, bytes] | None) -> tuple[str, dict[str, object]]:
    """``("active", {"trusted_signers": n})``, or ``("not_configured", {"reason": ...})``."""
    if not trusted_keys:
        return "not_configured", {"reason": NO_SIGNERS}
    n = len(_load_keys(trusted_keys))
    if n == 0:
        return "not_configured", {
            "reason": "no valid Ed25519 public keys among the trusted manifest signers"
        }
    return "active", {"trusted_signers": n, "algorithm": "Ed25519"}
