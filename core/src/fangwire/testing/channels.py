"""The channel conformance harness: the checks every adapter passes, first- or third-party.

Subclass :class:`ChannelConformance` in your adapter's test module, name the adapter, and give
a ``peer`` fixture that returns a :class:`ConformancePeer` talking to a real server (or a fake
of the platform's documented API)::

    from fangwire.testing.channels import ChannelConformance, ConformancePeer

    class TestIrcConformance(ChannelConformance):
        adapter = IrcChannel

        @pytest.fixture
        async def peer(self, irc_server):
            return IrcPeer(irc_server)   # implements ConformancePeer

The harness then checks: metadata is complete; a valid section round-trips and a bad one is
refused naming the key; secrets never appear in ``repr`` or logs; a message sent reaches the
peer and its receipt has ids; a long text arrives in chunks each within the limit; a message
from the peer is answered by the bound agent; a refused target raises ``ChannelError`` (when
the peer names one); an unreachable server makes the receive loop back off instead of spinning
(when the peer gives unreachable settings); the channel stops within a bound. Webhook adapters
also get signature accept/reject/replay checks when the peer can sign requests.

Requires the fixtures of :mod:`fangwire.testing.fixtures` (``make_runtime``) and anyio's pytest
plugin.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import anyio
import httpx
import pytest
import tomlkit

from fangwire.app import create_app
from fangwire.channelkit import settings as channel_settings
from fangwire.channelkit.chunking import measure
from fangwire.channelkit.manager import ChannelManager
from fangwire.channels import ChannelAdapter, ChannelConfigError, ChannelError, OutboundMessage
from fangwire.runtime import Runtime

#: Bound on any single wait in the harness.
TIMEOUT = 30.0
#: Capabilities the core understands.
KNOWN_CAPABILITIES = frozenset({"send", "receive", "webhook", "threads", "groups"})
KNOWN_CATEGORIES = frozenset(
    {"messaging", "social", "enterprise", "developer", "notifications", "media", "development"}
)
_KEY = re.compile(r"[a-z][a-z0-9_]*")


@runtime_checkable
class ConformancePeer(Protocol):
    """A real client of the platform the adapter talks to.

    ``settings`` is a complete ``[channels.<name>]`` section for the adapter, secrets included
    as plain strings (the harness stores those in the keyring, never in config.toml). ``target``
    is where sends go and where the peer reads them; ``refused_target`` is a target the
    platform refuses (or None when it cannot refuse); ``unreachable_settings`` point the adapter
    at a closed port (or None when that does not apply, e.g. webhook-only adapters).
    """

    settings: Mapping[str, Any]
    target: str
    refused_target: str | None
    unreachable_settings: Mapping[str, Any] | None

    async def inbound(self, text: str) -> None:
        """Write ``text`` to the bot as a user of the platform would (a direct message)."""

    async def received(self, count: int) -> Sequence[str]:
        """Wait until the peer has received at least ``count`` messages from the bot; return
        every message it received from the bot so far, oldest first."""


@runtime_checkable
class ThrottlingPeer(ConformancePeer, Protocol):
    """A peer (usually a fake of an HTTP API) that can refuse or stall the next send."""

    def throttle_next(self, retry_after: float) -> None:
        """Answer the next send with the platform's rate-limit refusal asking for
        ``retry_after`` seconds; later sends are served normally."""

    def stall_next(self) -> None:
        """Never answer the next send (the connection stays open)."""

    def attempts(self) -> int:
        """Send requests the peer has seen, refused and stalled ones included."""


@runtime_checkable
class SigningPeer(ConformancePeer, Protocol):
    """A peer of a webhook adapter that can produce the platform's signed pushes."""

    def signed_push(self, text: str) -> tuple[bytes, dict[str, str]]:
        """A fresh push carrying ``text``: the raw body and its (valid) headers."""

    def forge(self, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        """The same headers with the signature broken."""


def _section_and_secrets(
    adapter: type[ChannelAdapter], settings: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    fields = channel_settings.field_map(adapter)
    section: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    for key, value in settings.items():
        if key in fields and fields[key].secret:
            secrets[key] = str(value)
        else:
            section[key] = value
    return section, secrets


def _toml(name: str, section: Mapping[str, Any]) -> str:
    document = tomlkit.document()
    channels = tomlkit.table(is_super_table=True)
    channels[name] = dict(section)
    document["channels"] = channels
    return tomlkit.dumps(document)


class ChannelConformance:
    """Base class of an adapter's conformance tests (see the module docstring)."""

    adapter: ClassVar[type[ChannelAdapter]]
    #: The agent that answers in the round-trip check and what it answers.
    agent_reply_prefix: ClassVar[str] = "echo: "

    # -- helpers ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.adapter.name

    async def configured(
        self,
        make_runtime: Any,
        peer: ConformancePeer | None,
        settings: Mapping[str, Any] | None = None,
        **policy: Any,
    ) -> Runtime:
        """A runtime (not yet serving) with the adapter configured from ``settings`` (default:
        the peer's). A peer with an ``attach(runtime)`` method (an in-process platform) is
        handed the runtime."""
        if settings is None:
            settings = peer.settings if peer is not None else {}
        section, secrets = _section_and_secrets(self.adapter, settings)
        section.setdefault("dm_policy", "respond")
        section.update(policy)
        runtime: Runtime = make_runtime(_toml(self.name, section))
        for key, value in secrets.items():
            await runtime.secrets.set(channel_settings.secret_name(self.name, key), value)
        attach = getattr(peer, "attach", None)
        if attach is not None:
            attach(runtime)
        return runtime

    async def wait_running(self, runtime: Runtime) -> None:
        with anyio.fail_after(TIMEOUT):
            while True:
                runner = runtime.channels.runners.get(self.name)
                if runner is not None and runner.state == "running" and runner.started:
                    return
                if runner is None and self.name in runtime.channels.problems:
                    raise AssertionError(runtime.channels.problems[self.name])
                await anyio.sleep(0.02)

    # -- metadata and configuration -----------------------------------------------------------

    def test_metadata_is_complete(self) -> None:
        cls = self.adapter
        assert _KEY.fullmatch(cls.name), f"name {cls.name!r} must be a lower-case identifier"
        assert cls.display_name, "display_name is empty"
        assert cls.description, "description is empty"
        assert cls.category in KNOWN_CATEGORIES, f"unknown category {cls.category!r}"
        assert len(cls.icon) == 2, "icon must be a two-letter code"
        assert cls.capabilities <= KNOWN_CAPABILITIES, cls.capabilities - KNOWN_CAPABILITIES
        assert "send" in cls.capabilities
        keys = [f.key for f in cls.config_fields]
        assert len(keys) == len(set(keys)), "duplicate field keys"
        for field in cls.config_fields:
            assert _KEY.fullmatch(field.key), f"field key {field.key!r}"
            assert field.key not in channel_settings.POLICY_KEYS, f"{field.key} is a policy key"
            assert field.help, f"field {field.key} has no help text"
            if field.secret:
                assert field.env, f"secret field {field.key} names no environment variable"
            if field.type == "select":
                assert field.options, f"select field {field.key} has no options"
        assert cls.max_message_length and cls.max_message_length > 0, "no max_message_length"
        overrides_receive = cls.receive is not ChannelAdapter.receive
        assert ("receive" in cls.capabilities) == overrides_receive, "receive capability vs method"
        overrides_webhook = cls.handle_webhook is not ChannelAdapter.handle_webhook
        assert ("webhook" in cls.capabilities) == overrides_webhook, "webhook capability vs method"
        if cls.requires_extra is None:
            assert cls.is_available()

    # Async, like every test taking ``peer``: a peer that runs servers is an async fixture.
    @pytest.mark.anyio
    async def test_valid_settings_round_trip(self, peer: ConformancePeer) -> None:
        section, _ = _section_and_secrets(self.adapter, peer.settings)
        split = channel_settings.split_section(self.name, self.adapter, section)
        fields = channel_settings.field_map(self.adapter)
        for key, value in split.fields.items():
            if isinstance(value, list):
                as_text = ", ".join(value)
            elif isinstance(value, bool):
                as_text = str(value).lower()
            else:
                as_text = str(value)
            assert channel_settings.coerce(fields[key], as_text) == value, key

    @pytest.mark.anyio
    async def test_bad_settings_name_the_key(self, peer: ConformancePeer) -> None:
        section, _ = _section_and_secrets(self.adapter, peer.settings)
        with pytest.raises(ChannelConfigError, match="no_such_setting"):
            channel_settings.split_section(
                self.name, self.adapter, {**section, "no_such_setting": 1}
            )
        secret = next((f for f in self.adapter.config_fields if f.secret), None)
        if secret is not None:
            with pytest.raises(ChannelConfigError, match=f"{secret.key}.*secret"):
                channel_settings.split_section(
                    self.name, self.adapter, {**section, secret.key: "x"}
                )
        for field in self.adapter.config_fields:
            if field.type == "number":
                with pytest.raises(ChannelConfigError, match=field.key):
                    channel_settings.split_section(
                        self.name, self.adapter, {**section, field.key: "not a number"}
                    )

    @pytest.mark.anyio
    async def test_missing_required_settings_keep_it_stopped(self, make_runtime: Any) -> None:
        required = [f.key for f in self.adapter.config_fields if f.required]
        if not required:
            return
        runtime = await self.configured(make_runtime, None, {})
        async with runtime.serving():
            assert self.name not in runtime.channels.runners
            problem = runtime.channels.problems[self.name]
            assert required[0] in problem

    # -- behaviour against the peer -------------------------------------------------------------

    @pytest.mark.anyio
    async def test_send_reaches_the_peer(self, make_runtime: Any, peer: ConformancePeer) -> None:
        runtime = await self.configured(make_runtime, peer)
        async with runtime.serving():
            await self.wait_running(runtime)
            with anyio.fail_after(TIMEOUT):
                receipt = await runtime.channels.send(
                    self.name, peer.target, OutboundMessage(text="conformance hello")
                )
                got = await peer.received(1)
        assert receipt.message_ids and all(receipt.message_ids)
        assert any("conformance hello" in text for text in got)

    @pytest.mark.anyio
    async def test_long_text_arrives_in_chunks_within_the_limit(
        self, make_runtime: Any, peer: ConformancePeer
    ) -> None:
        limit = self.adapter.max_message_length or 0
        unit = self.adapter.length_unit
        words = ["wörd", "日本", "fin"]
        text = " ".join(words[i % 3] + str(i) for i in range(limit // 2 + 10))
        while measure(text, unit) < 2 * limit:
            text += " more"
        runtime = await self.configured(make_runtime, peer)
        async with runtime.serving():
            await self.wait_running(runtime)
            with anyio.fail_after(TIMEOUT * 2):
                receipt = await runtime.channels.send(
                    self.name, peer.target, OutboundMessage(text=text)
                )
                got = await peer.received(len(receipt.message_ids))
        assert len(receipt.message_ids) >= 3
        assert len(got) == len(receipt.message_ids)
        assert all(measure(part, unit) <= limit for part in got)
        assert " ".join(got).split() == text.split()

    @pytest.mark.anyio
    async def test_inbound_is_answered_by_the_bound_agent(
        self, make_runtime: Any, peer: ConformancePeer
    ) -> None:
        runtime = await self.configured(make_runtime, peer, agent="assistant")
        async with runtime.serving():
            await self.wait_running(runtime)
            with anyio.fail_after(TIMEOUT):
                await peer.inbound("conformance ping")
                while True:
                    got = await peer.received(1)
                    if any(f"{self.agent_reply_prefix}conformance ping" in t for t in got):
                        break
                    await anyio.sleep(0.05)

    @pytest.mark.anyio
    async def test_refused_send_raises(self, make_runtime: Any, peer: ConformancePeer) -> None:
        if peer.refused_target is None:
            return
        runtime = await self.configured(make_runtime, peer)
        async with runtime.serving():
            await self.wait_running(runtime)
            with anyio.fail_after(TIMEOUT), pytest.raises(ChannelError):
                await runtime.channels.send(
                    self.name, peer.refused_target, OutboundMessage(text="nobody hears this")
                )
            assert runtime.channels.runners[self.name].counters.sent == 0

    @pytest.mark.anyio
    async def test_unreachable_server_backs_off(
        self, make_runtime: Any, peer: ConformancePeer
    ) -> None:
        if peer.unreachable_settings is None:
            return
        runtime = await self.configured(make_runtime, peer, peer.unreachable_settings)
        async with runtime.serving():
            runner = runtime.channels.runners[self.name]
            await anyio.sleep(2.5)
            # At least one second between sessions: never a hot loop.
            assert 1 <= runner.loop.attempts <= 3, runner.loop.attempts
            assert runner.status.startswith("error")

    @pytest.mark.anyio
    async def test_secrets_never_in_repr_or_logs(
        self, make_runtime: Any, peer: ConformancePeer, caplog: pytest.LogCaptureFixture
    ) -> None:
        _, secrets = _section_and_secrets(self.adapter, peer.settings)
        caplog.set_level(logging.DEBUG)
        runtime = await self.configured(make_runtime, peer)
        async with runtime.serving():
            await self.wait_running(runtime)
            with anyio.fail_after(TIMEOUT):
                await runtime.channels.send(self.name, peer.target, OutboundMessage(text="s"))
            runner = runtime.channels.runners[self.name]
            shown = repr(runner.adapter) + repr(runner.adapter.ctx) + repr(runner.adapter.__dict__)
        for value in secrets.values():
            if len(value) >= 4:
                assert value not in shown
                assert value not in caplog.text

    @pytest.mark.anyio
    async def test_stops_within_a_bound(self, make_runtime: Any, peer: ConformancePeer) -> None:
        runtime = await self.configured(make_runtime, peer)
        with anyio.fail_after(TIMEOUT):
            async with runtime.serving():
                await self.wait_running(runtime)
                manager: ChannelManager = runtime.channels
        assert manager.runners == {}

    @pytest.mark.anyio
    async def test_rate_limited_send_is_retried_once_delivered(
        self, make_runtime: Any, peer: ConformancePeer
    ) -> None:
        if not isinstance(peer, ThrottlingPeer):
            return
        runtime = await self.configured(make_runtime, peer)
        async with runtime.serving():
            await self.wait_running(runtime)
            before = peer.attempts()
            peer.throttle_next(0.2)
            with anyio.fail_after(TIMEOUT):
                receipt = await runtime.channels.send(
                    self.name, peer.target, OutboundMessage(text="after the limit")
                )
                got = await peer.received(1)
        assert peer.attempts() - before == 2
        assert len(receipt.message_ids) == 1
        assert [t for t in got if "after the limit" in t] == ["after the limit"]

    @pytest.mark.anyio
    async def test_stalled_send_times_out_as_an_error(
        self, make_runtime: Any, peer: ConformancePeer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        if not isinstance(peer, ThrottlingPeer):
            return
        from fangwire.channelkit import manager as manager_module

        monkeypatch.setattr(manager_module, "SEND_TIMEOUT_SECONDS", 0.5)
        runtime = await self.configured(make_runtime, peer)
        async with runtime.serving():
            await self.wait_running(runtime)
            peer.stall_next()
            with anyio.fail_after(TIMEOUT), pytest.raises(ChannelError, match="no answer"):
                await runtime.channels.send(self.name, peer.target, OutboundMessage(text="lost"))
            assert runtime.channels.runners[self.name].counters.sent == 0

    # -- webhook adapters -----------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_signed_pushes_accepted_forged_and_replayed_refused(
        self, make_runtime: Any, peer: ConformancePeer
    ) -> None:
        if "webhook" not in self.adapter.capabilities or not isinstance(peer, SigningPeer):
            return
        runtime = await self.configured(make_runtime, peer, agent="assistant")
        app = create_app(runtime)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))
        url = f"/channels/{self.name}/webhook"
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:4545") as http,
        ):
            await self.wait_running(runtime)
            body, headers = peer.signed_push("signed ping")
            forged = await http.post(url, content=body, headers=peer.forge(body, headers))
            assert forged.status_code in (401, 403), forged.text
            accepted = await http.post(url, content=body, headers=headers)
            assert accepted.status_code < 300, accepted.text
            replayed = await http.post(url, content=body, headers=headers)
            assert replayed.status_code in (401, 403, 409), replayed.text
            with anyio.fail_after(TIMEOUT):
                while not any("signed ping" in t for t in await peer.received(1)):
                    await anyio.sleep(0.05)
            assert runtime.channels.runners[self.name].counters.received == 1
