"""Tests for fangwire.secrets: Secret, the keyring backends, the master key and SecretStore."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import logging
import os
import pickle
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import anyio
import keyring.backend
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from keyring.compat import properties
from keyring.errors import KeyringError, PasswordDeleteError

import fangwire.secrets
from fangwire.redaction import RedactingFilter, Redactor
from fangwire.secrets import (
    ChosenBackend,
    EncryptedFileKeyring,
    MemoryKeyring,
    Secret,
    SecretStore,
    SecretStoreError,
    choose_backend,
    load_master_key,
)
from fangwire.secrets.backend import find_system_keyring

VALUE = "xoxb-1234-super-secret-value"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_public_api_is_sorted() -> None:
    assert fangwire.secrets.__all__ == sorted(fangwire.secrets.__all__)


# --- Secret ---------------------------------------------------------------------------------


def test_secret_reveals_only_on_request() -> None:
    secret = Secret(VALUE)
    assert secret.reveal() == VALUE
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret])):
        assert VALUE not in shown
    assert repr(secret) == str(secret) == "Secret('***')"


def test_secret_equality_and_hash() -> None:
    assert Secret(VALUE) == Secret(VALUE)
    assert Secret(VALUE) != Secret(VALUE + "x")
    assert Secret(VALUE) != VALUE
    assert Secret("é-unicode") == Secret("é-unicode")
    assert hash(Secret(VALUE)) == hash(Secret("something else"))
    assert len({Secret("a"), Secret("a")}) == 1


def test_secret_truthiness() -> None:
    assert Secret(VALUE)
    assert not Secret("")


@pytest.mark.parametrize(
    ("value", "visible", "expected"),
    [
        ("abcdefghijkl", 4, "***ijkl"),
        ("abcdefghijk", 4, "***"),
        ("short", 4, "***"),
        ("abcdefghijklmnop", 2, "***op"),
        ("abcdefghijklmnop", 0, "***"),
        ("abcdefghijkl", 10, "***ijkl"),
    ],
)
def test_secret_masked(value: str, visible: int, expected: str) -> None:
    assert Secret(value).masked(visible) == expected


def test_secret_is_immutable_and_not_picklable() -> None:
    secret = Secret(VALUE)
    with pytest.raises(AttributeError):
        secret._value = "changed"
    with pytest.raises(AttributeError):
        del secret._value
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(secret, protocol=protocol)
    assert copy.copy(secret) is secret
    assert copy.deepcopy({"k": secret})["k"] is secret
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


# --- EncryptedFileKeyring -------------------------------------------------------------------


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    return tmp_path / "home" / "secrets.enc"


@pytest.fixture
def file_keyring(secrets_file: Path) -> EncryptedFileKeyring:
    return EncryptedFileKeyring(secrets_file, KEY)


def read_document(path: Path) -> dict[str, object]:
    document = json.loads(path.read_text())
    assert isinstance(document, dict)
    return document


def test_file_keyring_round_trip(file_keyring: EncryptedFileKeyring, secrets_file: Path) -> None:
    assert file_keyring.get_password("fangwire", "missing") is None
    file_keyring.set_password("fangwire", "channels/slack/token", VALUE)
    file_keyring.set_password("fangwire", "channels", "other-value")
    file_keyring.set_password("other", "channels/slack/token", "third-value")
    assert file_keyring.get_password("fangwire", "channels/slack/token") == VALUE
    assert file_keyring.get_password("fangwire", "channels") == "other-value"
    assert file_keyring.get_password("other", "channels/slack/token") == "third-value"
    credential = file_keyring.get_credential("fangwire", "channels")
    assert credential is not None
    assert (credential.username, credential.password) == ("channels", "other-value")

    file_keyring.set_password("fangwire", "channels", "replaced-value")
    reopened = EncryptedFileKeyring(secrets_file, KEY)
    assert reopened.get_password("fangwire", "channels") == "replaced-value"

    reopened.delete_password("fangwire", "channels")
    assert file_keyring.get_password("fangwire", "channels") is None
    with pytest.raises(PasswordDeleteError):
        file_keyring.delete_password("fangwire", "channels")
    assert file_keyring.get_password("fangwire", "channels/slack/token") == VALUE


def test_file_keyring_file_format(file_keyring: EncryptedFileKeyring, secrets_file: Path) -> None:
    file_keyring.set_password("fangwire", "a/b", VALUE)
    document = read_document(secrets_file)
    assert document["format"] == "fangwire-secrets"
    assert document["version"] == 1
    entries = document["entries"]
    assert isinstance(entries, dict)
    [(key, entry)] = entries.items()
    assert key == "fangwire/a%2Fb"
    assert entry["service"] == "fangwire"
    assert entry["username"] == "a/b"
    assert len(base64.b64decode(entry["nonce"])) == 12


def test_file_keyring_file_is_private(
    file_keyring: EncryptedFileKeyring, secrets_file: Path
) -> None:
    old_umask = os.umask(0)
    try:
        file_keyring.set_password("fangwire", "name", VALUE)
        assert mode_of(secrets_file) == 0o600
        secrets_file.chmod(0o644)
        file_keyring.set_password("fangwire", "name", VALUE + "2")
        assert mode_of(secrets_file) == 0o600
    finally:
        os.umask(old_umask)


def test_file_keyring_encrypts_values(
    file_keyring: EncryptedFileKeyring, secrets_file: Path
) -> None:
    file_keyring.set_password("fangwire", "one", VALUE)
    file_keyring.set_password("fangwire", "two", VALUE)
    raw = secrets_file.read_bytes()
    assert VALUE.encode() not in raw
    assert base64.b64encode(VALUE.encode()) not in raw
    entries = read_document(secrets_file)["entries"]
    assert isinstance(entries, dict)
    # A fresh nonce per write: equal values do not give equal ciphertexts.
    assert entries["fangwire/one"]["ciphertext"] != entries["fangwire/two"]["ciphertext"]
    assert entries["fangwire/one"]["nonce"] != entries["fangwire/two"]["nonce"]


def test_file_keyring_wrong_key(file_keyring: EncryptedFileKeyring, secrets_file: Path) -> None:
    file_keyring.set_password("fangwire", "channels/slack", VALUE)
    wrong = EncryptedFileKeyring(secrets_file, OTHER_KEY)
    with pytest.raises(SecretStoreError, match="fangwire/channels/slack") as caught:
        wrong.get_password("fangwire", "channels/slack")
    assert VALUE not in str(caught.value)
    assert str(secrets_file.parent) not in str(caught.value)


def tamper(path: Path, change: object) -> None:
    document = read_document(path)
    change(document["entries"])  # type: ignore[operator]
    path.write_text(json.dumps(document))


def test_file_keyring_tampered_ciphertext(
    file_keyring: EncryptedFileKeyring, secrets_file: Path
) -> None:
    file_keyring.set_password("fangwire", "name", VALUE)

    def flip(entries: dict[str, dict[str, str]]) -> None:
        data = bytearray(base64.b64decode(entries["fangwire/name"]["ciphertext"]))
        data[0] ^= 1
        entries["fangwire/name"]["ciphertext"] = base64.b64encode(bytes(data)).decode()

    tamper(secrets_file, flip)
    with pytest.raises(SecretStoreError, match="fangwire/name"):
        file_keyring.get_password("fangwire", "name")


@pytest.mark.parametrize(
    ("first", "second"),
    [(("fangwire", "one"), ("fangwire", "two")), (("a:b", "c"), ("a", "b:c"))],
)
def test_file_keyring_swapped_ciphertexts(
    file_keyring: EncryptedFileKeyring,
    secrets_file: Path,
    first: tuple[str, str],
    second: tuple[str, str],
) -> None:
    file_keyring.set_password(*first, "first-value")
    file_keyring.set_password(*second, "second-value")

    def swap(entries: dict[str, dict[str, str]]) -> None:
        a, b = entries.values()
        for field in ("nonce", "ciphertext"):
            a[field], b[field] = b[field], a[field]

    tamper(secrets_file, swap)
    for service, username in (first, second):
        with pytest.raises(SecretStoreError, match="tampered"):
            file_keyring.get_password(service, username)


def test_file_keyring_entry_moved_under_another_name(
    file_keyring: EncryptedFileKeyring, secrets_file: Path
) -> None:
    file_keyring.set_password("fangwire", "one", VALUE)

    def move(entries: dict[str, object]) -> None:
        entries["fangwire/two"] = entries.pop("fangwire/one")

    tamper(secrets_file, move)
    with pytest.raises(SecretStoreError, match="corrupt"):
        file_keyring.get_password("fangwire", "two")


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe\x00",
        b"[]",
        b'{"format": "other", "version": 1, "entries": {}}',
        b'{"format": "fangwire-secrets", "version": 1, "entries": []}',
        b'{"format": "fangwire-secrets", "version": 1, "entries": {"fangwire/x": 3}}',
        b'{"format": "fangwire-secrets", "version": 1, "entries": {"fangwire/x": '
        b'{"service": "fangwire", "username": "x", "nonce": "!!", "ciphertext": ""}}}',
        b'{"format": "fangwire-secrets", "version": 1, "entries": {"fangwire/x": '
        b'{"service": "fangwire", "username": "x", "nonce": "AAAA", "ciphertext": ""}}}',
    ],
)
def test_file_keyring_corrupt_file(
    file_keyring: EncryptedFileKeyring, secrets_file: Path, content: bytes
) -> None:
    secrets_file.parent.mkdir(parents=True)
    secrets_file.write_bytes(content)
    with pytest.raises(SecretStoreError, match=r"secrets file secrets\.enc is corrupt") as caught:
        file_keyring.get_password("fangwire", "x")
    # No raw JSON or base64 traceback chained to the error.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    with pytest.raises(SecretStoreError):
        file_keyring.set_password("fangwire", "x", VALUE)
    assert secrets_file.read_bytes() == content


def test_file_keyring_unsupported_version(
    file_keyring: EncryptedFileKeyring, secrets_file: Path
) -> None:
    secrets_file.parent.mkdir(parents=True)
    secrets_file.write_text('{"format": "fangwire-secrets", "version": 2, "entries": {}}')
    with pytest.raises(SecretStoreError, match="unsupported version 2"):
        file_keyring.get_password("fangwire", "x")


def test_file_keyring_leaves_no_temporary_files(
    file_keyring: EncryptedFileKeyring, secrets_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(5):
        file_keyring.set_password("fangwire", f"name{index}", VALUE)
    file_keyring.delete_password("fangwire", "name0")
    assert sorted(p.name for p in secrets_file.parent.iterdir()) == ["secrets.enc"]

    before = secrets_file.read_bytes()

    def failing_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        file_keyring.set_password("fangwire", "new", VALUE)
    assert sorted(p.name for p in secrets_file.parent.iterdir()) == ["secrets.enc"]
    assert secrets_file.read_bytes() == before


def test_file_keyring_concurrent_writers_lose_nothing(
    file_keyring: EncryptedFileKeyring,
) -> None:
    def write(index: int) -> None:
        for round_ in range(5):
            file_keyring.set_password("fangwire", f"t{index}-{round_}", f"value-{index}")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(4):
        for round_ in range(5):
            assert file_keyring.get_password("fangwire", f"t{index}-{round_}") == f"value-{index}"


def test_file_keyring_rejects_a_bad_key_size(secrets_file: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        EncryptedFileKeyring(secrets_file, b"short")


def test_own_backends_are_never_auto_selected_by_keyring() -> None:
    for cls in (EncryptedFileKeyring, MemoryKeyring):
        assert cls.priority < fail.Keyring.priority
    discovered = keyring.backend.get_all_keyring()
    best = max(discovered, key=keyring.backend.by_priority)
    assert not isinstance(best, EncryptedFileKeyring | MemoryKeyring)


def test_memory_keyring() -> None:
    ring = MemoryKeyring()
    assert ring.get_password("s", "u") is None
    ring.set_password("s", "u", VALUE)
    assert ring.get_password("s", "u") == VALUE
    assert MemoryKeyring().get_password("s", "u") is None
    ring.delete_password("s", "u")
    with pytest.raises(PasswordDeleteError):
        ring.delete_password("s", "u")


# --- master key -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoded",
    [
        base64.urlsafe_b64encode(bytes(range(200, 232))).decode(),
        base64.urlsafe_b64encode(bytes(range(200, 232))).decode().rstrip("="),
        base64.b64encode(bytes(range(200, 232))).decode(),
        bytes(range(200, 232)).hex(),
        bytes(range(200, 232)).hex().upper() + "\n",
    ],
)
def test_master_key_from_env_encoded(tmp_path: Path, encoded: str) -> None:
    assert "-" in encoded or "+" in encoded or len(encoded.strip()) == 64
    key = load_master_key(tmp_path, {"FANGWIRE_MASTER_KEY": encoded})
    assert key == bytes(range(200, 232))
    assert not (tmp_path / "master.key").exists()


def test_master_key_from_env_passphrase(tmp_path: Path) -> None:
    passphrase = "correct horse battery staple"
    key = load_master_key(tmp_path, {"FANGWIRE_MASTER_KEY": passphrase})
    expected = hashlib.scrypt(
        passphrase.encode(),
        salt=b"fangwire-master-key-v1",
        n=2**15,
        r=8,
        p=1,
        maxmem=64 * 1024 * 1024,
        dklen=32,
    )
    assert key == expected
    assert not (tmp_path / "master.key").exists()


@pytest.mark.parametrize("value", ["", "   "])
def test_master_key_from_empty_env_is_an_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(SecretStoreError, match="FANGWIRE_MASTER_KEY"):
        load_master_key(tmp_path, {"FANGWIRE_MASTER_KEY": value})


def test_master_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    old_umask = os.umask(0)
    try:
        key = load_master_key(home, {})
    finally:
        os.umask(old_umask)
    key_file = home / "master.key"
    assert len(key) == 32
    assert mode_of(key_file) == 0o600
    assert base64.urlsafe_b64decode(key_file.read_text().strip()) == key
    assert load_master_key(home, {}) == key
    assert load_master_key(tmp_path / "elsewhere", {}) != key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_insecure_master_key_file_is_refused(tmp_path: Path, mode: int) -> None:
    load_master_key(tmp_path, {})
    (tmp_path / "master.key").chmod(mode)
    with pytest.raises(SecretStoreError, match=r"chmod 600") as caught:
        load_master_key(tmp_path, {})
    assert "master.key" in str(caught.value)


@pytest.mark.parametrize(
    "content", ["", "not base64 at all!", base64.b64encode(b"x" * 16).decode()]
)
def test_malformed_master_key_file_is_refused(tmp_path: Path, content: str) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text(content)
    key_file.chmod(0o600)
    with pytest.raises(SecretStoreError, match="malformed"):
        load_master_key(tmp_path, {})


# --- choose_backend -------------------------------------------------------------------------


BackendType = TypeVar("BackendType", bound=type[KeyringBackend])


def unregistered(cls: BackendType) -> BackendType:
    """Keep a test backend out of keyring's process-wide registry of backend classes."""
    KeyringBackend._classes.discard(cls)
    return cls


