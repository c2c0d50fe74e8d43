"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes (Ed25519)."""

from __future__ import annotations

import base64
import contextlib
import os
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from fangwire.auditlog.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    key_hash,
    load_or_create_signing_key,
    parse_note,
    parse_verifier_key,
    utc_timestamp,
    verify_note,
)
from fangwire.auditlog.merkle import EMPTY_ROOT, leaf_hash

ROOT = leaf_hash(b"root")
TS = "2024-05-06T07:08:09.123456Z"
CP = Checkpoint("fangwire.example/audit", 42, ROOT, TS)


@pytest.fixture(scope="module")
def signer() -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.from_private_bytes(b"\x07" * 32), "fangwire-audit")


def test_body_format() -> None:
    root_b64 = base64.b64encode(ROOT).decode()
    assert CP.body() == f"fangwire.example/audit\n42\n{root_b64}\ntimestamp {TS}\n"
    assert Checkpoint.from_body(CP.body()) == CP


def test_round_trip(signer: CheckpointSigner) -> None:
    note = signer.sign(CP)
    assert note.startswith(CP.body() + "\n\u2014 fangwire-audit ")
    assert re.fullmatch(r"[^\n]+ [A-Za-z0-9+/]{91}=\n", note.split("\n\n")[1])
    assert verify_note(note, signer.verifier_key()) == CP
    cp, sigs = parse_note(note)
    assert cp == CP
    assert len(sigs) == 1
    assert sigs[0].key_name == "fangwire-audit"
    assert sigs[0].key_hash == signer.key_hash
    assert len(sigs[0].signature) == 64


def test_chain_tip_extension(signer: CheckpointSigner) -> None:
    tip = leaf_hash(b"tip")
    cp = Checkpoint("o", 3, ROOT, TS, chain_tip=tip)
    assert cp.body().endswith(f"timestamp {TS}\nchain-tip {base64.b64encode(tip).decode()}\n")
    note = signer.sign(cp)
    assert verify_note(note, signer.verifier_key()) == cp
    other_tip = base64.b64encode(leaf_hash(b"other")).decode()
    with pytest.raises(CheckpointError, match="bad signature"):
        verify_note(_replace_line(note, 4, f"chain-tip {other_tip}"), signer.verifier_key())
    with pytest.raises(CheckpointError, match="unknown extension"):
        verify_note(_replace_line(note, 4, "other 1"), signer.verifier_key())
    with pytest.raises(CheckpointError, match="chain tip"):
        Checkpoint("o", 3, ROOT, TS, chain_tip=b"short")


def test_empty_tree_checkpoint(signer: CheckpointSigner) -> None:
    cp = Checkpoint("o", 0, EMPTY_ROOT, utc_timestamp())
    assert verify_note(signer.sign(cp), signer.verifier_key()) == cp


def test_verifier_key_format(signer: CheckpointSigner) -> None:
    vkey = signer.verifier_key()
    name, hash_hex, key_b64 = vkey.split("+", 2)
    assert name == "fangwire-audit"
    assert re.fullmatch(r"[0-9a-f]{8}", hash_hex)
    raw = base64.b64decode(key_b64)
    assert raw == b"\x01" + signer.public_key_bytes
    assert bytes.fromhex(hash_hex) == key_hash(name, signer.public_key_bytes)
    parsed_name, parsed_hash, public = parse_verifier_key(vkey)
    assert (parsed_name, parsed_hash) == (name, signer.key_hash)
    assert public.public_bytes_raw() == signer.public_key_bytes


def test_go_note_interop_vector() -> None:
    """The example from golang.org/x/mod/sumdb/note's documentation."""
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    text = (
        "If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n"
    )
    sig = base64.b64decode(
        "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
    )
    name, khash, public = parse_verifier_key(vkey)
    assert name == "PeterNeumann"
    assert sig[:4] == khash
    public.verify(sig[4:], text.encode())
    # Not a checkpoint, so verify_note rejects it as malformed (not with another exception).
    note = text + "\n\u2014 PeterNeumann " + base64.b64encode(sig).decode() + "\n"
    with pytest.raises(CheckpointError, match="malformed checkpoint"):
        verify_note(note, vkey)


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "a+b",
        "a+b+c+d",
        "a+00000000+AQ==+",
        "name+0000000+AQ==",
        "name+zzzzzzzz+AQ==",
        "+00000000+AQ==",
        "na me+00000000+AQ==",
    ],
)
def test_bad_verifier_keys(vkey: str) -> None:
    with pytest.raises(CheckpointError, match="malformed verifier key"):
        parse_verifier_key(vkey)


