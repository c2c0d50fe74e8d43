"""Tests for fangwire.security.manifest: Ed25519 detached signatures over canonical JSON."""

from __future__ import annotations

import base64
import hashlib
import json
from types import MappingProxyType

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from fangwire.security.manifest import (
    NO_SIGNERS,
    ManifestError,
    canonical_json,
    key_id,
    sign_manifest,
    state,
    verify_manifest,
)

MANIFEST: dict[str, object] = {
    "name": "weather-agent",
    "version": "1.2.0",
    "capabilities": {"network": ["api.weather.example"], "tools": ["http_get"]},
    "description": "Wetter für Zürich",
    "limits": {"timeout": 30, "ratio": 0.5, "enabled": True, "parent": None},
}


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def trusted(key: Ed25519PrivateKey) -> dict[str, bytes]:
    return {"release-key": raw_public(key)}


def test_round_trip_returns_key_id(key: Ed25519PrivateKey, trusted: dict[str, bytes]) -> None:
    signature = sign_manifest(MANIFEST, key)
    assert len(base64.b64decode(signature)) == 64
    kid = verify_manifest(MANIFEST, signature, trusted)
    assert kid == hashlib.sha256(raw_public(key)).hexdigest()[:8]
    assert kid == key_id(raw_public(key)) == key_id(key.public_key())


def test_canonical_form() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()


def test_reordered_keys_still_verify(key: Ed25519PrivateKey, trusted: dict[str, bytes]) -> None:
    signature = sign_manifest(MANIFEST, key)
    reordered = json.loads(json.dumps(MANIFEST, indent=4))
    reordered = dict(reversed(list(reordered.items())))
    assert verify_manifest(reordered, signature, trusted)
    assert verify_manifest(MappingProxyType(MANIFEST), signature, trusted)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.__setitem__("version", "1.2.1"),
        lambda m: m["capabilities"]["network"].append("evil.example"),
        lambda m: m.__setitem__("extra", True),
        lambda m: m.pop("description"),
        lambda m: m["limits"].__setitem__("timeout", 30.0),
    ],
)
def test_tampered_manifest_fails(
    key: Ed25519PrivateKey, trusted: dict[str, bytes], tamper: object
) -> None:
    signature = sign_manifest(MANIFEST, key)
    changed = json.loads(json.dumps(MANIFEST))
    tamper(changed)  # type: ignore[operator]
    with pytest.raises(ManifestError, match="does not verify"):
        verify_manifest(changed, signature, trusted)


def test_unknown_signer(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    signature = sign_manifest(MANIFEST, other)
    with pytest.raises(ManifestError, match="any trusted manifest signer"):
        verify_manifest(MANIFEST, signature, {"release": raw_public(key)})


def test_second_trusted_key_verifies(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    keys = {"a": raw_public(key), "b": raw_public(other)}
    assert verify_manifest(MANIFEST, sign_manifest(MANIFEST, other), keys) == key_id(
        raw_public(other)
    )


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        ("not base64!!", "not valid base64"),
        ("", "64 bytes"),
        (base64.b64encode(b"x" * 63).decode(), "64 bytes"),
        (base64.b64encode(b"x" * 65).decode(), "64 bytes"),
        ("AAA", "not valid base64"),
        ("é", "not valid base64"),
    ],
)
def test_garbage_signature(trusted: dict[str, bytes], signature: str, reason: str) -> None:
    with pytest.raises(ManifestError, match=reason):
        verify_manifest(MANIFEST, signature, trusted)


def test_no_trusted_keys(key: Ed25519PrivateKey) -> None:
    signature = sign_manifest(MANIFEST, key)
    with pytest.raises(ManifestError, match=NO_SIGNERS):
        verify_manifest(MANIFEST, signature, {})
    assert NO_SIGNERS == "no trusted manifest signers configured"
    with pytest.raises(ManifestError, match="no valid Ed25519"):
        verify_manifest(MANIFEST, signature, {"bad": b"short"})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_rejected(key: Ed25519PrivateKey, value: float) -> None:
    with pytest.raises(ManifestError, match="NaN or Infinity"):
        sign_manifest({"x": [value]}, key)
    with pytest.raises(ManifestError, match="NaN or Infinity"):
        verify_manifest({"x": value}, "A" * 86 + "==", {"k": raw_public(key)})


@pytest.mark.parametrize(
    "manifest",
    [
        {1: "int key"},
        {"x": {"nested": {2: "y"}}},
        {"x": b"bytes"},
        {"x": {1, 2}},
        {"x": object()},
        {"x": "\ud800"},
    ],
)
def test_non_json_rejected(key: Ed25519PrivateKey, manifest: dict[object, object]) -> None:
    with pytest.raises(ManifestError):
        sign_manifest(manifest, key)  # type: ignore[arg-type]


def test_non_mapping_and_too_deep_rejected(key: Ed25519PrivateKey) -> None:
    with pytest.raises(ManifestError, match="mapping"):
        canonical_json([1, 2])  # type: ignore[arg-type]
    deep: dict[str, object] = {}
    cur = deep
    for _ in range(100):
        nxt: dict[str, object] = {}
        cur["a"] = nxt
        cur = nxt
    with pytest.raises(ManifestError, match="deeper"):
        sign_manifest(deep, key)


def test_state(trusted: dict[str, bytes]) -> None:
    assert state({}) == ("not_configured", {"reason": NO_SIGNERS})
    assert state(None) == ("not_configured", {"reason": NO_SIGNERS})
    status, detail = state({"bad": b"\x00" * 3})
    assert status == "not_configured"
    assert "no valid" in str(detail["reason"])
    status, detail = state({**trusted, "bad": b"xx"})
    assert status == "active"
    assert detail["trusted_signers"] == 1


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(manifest=st.dictionaries(st.text(max_size=5), json_values, max_size=5))
def test_round_trip_property(manifest: dict[str, object]) -> None:
    key = Ed25519PrivateKey.generate()
    signature = sign_manifest(manifest, key)
    assert verify_manifest(manifest, signature, {"k": raw_public(key)}) == key_id(raw_public(key))