class _FakeBackend(KeyringBackend):
    rating = 5.0

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    @properties.classproperty
    def priority(cls) -> float:
        return cls.rating

    def get_password(self, service: str, username: str) -> str | None:
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        raise NotImplementedError


@unregistered
class FakeSystemKeyring(_FakeBackend):
    rating = 5.0


@unregistered
class BetterSystemKeyring(_FakeBackend):
    rating = 7.0


@unregistered
class WeakKeyring(_FakeBackend):
    rating = 0.5


@unregistered
class PlaintextKeyring(_FakeBackend):
    __module__ = "keyrings.alt.file"
    rating = 9.0


unregistered(_FakeBackend)


@pytest.fixture
def discovered(monkeypatch: pytest.MonkeyPatch) -> list[KeyringBackend]:
    failing: KeyringBackend = fail.Keyring()  # type: ignore[no-untyped-call]
    backends: list[KeyringBackend] = [failing, MemoryKeyring()]
    monkeypatch.setattr(keyring.backend, "get_all_keyring", lambda: backends)
    return backends


def test_choose_memory(tmp_path: Path) -> None:
    chosen = choose_backend(tmp_path, {}, "memory")
    assert isinstance(chosen, ChosenBackend)
    assert chosen.kind == "memory"
    assert isinstance(chosen.backend, MemoryKeyring)
    assert list(tmp_path.iterdir()) == []


