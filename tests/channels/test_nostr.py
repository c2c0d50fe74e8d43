"""The ``nostr`` channel against a real relay (nostr-relay 1.14), plus known-answer tests.

The person writing to the bot is a second key pair. It signs its DM events with this
package's signer (the relay checks every signature with its own library), but encrypts and
decrypts with ``cryptography`` alone (secp256k1 ECDH + AES-CBC), independent of the
adapter's coincurve-based NIP-04 code.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from httpx_ws import aconnect_ws

from fangwire.channels import ChannelContext, ChannelError, OutboundMessage
from fangwire.runtime import Runtime
from fangwire.testing.channels import ChannelConformance
from fangwire_channels.nostr import NostrChannel
from fangwire_channels.nostrkit import (
    Keys,
    NostrError,
    bech32_decode,
    bech32_encode,
    event_id,
    nip04_decrypt,
    nip04_encrypt,
    public_key_hex,
    schnorr_verify,
    sign_event,
    verify_event,
)
from tests.channels.servers.nostr_relay import Relay, start_relay

TIMEOUT = 20


@pytest.fixture(scope="session")
def relay() -> Iterator[Relay]:
    server = start_relay()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lax_relay() -> Iterator[Relay]:
    """A relay that forwards events without checking their signatures."""
    server = start_relay(validators=("is_recent",))
    yield server
    server.stop()


def config(*relays: Relay) -> str:
    urls = ", ".join(f'"{r.url}"' for r in relays)
    return f'[channels.nostr]\nrelays = [{urls}]\nagent = "assistant"\n'


def adapter(runtime: Runtime) -> NostrChannel:
    channel = runtime.channels.running("nostr").adapter
    assert isinstance(channel, NostrChannel)
    return channel


# -- the person on the other side, with independent NIP-04 code ----------------------------------


class Person:
    def __init__(self) -> None:
        self.secret = os.urandom(32)
        self.keys = Keys(self.secret)
        self._private = ec.derive_private_key(int.from_bytes(self.secret, "big"), ec.SECP256K1())

    def _shared(self, public_key: str) -> bytes:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256K1(), b"\x02" + bytes.fromhex(public_key)
        )
        return self._private.exchange(ec.ECDH(), peer)  # the x coordinate, unhashed

    def encrypt(self, public_key: str, text: str) -> str:
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        data = padder.update(text.encode()) + padder.finalize()
        enc = Cipher(algorithms.AES(self._shared(public_key)), modes.CBC(iv)).encryptor()
        ct = enc.update(data) + enc.finalize()
        return f"{base64.b64encode(ct).decode()}?iv={base64.b64encode(iv).decode()}"

    def decrypt(self, public_key: str, content: str) -> str:
        ct, _, iv = content.partition("?iv=")
        dec = Cipher(
            algorithms.AES(self._shared(public_key)), modes.CBC(base64.b64decode(iv))
        ).decryptor()
        data = dec.update(base64.b64decode(ct)) + dec.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return (unpadder.update(data) + unpadder.finalize()).decode()

    def dm(self, to: str, text: str) -> dict[str, Any]:
        return sign_event(
            self.keys,
            kind=4,
            content=self.encrypt(to, text),
            tags=[["p", to]],
            created_at=int(time.time()),
        )


async def publish(relay: Relay, event: dict[str, Any]) -> list[Any]:
    async with httpx.AsyncClient() as http, aconnect_ws(relay.url, http) as ws:
        await ws.send_text(json.dumps(["EVENT", event]))
        with anyio.fail_after(TIMEOUT):
            while True:
                reply = json.loads(await ws.receive_text())
                if reply[0] == "OK":
                    return list(reply)


async def dms_to(relay: Relay, person: Person, count: int, author: str) -> list[dict[str, Any]]:
    """Wait until ``relay`` holds ``count`` DMs from ``author`` to ``person``."""
    with anyio.fail_after(TIMEOUT):
        while True:
            async with httpx.AsyncClient() as http, aconnect_ws(relay.url, http) as ws:
                query = {"kinds": [4], "#p": [person.keys.public_key], "authors": [author]}
                await ws.send_text(json.dumps(["REQ", "q", query]))
                by_id: dict[str, dict[str, Any]] = {}
                while True:
                    reply = json.loads(await ws.receive_text())
                    if reply[0] == "EOSE":
                        break
                    if reply[0] == "EVENT":  # a relay may send a just-stored event twice
                        by_id[reply[2]["id"]] = reply[2]
                events = list(by_id.values())
            if len(events) >= count:
                return sorted(events, key=lambda e: (e["created_at"], e["id"]))
            await anyio.sleep(0.1)


# -- end to end ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_dm_is_answered_with_an_encrypted_dm(make_runtime, relay):
    bot = Keys.generate()
    person = Person()
    nsec = bech32_encode("nsec", bytes.fromhex(_secret_hex(bot)))
    runtime = make_runtime(config(relay), environ={"NOSTR_PRIVATE_KEY": nsec})
    async with runtime.serving(), runtime.bus.subscribe("channel.inbound") as sub:
        await wait_subscribed(runtime)
        sent = person.dm(bot.public_key, "ping")
        assert (await publish(relay, sent))[2] is True
        with anyio.fail_after(TIMEOUT):
            inbound = await sub.receive()
        (answer,) = await dms_to(relay, person, 1, bot.public_key)
        assert runtime.channels.runners["nostr"].status == "running"
    assert inbound.payload["sender"] == person.keys.public_key
    assert inbound.payload["text"] == "ping"
    verify_event(answer)
    assert answer["kind"] == 4
    assert ["p", person.keys.public_key] in answer["tags"]
    assert ["e", sent["id"], "", "reply"] in answer["tags"]
    assert person.decrypt(bot.public_key, answer["content"]) == "echo: ping"


@pytest.mark.anyio
async def test_forged_events_are_dropped(make_runtime, lax_relay):
    bot = Keys.generate()
    person = Person()
    runtime = make_runtime(config(lax_relay), environ={"NOSTR_PRIVATE_KEY": _secret_hex(bot)})
    forged_sig = person.dm(bot.public_key, "forged signature")
    forged_sig["sig"] = person.dm(bot.public_key, "other")["sig"]
    forged_id = person.dm(bot.public_key, "forged id")
    forged_id["content"] = person.encrypt(bot.public_key, "swapped content")
    async with runtime.serving(), runtime.bus.subscribe("channel.inbound") as sub:
        await wait_subscribed(runtime)
        assert (await publish(lax_relay, forged_sig))[2] is True  # the lax relay takes it ...
        assert (await publish(lax_relay, forged_id))[2] is True
        assert (await publish(lax_relay, person.dm(bot.public_key, "genuine")))[2] is True
        with anyio.fail_after(TIMEOUT):
            inbound = await sub.receive()
        (answer,) = await dms_to(lax_relay, person, 1, bot.public_key)
    assert inbound.payload["text"] == "genuine"  # ... the channel does not
    assert person.decrypt(bot.public_key, answer["content"]) == "echo: genuine"


@pytest.mark.anyio
async def test_several_relays_one_answer_published_to_all(make_runtime, relay, lax_relay):
    bot = Keys.generate()
    person = Person()
    runtime = make_runtime(
        config(relay, lax_relay), environ={"NOSTR_PRIVATE_KEY": _secret_hex(bot)}
    )
    async with runtime.serving():
        await wait_subscribed(runtime, relays=2)
        event = person.dm(bot.public_key, "to both")
        assert (await publish(relay, event))[2] is True
        assert (await publish(lax_relay, event))[2] is True
        on_first = await dms_to(relay, person, 1, bot.public_key)
        on_second = await dms_to(lax_relay, person, 1, bot.public_key)
        counters = runtime.channels.runners["nostr"].counters
    assert counters.received == 1
    assert [e["id"] for e in on_first] == [e["id"] for e in on_second]


@pytest.mark.anyio
async def test_relay_refusal_raises_with_the_relays_message(make_runtime, relay):
    bot = Keys.generate()
    person = Person()
    runtime = make_runtime(config(relay), environ={"NOSTR_PRIVATE_KEY": _secret_hex(bot)})
    async with runtime.serving():
        channel = adapter(runtime)
        too_big = OutboundMessage(text="x" * 4000)  # over the relay's 4096-character content
        with pytest.raises(ChannelError) as refused:
            await channel.send(person.keys.public_key, too_big)
    assert "invalid: 280 characters should be enough for anybody" in refused.value.reason
    assert relay.url in refused.value.reason
    assert refused.value.retryable is False


@pytest.mark.anyio
async def test_long_answers_are_cut_under_the_relay_limit(make_runtime, relay):
    bot = Keys.generate()
    person = Person()
    runtime = make_runtime(config(relay), environ={"NOSTR_PRIVATE_KEY": _secret_hex(bot)})
    text = " ".join(f"wörd{n}" for n in range(1000))  # 8890 bytes: three parts
    async with runtime.serving():
        receipt = await runtime.channels.send("nostr", person.keys.npub, OutboundMessage(text=text))
        events = await dms_to(relay, person, len(receipt.message_ids), bot.public_key)
    assert len(receipt.message_ids) == 3
    assert {e["id"] for e in events} == set(receipt.message_ids)
    parts = [person.decrypt(bot.public_key, e["content"]) for e in events]
    assert all(len(p.encode()) <= NostrChannel.max_message_length for p in parts)
    assert sorted(" ".join(parts).split()) == sorted(text.split())


@pytest.mark.anyio
async def test_unknown_recipient_key_is_refused_before_sending(make_runtime, relay):
    runtime = make_runtime(
        config(relay), environ={"NOSTR_PRIVATE_KEY": _secret_hex(Keys.generate())}
    )
    async with runtime.serving():
        with pytest.raises(ChannelError, match="recipient 'npub1nope'"):
            await runtime.channels.send("nostr", "npub1nope", OutboundMessage(text="hi"))


@pytest.mark.anyio
async def test_reconnects_after_the_relay_restarts(make_runtime):
    own = start_relay()
    try:
        bot = Keys.generate()
        person = Person()
        runtime = make_runtime(config(own), environ={"NOSTR_PRIVATE_KEY": _secret_hex(bot)})
        async with runtime.serving():
            await wait_subscribed(runtime)
            assert (await publish(own, person.dm(bot.public_key, "before")))[2] is True
            await dms_to(own, person, 1, bot.public_key)
            runner = runtime.channels.runners["nostr"]
            await anyio.to_thread.run_sync(own.restart)
            with anyio.fail_after(TIMEOUT):
                while runner.counters.last_error is None:
                    await anyio.sleep(0.05)
            assert own.url in runner.counters.last_error  # connection ended, or not back yet
            with anyio.fail_after(TIMEOUT):
                while runner.status != "running":
                    await anyio.sleep(0.05)
            await wait_subscribed(runtime)
            assert (await publish(own, person.dm(bot.public_key, "after")))[2] is True
            answers = await dms_to(own, person, 2, bot.public_key)
            assert runner.counters.received == 2  # "before" is replayed but not answered again
        texts = [person.decrypt(bot.public_key, a["content"]) for a in answers]
        assert sorted(texts) == ["echo: after", "echo: before"]
    finally:
        own.stop()


@pytest.mark.anyio
async def test_a_restart_answers_dms_sent_while_down_and_nothing_twice(make_runtime, relay):
    bot = Keys.generate()
    person = Person()
    environ = {"NOSTR_PRIVATE_KEY": _secret_hex(bot)}
    first = make_runtime(config(relay), environ=environ)
    async with first.serving():
        await wait_subscribed(first)
        assert (await publish(relay, person.dm(bot.public_key, "before")))[2] is True
        await dms_to(relay, person, 1, bot.public_key)
    assert (await publish(relay, person.dm(bot.public_key, "while down")))[2] is True
    second = make_runtime(config(relay), environ=environ)
    async with second.serving():
        await wait_subscribed(second)
        answers = await dms_to(relay, person, 2, bot.public_key)
        await anyio.sleep(0.5)  # time enough for "before" to be answered again, were it to be
        answers = await dms_to(relay, person, 2, bot.public_key)
        assert second.channels.runners["nostr"].counters.received == 1
    texts = sorted(person.decrypt(bot.public_key, a["content"]) for a in answers)
    assert texts == ["echo: before", "echo: while down"]


@pytest.mark.anyio
async def test_unreachable_relay_is_reported(make_runtime):
    runtime = make_runtime(
        '[channels.nostr]\nrelays = ["ws://127.0.0.1:1"]\n',
        environ={"NOSTR_PRIVATE_KEY": _secret_hex(Keys.generate())},
    )
    async with runtime.serving():
        runner = runtime.channels.runners["nostr"]
        with anyio.fail_after(TIMEOUT):
            while runner.counters.last_error is None:
                await anyio.sleep(0.05)
    assert "no relay reachable" in runner.counters.last_error


@pytest.mark.anyio
async def test_stops_promptly_and_keeps_the_key_secret(make_runtime, relay, caplog):
    caplog.set_level(logging.DEBUG)
    bot = Keys.generate()
    secret = _secret_hex(bot)
    person = Person()
    runtime = make_runtime(config(relay), environ={"NOSTR_PRIVATE_KEY": secret})
    async with runtime.serving():
        await wait_subscribed(runtime)
        assert (await publish(relay, person.dm(bot.public_key, "hi")))[2] is True
        await dms_to(relay, person, 1, bot.public_key)
        channel = adapter(runtime)
        assert secret not in repr(channel)
        assert secret not in repr(channel._require_keys())
        with anyio.fail_after(6):
            await runtime.channels.stop_all()
    assert bot.public_key in caplog.text
    assert secret not in caplog.text


@pytest.mark.anyio
async def test_bad_private_key_is_a_clear_error(make_runtime, relay):
    runtime = make_runtime(config(relay), environ={"NOSTR_PRIVATE_KEY": "nsec1xyz"})
    async with runtime.serving():
        runner = runtime.channels.runners["nostr"]
        with anyio.fail_after(TIMEOUT):
            while runner.counters.last_error is None:
                await anyio.sleep(0.05)
    assert runner.counters.last_error.startswith("private_key: ")
    assert "nsec1xyz" not in runner.counters.last_error


@pytest.mark.anyio
async def test_relay_messages_other_than_events(caplog):
    bot = Keys.generate()
    delivered: list[Any] = []

    async def deliver(message: Any) -> None:
        delivered.append(message)

    async with httpx.AsyncClient() as http:
        ctx = ChannelContext(
            name="nostr",
            settings={"private_key": _Secret(_secret_hex(bot)), "relays": ["ws://x"]},
            http=http,
            deliver=deliver,
            log=logging.getLogger("t"),
            clock=time.monotonic,
        )
        channel = NostrChannel(ctx)
        caplog.set_level(logging.DEBUG)
        for message in (["EOSE", "s"], ["NOTICE", "slow down"], ["OK", "x", True, ""], "junk"):
            await channel._on_relay_message("ws://x", "s", json.dumps(message))
        await channel._on_relay_message("ws://x", "s", "{not json")
        with pytest.raises(ChannelError, match="closed the subscription: error: shutting down"):
            await channel._on_relay_message(
                "ws://x", "s", json.dumps(["CLOSED", "s", "error: shutting down"])
            )
        # a CLOSED for another subscription is not ours
        await channel._on_relay_message("ws://x", "s", json.dumps(["CLOSED", "other", "x"]))
    assert delivered == []
    assert "slow down" in caplog.text


# -- helpers ----------------------------------------------------------------------------------


class _Secret:
    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value


def _secret_hex(keys: Keys) -> str:
    return keys._secret.secret.hex()


async def wait_subscribed(runtime: Runtime, relays: int = 1) -> None:
    """Wait until the channel's session is connected (its REQ is sent before it counts)."""
    runner = runtime.channels.runners["nostr"]
    with anyio.fail_after(TIMEOUT):
        while runner.status != "running" or runner.adapter._since is None:
            await anyio.sleep(0.05)
    # the REQ reaches the relay right after the connection opens; give it a moment to register
    await anyio.sleep(0.3 * relays)