def test_verifier_key_hash_mismatch(signer: CheckpointSigner) -> None:
    name, _, key = signer.verifier_key().split("+", 2)
    with pytest.raises(CheckpointError, match="key hash does not match"):
        parse_verifier_key(f"{name}+00000000+{key}")
    other = base64.b64encode(b"\x02" + signer.public_key_bytes).decode()
    with pytest.raises(CheckpointError, match="not an Ed25519 key"):
        parse_verifier_key(f"{name}+{signer.key_hash.hex()}+{other}")


def _replace_line(note: str, index: int, new: str) -> str:
    lines = note.split("\n")
    lines[index] = new
    return "\n".join(lines)


def test_tampering_detected(signer: CheckpointSigner) -> None:
    note = signer.sign(CP)
    vkey = signer.verifier_key()
    other_root = base64.b64encode(leaf_hash(b"other")).decode()
    sig_line = note.split("\n")[5]
    sig_b64 = sig_line.split(" ")[2]
    raw = bytearray(base64.b64decode(sig_b64))
    raw[10] ^= 1
    bad_sig = base64.b64encode(bytes(raw)).decode()
    cases = {
        "origin": (_replace_line(note, 0, "evil.example/audit"), "bad signature"),
        "size": (_replace_line(note, 1, "43"), "bad signature"),
        "root": (_replace_line(note, 2, other_root), "bad signature"),
        "timestamp": (_replace_line(note, 3, "timestamp 2030-01-01T00:00:00Z"), "bad signature"),
        "signature": (note.replace(sig_b64, bad_sig), "bad signature"),
        "key name": (
            note.replace("\u2014 fangwire-audit ", "\u2014 fangwire-other "),
            "unknown key",
        ),
        "leading zero": (_replace_line(note, 1, "042"), "malformed"),
        "no signature": (CP.body() + "\n", "malformed"),
        "no blank line": (note.replace("\n\n", "\n"), "malformed"),
        "ascii dash": (note.replace("\u2014", "-"), "malformed"),
        "truncated": (note[:-1], "malformed"),
        "extra body line": (note.replace("\n\n", "\nchain-tip AA==\nx\n\n"), "malformed"),
        "unknown extension": (note.replace("\n\n", "\nextra\n\n"), "malformed"),
        "short signature": (note.replace(sig_b64, bad_sig[:8]), "malformed|bad signature"),
    }
    for name, (text, reason) in cases.items():
        assert text != note, name
        with pytest.raises(CheckpointError, match=reason):
            verify_note(text, vkey)


def test_other_key_rejected(signer: CheckpointSigner) -> None:
    other = CheckpointSigner(Ed25519PrivateKey.generate(), "fangwire-audit")
    note = other.sign(CP)
    with pytest.raises(CheckpointError, match="unknown key"):
        verify_note(note, signer.verifier_key())
    # Same name and forged key hash: the signature itself must fail.
    sig_b64 = note.split("\n")[5].split(" ")[2]
    raw = base64.b64decode(sig_b64)
    forged = note.replace(sig_b64, base64.b64encode(signer.key_hash + raw[4:]).decode())
    with pytest.raises(CheckpointError, match="bad signature"):
        verify_note(forged, signer.verifier_key())