def test_choose_file(tmp_path: Path) -> None:
    chosen = choose_backend(tmp_path, {}, "file")
    assert chosen.kind == "file"
    assert chosen.description == "encrypted file (AES-256-GCM)"
    assert isinstance(chosen.backend, EncryptedFileKeyring)
    assert chosen.backend.path == tmp_path / "secrets.enc"
    chosen.backend.set_password("fangwire", "x", VALUE)
    again = choose_backend(tmp_path, {}, "file").backend
    assert again.get_password("fangwire", "x") == VALUE


def test_choose_auto_without_system_keyring_uses_the_file(
    tmp_path: Path, discovered: list[KeyringBackend]
) -> None:
    discovered.append(WeakKeyring())
    chosen = choose_backend(tmp_path, {}, "auto")
    assert chosen.kind == "file"
    assert (tmp_path / "master.key").exists()


def test_choose_auto_prefers_the_best_usable_system_keyring(
    tmp_path: Path, discovered: list[KeyringBackend]
) -> None:
    discovered += [FakeSystemKeyring(), PlaintextKeyring(), BetterSystemKeyring(), WeakKeyring()]
    chosen = choose_backend(tmp_path, {}, "auto")
    assert chosen.kind == "system"
    assert isinstance(chosen.backend, BetterSystemKeyring)
    assert str(tmp_path) not in chosen.description
    assert not (tmp_path / "master.key").exists()
    assert isinstance(choose_backend(tmp_path, {}, "system").backend, BetterSystemKeyring)