# -- known answers ----------------------------------------------------------------------------

# BIP-340's published test vectors (bitcoin/bips, bip-0340/test-vectors.csv; the comment
# column left out).
VECTORS = Path(__file__).parent / "data" / "bip340-test-vectors.csv"
BIP340 = list(csv.DictReader(VECTORS.read_text(encoding="utf-8").splitlines()))


@pytest.mark.parametrize("vector", BIP340, ids=lambda v: f"bip340-{v['index']}")
def test_bip340_vectors(vector) -> None:
    secret, public, aux = vector["secret key"], vector["public key"], vector["aux_rand"]
    message, signature = vector["message"], vector["signature"]
    valid = vector["verification result"] == "TRUE"
    if secret:
        keys = Keys(bytes.fromhex(secret))
        assert keys.public_key == public.lower()
        assert keys.sign(bytes.fromhex(message), bytes.fromhex(aux)).hex() == signature.lower()
    assert (
        schnorr_verify(bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature))
        is valid
    )


def test_nip19_vectors() -> None:
    # NIP-19's published examples
    nsec = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
    npub = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg"
    assert bech32_decode(nsec) == (
        "nsec",
        bytes.fromhex("67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"),
    )
    assert (
        public_key_hex(npub) == "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"
    )
    assert bech32_encode("npub", bytes.fromhex(public_key_hex(npub))) == npub
    assert Keys(nsec).public_key == Keys(bech32_decode(nsec)[1]).public_key
    with pytest.raises(NostrError, match="checksum"):
        bech32_decode(nsec[:-1] + "4")
    with pytest.raises(NostrError, match="not an npub key"):  # 31 bytes
        public_key_hex(bech32_encode("npub", bytes(31)))