def test_cosigned_note(signer: CheckpointSigner) -> None:
    other = CheckpointSigner(Ed25519PrivateKey.generate(), "witness")
    note = signer.sign(CP)
    cosig = other.sign(CP).split("\n\n")[1]
    both = note + cosig
    assert verify_note(both, signer.verifier_key()) == CP
    assert verify_note(both, other.verifier_key()) == CP
    assert [s.key_name for s in parse_note(both)[1]] == ["fangwire-audit", "witness"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"origin": ""}, "origin"),
        ({"origin": "a\nb"}, "origin"),
        ({"origin": " padded"}, "origin"),
        ({"size": -1}, "size"),
        ({"size": True}, "size"),
        ({"root": b"short"}, "root"),
        ({"timestamp": "2024-05-06 07:08:09Z"}, "timestamp"),
        ({"timestamp": "2024-05-06T07:08:09+00:00"}, "timestamp"),
        ({"timestamp": "2024-13-06T07:08:09Z"}, "timestamp"),
    ],
)
def test_checkpoint_validation(kwargs: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {"origin": "o", "size": 1, "root": ROOT, "timestamp": TS}
    fields.update(kwargs)
    with pytest.raises(CheckpointError, match=match):
        Checkpoint(**fields)  # type: ignore[arg-type]


def test_bad_signer_name() -> None:
    for name in ["", "a b", "a+b"]:
        with pytest.raises(CheckpointError, match="key name"):
            CheckpointSigner(Ed25519PrivateKey.generate(), name)


def test_utc_timestamp_format() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", utc_timestamp())


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_garbage_never_raises_anything_else(text: str) -> None:
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    for func in (parse_note, lambda t: verify_note(t, vkey), parse_verifier_key):
        with contextlib.suppress(CheckpointError):
            func(text)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_mutated_notes_never_verify(signer: CheckpointSigner, data: st.DataObject) -> None:
    note = signer.sign(CP)
    pos = data.draw(st.integers(0, len(note) - 1))
    char = data.draw(st.characters(codec="utf-8"))
    mutated = note[:pos] + char + note[pos + 1 :]
    if mutated == note:
        return
    try:
        cp = verify_note(mutated, signer.verifier_key())
    except CheckpointError:
        return
    # Only non-semantic changes could survive, and there are none in this format.
    pytest.fail(f"mutated note verified: {cp!r}")


def test_surrogates_rejected(signer: CheckpointSigner) -> None:
    note = signer.sign(CP).replace("fangwire.example", "fangwire\ud800")
    with pytest.raises(CheckpointError, match="malformed"):
        verify_note(note, signer.verifier_key())
    with pytest.raises(CheckpointError, match="origin"):
        Checkpoint("o\ud800", 1, ROOT, TS)
    with pytest.raises(CheckpointError, match="key name"):
        CheckpointSigner(Ed25519PrivateKey.generate(), "k\ud800")


def test_non_string_inputs() -> None:
    for bad in (None, b"bytes", 42):
        with pytest.raises(CheckpointError):
            parse_note(bad)  # type: ignore[arg-type]
        with pytest.raises(CheckpointError):
            parse_verifier_key(bad)  # type: ignore[arg-type]


# --- signing key file ---


def test_signing_key_created_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.key"
    key = load_or_create_signing_key(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert len(base64.b64decode(path.read_text().strip())) == 32
    again = load_or_create_signing_key(path)
    assert again.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602])
def test_signing_key_insecure_mode_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "checkpoint.key"
    load_or_create_signing_key(path)
    path.chmod(mode)
    with pytest.raises(CheckpointError, match="insecure mode"):
        load_or_create_signing_key(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"not base64!!\n", base64.b64encode(b"\x01" * 31) + b"\n", b"\xff\xfe", b"A" * 5000],
)
def test_signing_key_malformed_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "checkpoint.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(CheckpointError, match="malformed"):
        load_or_create_signing_key(path)


def test_signing_key_symlink_and_directory_refused(tmp_path: Path) -> None:
    target = tmp_path / "real.key"
    load_or_create_signing_key(target)
    link = tmp_path / "link.key"
    link.symlink_to(target)
    with pytest.raises(CheckpointError, match="symlink"):
        load_or_create_signing_key(link)
    directory = tmp_path / "dir.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(CheckpointError, match="regular file"):
        load_or_create_signing_key(directory)