def test_choose_system_without_one_is_an_error(
    tmp_path: Path, discovered: list[KeyringBackend]
) -> None:
    discovered.append(PlaintextKeyring())
    with pytest.raises(SecretStoreError, match="no usable system keyring"):
        choose_backend(tmp_path, {}, "system")


def test_env_overrides_the_preference(tmp_path: Path, discovered: list[KeyringBackend]) -> None:
    discovered.append(FakeSystemKeyring())
    env = {"FANGWIRE_SECRETS_BACKEND": " Memory "}
    assert choose_backend(tmp_path, env, "file").kind == "memory"
    assert choose_backend(tmp_path, {"FANGWIRE_SECRETS_BACKEND": "file"}).kind == "file"
    assert choose_backend(tmp_path, {"FANGWIRE_SECRETS_BACKEND": "system"}, "memory").kind == (
        "system"
    )
    assert choose_backend(tmp_path, {"FANGWIRE_SECRETS_BACKEND": ""}, "memory").kind == "memory"


def test_unknown_preference_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FANGWIRE_SECRETS_BACKEND"):
        choose_backend(tmp_path, {"FANGWIRE_SECRETS_BACKEND": "plaintext"})
    with pytest.raises(ValueError, match="one of auto, system, file, memory"):
        choose_backend(tmp_path, {}, "keychain")