def test_event_id_is_the_hash_of_the_canonical_array() -> None:
    expected = hashlib.sha256(
        '[0,"ab",1700000000,4,[["p","cd"]],"line\\n\\"quoted\\" ünï"]'.encode()
    ).hexdigest()
    assert event_id("ab", 1700000000, 4, [["p", "cd"]], 'line\n"quoted" ünï') == expected


def test_signed_events_verify_and_tampering_is_detected() -> None:
    keys = Keys.generate()
    event = sign_event(keys, kind=4, content="x", tags=[["p", "00" * 32]], created_at=1)
    verify_event(event)
    for field, value in (("content", "y"), ("created_at", 2), ("tags", []), ("kind", 1)):
        with pytest.raises(NostrError, match="id does not match"):
            verify_event({**event, field: value})
    other = sign_event(keys, kind=4, content="z", tags=[], created_at=1)
    with pytest.raises(NostrError, match="signature does not verify"):
        verify_event({**event, "sig": other["sig"]})
    with pytest.raises(NostrError, match="lacks"):
        verify_event({"id": event["id"]})


def test_nip04_round_trip_between_two_keys_and_against_plain_ecdh() -> None:
    alice, bob = Keys.generate(), Keys.generate()
    person = Person()
    message = "hello, wörld — " * 20
    sealed = nip04_encrypt(alice, bob.public_key, message)
    assert nip04_decrypt(bob, alice.public_key, sealed) == message
    assert alice.shared_x(bob.public_key) == bob.shared_x(alice.public_key)
    # an independent implementation (cryptography's ECDH) reads and writes the same format
    assert (
        person.decrypt(alice.public_key, nip04_encrypt(alice, person.keys.public_key, message))
        == message
    )
    assert (
        nip04_decrypt(alice, person.keys.public_key, person.encrypt(alice.public_key, "hi")) == "hi"
    )
    with pytest.raises(NostrError):
        nip04_decrypt(Keys.generate(), alice.public_key, sealed)
    with pytest.raises(NostrError):
        nip04_decrypt(bob, alice.public_key, "no-iv")


