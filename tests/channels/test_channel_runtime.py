"""The channel runtime: supervision of receive loops, send retries, and settings resolution."""

from __future__ import annotations

from typing import ClassVar

import anyio
import pytest

from fangwire.channelkit import manager as manager_module
from fangwire.channelkit import settings as channel_settings
from fangwire.channelkit.policy import ChannelPolicy, UserRateLimit
from fangwire.channels import (
    ChannelAdapter,
    ChannelConfigError,
    ChannelError,
    ConfigField,
    DeliveryReceipt,
    InboundMessage,
    OutboundMessage,
)
from fangwire.hookspecs import hookimpl
from fangwire.plugins import create_plugin_manager

pytestmark = pytest.mark.anyio


class Flaky(ChannelAdapter):
    """Receive sessions that fail at once; sends that follow a script of outcomes."""

    name = "flaky"
    capabilities = frozenset({"send", "receive"})
    config_fields = (
        ConfigField("password", secret=True, env="FLAKY_PASSWORD"),
        ConfigField("mode", type="select", options=("a", "b"), default="a"),
    )
    max_message_length = 50
    script: ClassVar[list[object]] = []
    calls: ClassVar[list[str]] = []
    sessions: ClassVar[int] = 0
    starts: ClassVar[int] = 0

    async def start(self) -> None:
        Flaky.starts += 1

    async def receive(self) -> None:
        Flaky.sessions += 1
        raise ConnectionRefusedError("connection refused")

    async def send(self, target: str, message: OutboundMessage) -> DeliveryReceipt:
        Flaky.calls.append(message.text)
        outcome = Flaky.script.pop(0) if Flaky.script else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await anyio.sleep_forever()
        return DeliveryReceipt(self.ctx.name, target, (str(len(Flaky.calls)),))


class plugin:
    @staticmethod
    @hookimpl
    def register_channels(register):
        register(Flaky)


@pytest.fixture(autouse=True)
def _reset():
    Flaky.script, Flaky.calls = [], []
    Flaky.sessions = Flaky.starts = 0


@pytest.fixture
def make(make_runtime):
    def build(text: str = "[channels.flaky]\n", environ=None):
        pm = create_plugin_manager(environ={}, strict=True)
        pm.register_object(plugin, name="flaky-plugin")
        return make_runtime(text, pm=pm, environ=environ)

    return build


async def test_failing_receive_loop_backs_off_and_reports(make):
    runtime = make()
    async with runtime.serving():
        await anyio.sleep(2.5)
        runner = runtime.channels.runners["flaky"]
        assert 1 <= Flaky.sessions <= 3  # at least a second between sessions
        assert Flaky.starts == 1  # start() is not repeated for a dropped receive session
        assert runner.status == "error: ConnectionRefusedError: connection refused"


async def test_one_receive_loop_per_channel_across_reloads(make):
    runtime = make()
    async with runtime.serving():
        first = runtime.channels.runners["flaky"]
        await runtime.channels.reload()
        await runtime.channels.start_all()
        assert runtime.channels.runners["flaky"] is first
        assert len(runtime.channels.runners) == 1


async def test_retryable_refusal_is_retried_with_the_asked_delay(make):
    Flaky.script = [ChannelError("slow down", retryable=True, retry_after=0.1), "ok"]
    runtime = make()
    async with runtime.serving():
        receipt = await runtime.channels.send("flaky", "t", OutboundMessage(text="hi"))
    assert Flaky.calls == ["hi", "hi"] and receipt.message_ids == ("2",)


async def test_final_refusal_is_raised_and_not_counted(make):
    Flaky.script = [ChannelError("busy", retryable=True)] * 3
    runtime = make()
    async with runtime.serving():
        with pytest.raises(ChannelError, match="busy"):
            await runtime.channels.send("flaky", "t", OutboundMessage(text="hi"))
        counters = runtime.channels.runners["flaky"].counters
        assert (counters.sent, counters.send_failures) == (0, 1)
    assert len(Flaky.calls) == 3


async def test_long_retry_after_is_reported_not_waited(make):
    Flaky.script = [ChannelError("rate limited", retryable=True, retry_after=600)]
    runtime = make()
    async with runtime.serving():
        with anyio.fail_after(5), pytest.raises(ChannelError, match="rate limited"):
            await runtime.channels.send("flaky", "t", OutboundMessage(text="hi"))
    assert len(Flaky.calls) == 1


async def test_permanent_refusal_is_not_retried(make):
    Flaky.script = [ChannelError("chat not found")]
    runtime = make()
    async with runtime.serving():
        with pytest.raises(ChannelError, match="chat not found"):
            await runtime.channels.send("flaky", "t", OutboundMessage(text="hi"))
    assert len(Flaky.calls) == 1