@pytest.fixture
def hanging_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    release = threading.Event()

    def hang() -> list[KeyringBackend]:
        release.wait(10)
        return [FakeSystemKeyring()]

    monkeypatch.setattr(keyring.backend, "get_all_keyring", hang)
    try:
        yield
    finally:
        release.set()


@pytest.mark.usefixtures("hanging_probe")
def test_a_hanging_probe_is_abandoned(tmp_path: Path) -> None:
    started = time.monotonic()
    assert find_system_keyring(timeout=0.05) is None
    assert choose_backend(tmp_path, {}, "auto", probe_timeout=0.05).kind == "file"
    assert time.monotonic() - started < 1


def test_auto_on_this_machine_is_quick(tmp_path: Path) -> None:
    started = time.monotonic()
    chosen = choose_backend(tmp_path, {}, "auto")
    assert time.monotonic() - started < 2
    assert chosen.kind in ("system", "file")


# --- SecretStore ----------------------------------------------------------------------------


class CountingKeyring(MemoryKeyring):
    """Memory keyring recording every call and the thread it ran in."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.threads: set[int] = set()
        self.delay = delay

    def _record(self, name: str) -> None:
        self.calls.append(name)
        self.threads.add(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)

    def get_password(self, service: str, username: str) -> str | None:
        self._record("get")
        return super().get_password(service, username)

    def set_password(self, service: str, username: str, password: str) -> None:
        self._record("set")
        super().set_password(service, username, password)

    def delete_password(self, service: str, username: str) -> None:
        self._record("delete")
        super().delete_password(service, username)


class BrokenKeyring(MemoryKeyring):
    def get_password(self, service: str, username: str) -> str | None:
        raise KeyringError("the collection is locked")


@pytest.fixture
def counting() -> CountingKeyring:
    return CountingKeyring()


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


@pytest.fixture
def store(counting: CountingKeyring, redactor: Redactor) -> SecretStore:
    return SecretStore(counting, redactor)


@pytest.mark.anyio
async def test_store_round_trip(store: SecretStore, counting: CountingKeyring) -> None:
    assert await store.get("channels/slack:token") is None
    assert not await store.has("channels/slack:token")
    await store.set("channels/slack:token", VALUE)
    secret = await store.get("channels/slack:token")
    assert secret == Secret(VALUE)
    assert await store.has("channels/slack:token")
    assert counting.get_password("fangwire", "channels/slack:token") == VALUE
    await store.set("totp", Secret("JBSWY3DPEHPK3PXP"))
    assert counting.get_password("fangwire", "totp") == "JBSWY3DPEHPK3PXP"
    assert await store.delete("totp") is True
    assert await store.delete("totp") is False
    assert await store.get("totp") is None
    assert await store.delete("never-set") is False


@pytest.mark.anyio
async def test_store_reads_the_backend_once_per_name(
    counting: CountingKeyring, redactor: Redactor
) -> None:
    counting.set_password("fangwire", "present", VALUE)
    counting.calls.clear()
    store = SecretStore(counting, redactor)
    for _ in range(3):
        assert await store.get("present") == Secret(VALUE)
        assert await store.get("absent") is None
        assert await store.has("absent") is False
    assert counting.calls == ["get", "get"]

    await store.set("present", "new-value")
    assert await store.get("present") == Secret("new-value")
    assert await store.delete("present") is True
    assert await store.get("present") is None
    assert await store.delete("absent") is False
    assert counting.calls == ["get", "get", "set", "delete"]

    counting.set_password("fangwire", "absent", "added-behind-our-back")
    assert await store.get("absent") is None
    store.invalidate("absent")
    assert await store.get("absent") == Secret("added-behind-our-back")
    store.invalidate()
    assert await store.get("absent") == Secret("added-behind-our-back")


@pytest.mark.anyio
async def test_store_calls_the_backend_off_the_event_loop(
    store: SecretStore, counting: CountingKeyring
) -> None:
    await store.set("name", VALUE)
    await store.get("other")
    await store.delete("name")
    assert counting.threads
    assert threading.get_ident() not in counting.threads


@pytest.mark.anyio
async def test_concurrent_first_reads_hit_the_backend_once(redactor: Redactor) -> None:
    slow = CountingKeyring(delay=0.05)
    slow.set_password("fangwire", "name", VALUE)
    slow.calls.clear()
    store = SecretStore(slow, redactor)
    results: list[Secret | None] = []

    async def read() -> None:
        results.append(await store.get("name"))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(read)
    assert results == [Secret(VALUE)] * 5
    assert slow.calls == ["get"]


@pytest.mark.anyio
async def test_store_registers_values_with_the_redactor(
    store: SecretStore, counting: CountingKeyring, redactor: Redactor
) -> None:
    counting.set_password("fangwire", "read", "value-that-was-read")
    await store.get("read")
    await store.set("written", "value-that-was-written")
    await store.set("shared-1", "shared-value")
    await store.set("shared-2", "shared-value")
    text = "value-that-was-read value-that-was-written shared-value"
    assert redactor.scrub(text) == "*** *** ***"

    await store.set("written", "rotated-value")
    assert redactor.scrub("value-that-was-written rotated-value") == "*** ***"
    assert await store.delete("read")
    assert await store.delete("shared-1")
    assert redactor.scrub(text) == "value-that-was-read *** ***"
    assert await store.delete("shared-2")
    assert redactor.scrub("shared-value") == "shared-value"


@pytest.mark.anyio
async def test_store_values_never_reach_logs(store: SecretStore, redactor: Redactor) -> None:
    await store.set("channels/telegram", VALUE)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(redactor))
    logger = logging.getLogger("fangwire.tests.secrets")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        secret = await store.get("channels/telegram")
        assert secret is not None
        logger.warning("token is %s, or %s, or %r", secret.reveal(), secret, secret)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    output = stream.getvalue()
    assert VALUE not in output
    assert "token is ***, or Secret('***'), or Secret('***')" in output


@pytest.mark.anyio
async def test_store_repr_never_shows_values(store: SecretStore) -> None:
    await store.set("name", VALUE)
    await store.get("name")
    assert VALUE not in repr(store)
    assert VALUE not in str(store)
    assert "CountingKeyring" in repr(store)


@pytest.mark.parametrize("name", ["", "a" * 201, "has space", "ünïcode", "new\nline", "semi;colon"])
@pytest.mark.anyio
async def test_store_rejects_invalid_names(store: SecretStore, name: str) -> None:
    with pytest.raises(ValueError, match="invalid secret name"):
        await store.get(name)
    with pytest.raises(ValueError, match="invalid secret name"):
        await store.set(name, VALUE)
    with pytest.raises(ValueError, match="invalid secret name"):
        await store.delete(name)


@pytest.mark.anyio
async def test_store_accepts_valid_names(store: SecretStore) -> None:
    for name in ("a" * 200, "A-z_0.9:x/y"):
        await store.set(name, VALUE)
        assert await store.get(name) == Secret(VALUE)


@pytest.mark.anyio
async def test_store_rejects_empty_values(store: SecretStore) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        await store.set("name", "")
    with pytest.raises(ValueError, match="must not be empty"):
        await store.set("name", Secret(""))


@pytest.mark.anyio
async def test_store_wraps_backend_errors(redactor: Redactor) -> None:
    store = SecretStore(BrokenKeyring(), redactor)
    with pytest.raises(SecretStoreError, match="could not read secret 'name'") as caught:
        await store.get("name")
    assert isinstance(caught.value.__cause__, KeyringError)


@pytest.mark.anyio
async def test_store_over_the_encrypted_file(tmp_path: Path, redactor: Redactor) -> None:
    ring = EncryptedFileKeyring(tmp_path / "secrets.enc", KEY)
    await SecretStore(ring, redactor).set("channels/slack", VALUE)
    reopened = SecretStore(EncryptedFileKeyring(tmp_path / "secrets.enc", KEY), Redactor())
    assert await reopened.get("channels/slack") == Secret(VALUE)
    wrong = SecretStore(EncryptedFileKeyring(tmp_path / "secrets.enc", OTHER_KEY), Redactor())
    with pytest.raises(SecretStoreError, match="fangwire/channels/slack"):
        await wrong.get("channels/slack")
