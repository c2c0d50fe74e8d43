"""Tests for fangwire.security.zeroize: in-place wiping, masking and the honest scope."""

from __future__ import annotations

import copy
import gc
import pickle

import pytest

from fangwire.security import zeroize
from fangwire.security.zeroize import SCOPE, SecretBuffer, wipe_bytearray

SECRET = b"sk-live-0123456789abcdef"


def test_wipe_zeroes_the_underlying_memory() -> None:
    buf = SecretBuffer(SECRET)
    view = buf.view()
    assert bytes(view) == SECRET
    buf.wipe()
    assert buf.wiped
    assert bytes(view) == b"\x00" * len(SECRET)  # same memory, now zeros
    assert len(view) == len(SECRET)


def test_str_input_is_utf8_encoded_and_copied() -> None:
    source = bytearray(b"abc")
    buf = SecretBuffer(source)
    source[0] = ord("z")
    assert buf.reveal_bytes() == b"abc"  # a copy, not an alias
    assert SecretBuffer("pässword").reveal_bytes() == "pässword".encode()
    assert SecretBuffer(memoryview(b"mv")).reveal_bytes() == b"mv"


def test_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        SecretBuffer(1234)  # type: ignore[arg-type]


def test_context_manager_wipes_on_exit() -> None:
    with SecretBuffer(SECRET) as buf:
        view = buf.view()
        assert bytes(view) == SECRET
    assert buf.wiped
    assert bytes(view) == bytes(len(SECRET))


def test_context_manager_wipes_on_exception() -> None:
    buf = SecretBuffer(SECRET)
    view = buf.view()

    def use() -> None:
        with buf:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        use()
    assert buf.wiped
    assert bytes(view) == bytes(len(SECRET))


def test_del_wipes() -> None:
    buf = SecretBuffer(SECRET)
    view = buf.view()
    del buf
    gc.collect()
    assert bytes(view) == bytes(len(SECRET))


def test_wipe_is_idempotent_and_blocks_access() -> None:
    buf = SecretBuffer(SECRET)
    buf.wipe()
    buf.wipe()
    with pytest.raises(ValueError, match="wiped"):
        buf.view()
    with pytest.raises(ValueError, match="wiped"):
        buf.reveal_bytes()


def test_no_accidental_leaks() -> None:
    buf = SecretBuffer(SECRET)
    for text in (repr(buf), str(buf), f"{buf}", "%s" % buf):  # noqa: UP031
        assert "sk-live" not in text
        assert "masked" in text
    with pytest.raises(TypeError):
        bytes(buf)
    with pytest.raises(TypeError):
        pickle.dumps(buf)
    with pytest.raises(TypeError):
        copy.copy(buf)
    with pytest.raises(TypeError):
        copy.deepcopy(buf)
    assert buf != SecretBuffer(SECRET)
    assert len(buf) == len(SECRET)
    buf.wipe()
    assert repr(buf) == "SecretBuffer(<wiped>)"


def test_reveal_bytes_is_explicit() -> None:
    assert SecretBuffer(SECRET).reveal_bytes() == SECRET


def test_wipe_bytearray_in_place() -> None:
    data = bytearray(b"hunter2")
    view = memoryview(data)
    wipe_bytearray(data)
    assert data == bytearray(7)
    assert bytes(view) == bytes(7)
    empty = bytearray()
    wipe_bytearray(empty)
    assert empty == bytearray()


def test_state_counts_and_scope() -> None:
    status, before = zeroize.state()
    assert status == "active"
    assert before["scope"] == SCOPE
    assert "cannot be wiped" in SCOPE
    with SecretBuffer(b"x"):
        pass
    SecretBuffer(b"y").wipe()
    _, after = zeroize.state()
    assert after["created"] == before["created"] + 2  # type: ignore[operator]
    assert after["wiped"] == before["wiped"] + 2  # type: ignore[operator]