async def test_hanging_send_times_out_and_is_not_repeated(make, monkeypatch):
    monkeypatch.setattr(manager_module, "SEND_TIMEOUT_SECONDS", 0.2)
    Flaky.script = ["hang"]
    runtime = make()
    async with runtime.serving():
        with pytest.raises(ChannelError, match=r"no answer within 0\.2 s"):
            await runtime.channels.send("flaky", "t", OutboundMessage(text="hi"))
    assert len(Flaky.calls) == 1  # a timed-out send may have landed: never sent twice


async def test_partial_chunked_send_says_how_far_it_got(make):
    Flaky.script = ["ok", ChannelError("refused")]
    runtime = make()
    async with runtime.serving():
        with pytest.raises(ChannelError, match=r"after 1 of 2 parts"):
            await runtime.channels.send("flaky", "t", OutboundMessage(text="word " * 15))


async def test_secret_resolution_order(make):
    env = {"FLAKY_PASSWORD": "from-default-env", "OTHER": "from-named-env"}
    runtime = make('[channels.flaky]\npassword_env = "OTHER"\n', environ=env)
    resolved = await runtime.channels.resolve("flaky")
    assert resolved.values["password"].reveal() == "from-named-env"
    await runtime.secrets.set("channel:flaky:password", "from-keyring")
    resolved = await runtime.channels.resolve("flaky")
    assert resolved.values["password"].reveal() == "from-keyring"
    assert "from-keyring" not in repr(resolved)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"password": "x"}, "channels.flaky.password: is a secret"),
        ({"mode": "c"}, "channels.flaky.mode: expected one of a, b"),
        ({"password_env": "not a name"}, "expected an environment variable name"),
        ({"mode_env": "X"}, "channels.flaky.mode_env: mode is not a secret field"),
        ({"bogus": 1}, "channels.flaky.bogus: unknown key"),
    ],
)
def test_section_errors_name_the_key(table, message):
    with pytest.raises(ChannelConfigError, match=message.replace(".", r"\.")):
        channel_settings.split_section("flaky", Flaky, table)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"dm_policy": "sometimes"}, "channels.x.dm_policy"),
        ({"rate_limit_per_user": -1}, "channels.x.rate_limit_per_user"),
        ({"chat_agents": {"#a": 5}}, "channels.x.chat_agents"),
        ({"allowed_users": [1]}, "channels.x.allowed_users"),
        ({"overrides": []}, "channels.x.overrides"),
    ],
)
def test_policy_errors_name_the_key(raw, message):
    with pytest.raises(ChannelConfigError, match=message.replace(".", r"\.")):
        ChannelPolicy.parse("x", raw)


def _msg(**kw):
    base = {"channel": "x", "sender": "u", "chat": "c", "text": "hi"}
    return InboundMessage(**{**base, **kw})


def test_policy_decisions():
    policy = ChannelPolicy.parse(
        "x",
        {"allowed_users": ["u"], "overrides": {"group_policy": "all"}, "chat_agents": {"c": "a"}},
    )
    assert policy.refusal(_msg()) is None
    assert policy.refusal(_msg(sender="v")) == "user not allowed"
    assert policy.refusal(_msg(is_group=True)) is None
    assert policy.agent_for("c", "fallback") == "a" and policy.agent_for("d", "fb") == "fb"
    mention = ChannelPolicy.parse("x", {})
    assert mention.refusal(_msg(is_group=True)) == "not mentioned"
    assert mention.refusal(_msg(is_group=True, mentioned=True)) is None
    assert ChannelPolicy.parse("x", {"dm_policy": "ignore"}).refusal(_msg()) is not None
    assert ChannelPolicy.parse("x", {"dm_policy": "allowed_only"}).refusal(_msg()) is not None
    rooms = ChannelPolicy.parse("x", {"allowed_rooms": ["r"]})
    assert rooms.refusal(_msg()) == "chat not allowed"


def test_user_rate_limit_window():
    now = [0.0]
    limit = UserRateLimit(2, lambda: now[0])
    assert [limit.allow("u") for _ in range(3)] == [True, True, False]
    assert limit.allow("v")
    now[0] = 60.0
    assert limit.allow("u")


async def test_adapter_state_survives_a_restart(make):
    first = make()
    async with first.serving():
        state = first.channels.runners["flaky"].adapter.ctx.state
        assert await state.get("position") is None
        await state.set("position", "42")
        await state.set("position", "43")
    second = make()
    async with second.serving():
        state = second.channels.runners["flaky"].adapter.ctx.state
        assert await state.get("position") == "43"
        rows = await second.store.fetch_all("SELECT channel, key FROM channel_state")
    assert rows == [{"channel": "flaky", "key": "position"}]