# -- conformance ----------------------------------------------------------------------------------


class NostrPeer:
    """A second key pair using the relay: DMs the bot and reads (decrypts) the bot's DMs."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.bot = Keys.generate()
        self.person = Person()
        self.settings = {"private_key": _secret_hex(self.bot), "relays": [relay.url]}
        self.target = self.person.keys.npub
        # a relay does not refuse recipients (any key may receive); see the oversized-event test
        self.refused_target = None
        self.unreachable_settings = {**self.settings, "relays": ["ws://127.0.0.1:1"]}

    async def inbound(self, text: str) -> None:
        # the channel subscribes right after it starts; a DM published before the REQ
        # arrives is still delivered (the REQ asks for everything since the start)
        reply = await publish(self.relay, self.person.dm(self.bot.public_key, text))
        assert reply[2] is True, reply

    async def received(self, count: int) -> list[str]:
        events = await dms_to(self.relay, self.person, count, self.bot.public_key)
        return [self.person.decrypt(self.bot.public_key, e["content"]) for e in events]


class TestNostrConformance(ChannelConformance):
    adapter = NostrChannel

    @pytest.fixture
    async def peer(self, relay) -> NostrPeer:
        return NostrPeer(relay)


@pytest.mark.anyio
async def test_test_message_goes_to_the_bots_own_key(make_runtime, relay):
    bot = Keys.generate()
    runtime = make_runtime(config(relay), environ={"NOSTR_PRIVATE_KEY": _secret_hex(bot)})
    async with runtime.serving():
        receipt = await runtime.channels.test("nostr", None)
        (event,) = await dms_to(relay, _AsPerson(bot), 1, bot.public_key)
        await anyio.sleep(0.3)
        counters = runtime.channels.runners["nostr"].counters
    assert receipt.message_ids == (event["id"],)
    assert nip04_decrypt(bot, bot.public_key, event["content"]) == "fangwire test message"
    assert counters.received == 0  # its own DM is not answered


class _AsPerson:
    def __init__(self, keys: Keys) -> None:
        self.keys = keys
