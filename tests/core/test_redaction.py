"""Tests for fangwire.redaction: the secret registry, structured redaction and the log filter."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import pytest

from fangwire.redaction import MASK, RedactingFilter, Redactor, is_sensitive_key

SECRET = "sk-live-0123456789abcdef"


def test_scrub_replaces_every_occurrence() -> None:
    redactor = Redactor()
    redactor.add(SECRET)
    text = f"token={SECRET}; again {SECRET}!"
    assert redactor.scrub(text) == "token=***; again ***!"


def test_values_shorter_than_four_characters_are_ignored() -> None:
    redactor = Redactor()
    redactor.add("abc")
    redactor.add("")
    assert len(redactor) == 0
    assert redactor.scrub("abc abc") == "abc abc"
    redactor.add("abcd")
    assert redactor.scrub("abcd abc") == "*** abc"


def test_discard_forgets_a_value() -> None:
    redactor = Redactor([SECRET, "other-secret"])
    redactor.discard(SECRET)
    redactor.discard("never-added")
    assert redactor.scrub(f"{SECRET} other-secret") == f"{SECRET} ***"
    redactor.discard("other-secret")
    assert redactor.scrub("other-secret") == "other-secret"


def test_longest_value_is_masked_first() -> None:
    redactor = Redactor()
    redactor.add("abcd")
    redactor.add("abcdefgh")
    # Were "abcd" replaced first, "efgh" would be left visible.
    assert redactor.scrub("xxabcdefghxx abcd") == "xx***xx ***"


def test_values_are_matched_literally() -> None:
    redactor = Redactor(["a.b*c+(d"])
    assert redactor.scrub("a.b*c+(d axbbbcd") == "*** axbbbcd"


def test_scrub_without_secrets_returns_the_same_object() -> None:
    text = "nothing to see " * 10
    assert Redactor().scrub(text) is text
    emptied = Redactor([SECRET])
    emptied.discard(SECRET)
    assert emptied.scrub(text) is text


def test_repr_does_not_show_values() -> None:
    redactor = Redactor([SECRET])
    assert SECRET not in repr(redactor)
    assert "1" in repr(redactor)


def test_concurrent_adds_are_all_registered() -> None:
    redactor = Redactor()
    values = [f"secret-value-{i:04d}" for i in range(400)]

    def add_slice(start: int) -> None:
        for value in values[start::8]:
            redactor.add(value)

    threads = [threading.Thread(target=add_slice, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(redactor) == len(values)
    assert redactor.scrub(" ".join(values)) == " ".join([MASK] * len(values))


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "PASSWORD",
        "client_secret",
        "accessToken",
        "refresh_token",
        "db_passwd",
        "api_key",
        "X-Api-Key",
        "apikey",
        "Authorization",
        "credentials",
        "private_key",
        "private-key",
        "Set-Cookie",
    ],
)
def test_sensitive_keys(name: str) -> None:
    assert is_sensitive_key(name)


@pytest.mark.parametrize("name", ["name", "username", "url", "channel", "key", "api", "private"])
def test_ordinary_keys(name: str) -> None:
    assert not is_sensitive_key(name)


def test_scrub_obj_masks_sensitive_keys_and_scrubs_strings() -> None:
    redactor = Redactor([SECRET])
    data = {
        "channel": "slack",
        "bot_token": "xoxb-not-registered",
        "Authorization": "Bearer abc",
        "headers": [{"X-Api-Key": "k-123456"}, ("plain", f"leak {SECRET}")],
        "nested": {"client_secret": {"value": "inner"}, "note": SECRET},
        "count": 3,
    }
    assert redactor.scrub_obj(data) == {
        "channel": "slack",
        "bot_token": MASK,
        "Authorization": MASK,
        "headers": [{"X-Api-Key": MASK}, ("plain", "leak ***")],
        "nested": {"client_secret": MASK, "note": MASK},
        "count": 3,
    }


def test_scrub_obj_keeps_values_that_cannot_be_secrets() -> None:
    data: dict[str, object] = {
        "password": None,
        "token": "",
        "secret": True,
        "api_key": [],
        "credentials": {},
        "max_tokens": 1024,
        "token_ratio": 0.5,
    }
    assert Redactor().scrub_obj(data) == data


def test_scrub_obj_does_not_mutate_its_argument() -> None:
    data = {"password": "hunter22", "items": [SECRET]}
    redactor = Redactor([SECRET])
    result = redactor.scrub_obj(data)
    assert data == {"password": "hunter22", "items": [SECRET]}
    assert result == {"password": MASK, "items": [MASK]}
    assert isinstance(redactor.scrub_obj((SECRET, "x")), tuple)


def test_scrub_obj_leaves_other_objects_and_keys_alone() -> None:
    marker = object()
    redactor = Redactor([SECRET])
    assert redactor.scrub_obj(marker) is marker
    assert redactor.scrub_obj(42) == 42
    assert redactor.scrub_obj({1: SECRET}) == {1: MASK}


def test_scrub_obj_cuts_cycles() -> None:
    looped: list[object] = ["a"]
    looped.append(looped)
    assert Redactor().scrub_obj(looped) == ["a", MASK]
    shared = ["same"]
    assert Redactor().scrub_obj([shared, shared]) == [["same"], ["same"]]


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, Redactor]]:
    redactor = Redactor()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(redactor))
    logger = logging.getLogger("fangwire.tests.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream, redactor
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_log_records_are_scrubbed(logged: tuple[logging.Logger, io.StringIO, Redactor]) -> None:
    logger, stream, redactor = logged
    redactor.add(SECRET)
    logger.info("connecting with %s", SECRET)
    logger.warning(f"inline {SECRET}")
    try:
        raise RuntimeError(f"auth failed for {SECRET}")
    except RuntimeError:
        logger.exception("request failed")
    logger.info("with stack %s", "here", stack_info=True)
    output = stream.getvalue()
    assert SECRET not in output
    assert "connecting with ***" in output
    assert "inline ***" in output
    assert "RuntimeError: auth failed for ***" in output
    assert "Stack (most recent call last)" in output
