"""The ``sidecar`` channel: LibreFang's NDJSON stdio protocol, with the real ntfy sidecar of the
``librefang-sdk`` package against a local ntfy server, and a scripted sidecar for the frames."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from fangwire.channels import ChannelError, OutboundMessage
from fangwire.runtime import Runtime
from fangwire.testing.channels import ChannelConformance
from fangwire.testing.live import live_server, threaded_server
from fangwire_channels.sidecar import RECEIPT_DETAIL, SidecarChannel
from tests.channels.fakes.ntfy import FakeNtfy

TIMEOUT = 30
TOPIC = "fangwire-alerts"
TOKEN = "tk_0123456789abcdefghijklmnopqrs"

pytestmark = pytest.mark.anyio


async def until(check: Callable[[], bool]) -> None:
    while not check():
        await anyio.sleep(0.02)


def base_environ(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}


def adapter(runtime: Runtime) -> SidecarChannel:
    channel = runtime.channels.running("sidecar").adapter
    assert isinstance(channel, SidecarChannel)
    return channel


async def wait_ready(runtime: Runtime) -> SidecarChannel:
    channel = adapter(runtime)
    with anyio.fail_after(TIMEOUT):
        while not channel._ready:
            await anyio.sleep(0.02)
    return channel


def ntfy_config(url: str, extra: str = "") -> str:
    return f"""
[channels.sidecar]
command = "{sys.executable}"
args = ["-m", "librefang.sidecar.adapters.ntfy"]
channel_type = "ntfy"
env = ["NTFY_TOPIC={TOPIC}", "NTFY_SERVER_URL={url}", "NTFY_TOKEN", "LIBREFANG_LOG_LEVEL=info"]
bot_user_ids = ["LibreFang"]
group_policy = "all"
{extra}
"""


@asynccontextmanager
async def ntfy_sidecar(
    make_runtime: Callable[..., Runtime], tmp_path: Path, extra: str = ""
) -> AsyncIterator[tuple[FakeNtfy, str, Runtime]]:
    # The topic needs the token: the sidecar works only if it was passed through.
    fake = FakeNtfy(tokens={TOKEN: {TOPIC}}, protected={TOPIC})
    async with live_server(fake.app) as url:
        environ = {**base_environ(tmp_path), "NTFY_TOKEN": TOKEN, "OPENAI_API_KEY": "sk-daemon"}
        runtime = make_runtime(ntfy_config(url, extra), environ=environ)
        async with runtime.serving():
            await wait_ready(runtime)
            with anyio.fail_after(TIMEOUT):
                await until(lambda: len(fake.subscriptions) >= 1)
            yield fake, url, runtime


async def publish(url: str, text: str, title: str) -> None:
    """What a person does with ntfy: publish to the topic (like ``curl -d``)."""
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{url}/{TOPIC}",
            content=text.encode(),
            headers={"Title": title, "Authorization": f"Bearer {TOKEN}"},
        )
        response.raise_for_status()


def answers(fake: FakeNtfy) -> list[str]:
    return [m["message"] for m in fake.messages if m.get("title") == "LibreFang"]


async def test_ntfy_sidecar_round_trip(make_runtime, tmp_path: Path) -> None:
    async with ntfy_sidecar(make_runtime, tmp_path) as (fake, url, runtime):
        channel = adapter(runtime)
        async with runtime.bus.subscribe("channel.inbound") as sub:
            await publish(url, "disk almost full", title="alice")
            with anyio.fail_after(TIMEOUT):
                inbound = await sub.receive()
                await until(lambda: len(answers(fake)) >= 1)
        # The answer comes back on the topic as the bot's own message: not answered again.
        await anyio.sleep(1.0)
        counters = runtime.channels.runners["sidecar"].counters
        ready = channel.ready_params
    assert answers(fake) == ["echo: disk almost full"]
    assert inbound.payload["sender"] == "alice"
    assert inbound.payload["is_group"] is True
    assert counters.received == 1
    assert counters.sent == 1
    assert ready["protocol_version"] == 1
    assert {p["headers"].get("authorization") for p in fake.publishes} == {f"Bearer {TOKEN}"}


async def test_the_receipt_says_delivery_is_unconfirmed(make_runtime, tmp_path: Path) -> None:
    async with ntfy_sidecar(make_runtime, tmp_path) as (fake, _url, runtime):
        receipt = await runtime.channels.send("sidecar", TOPIC, OutboundMessage(text="ping"))
        with anyio.fail_after(TIMEOUT):
            await until(lambda: answers(fake) == ["ping"])
        channel = adapter(runtime)
        direct = await channel.send(TOPIC, OutboundMessage(text="pong"))
    assert direct.detail == RECEIPT_DETAIL
    assert len(receipt.message_ids) == 1


async def test_a_crashed_sidecar_is_restarted(make_runtime, tmp_path: Path) -> None:
    async with ntfy_sidecar(make_runtime, tmp_path) as (fake, url, runtime):
        channel = adapter(runtime)
        runner = runtime.channels.running("sidecar")
        first_pid = channel.pid
        assert first_pid is not None
        subscribed = len(fake.subscriptions)
        os.killpg(first_pid, signal.SIGKILL)
        with anyio.fail_after(TIMEOUT):
            while runner.counters.last_error is None:
                await anyio.sleep(0.02)
            assert "sidecar stopped" in runner.counters.last_error
            while channel.pid == first_pid or not channel._ready:
                await anyio.sleep(0.05)
            await until(lambda: len(fake.subscriptions) > subscribed)
        await publish(url, "still there?", title="bob")
        with anyio.fail_after(TIMEOUT):
            await until(lambda: "echo: still there?" in answers(fake))
    assert answers(fake).count("echo: still there?") == 1


async def test_stop_shuts_the_sidecar_down_within_a_bound(
    make_runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(15):
        async with ntfy_sidecar(make_runtime, tmp_path) as (_fake, _url, runtime):
            channel = adapter(runtime)
            pid = channel.pid
            shown = repr(channel) + repr(channel.ctx)
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    with pytest.raises(ChannelError, match="not running"):
        await channel.send(TOPIC, OutboundMessage(text="late"))
    assert TOKEN not in shown
    assert TOKEN not in caplog.text
    assert "sidecar sidecar (ntfy) stderr" in caplog.text  # its log reached ours


# -- the frames, with a scripted sidecar ---------------------------------------------------------

SCRIPTED = """
import json, sys

def emit(method, **params):
    sys.stdout.write(json.dumps({"method": method, "params": params}) + "\\n")
    sys.stdout.flush()

record = open(sys.argv[1], "a")
print("a stray line that is not a frame", flush=True)
emit("ready", capabilities=["threads"], protocol_version=1)
for line in sys.stdin:
    frame = json.loads(line)
    record.write(json.dumps(frame) + "\\n")
    record.flush()
    method = frame.get("method")
    if method == "ready_ack":
        emit("typing", user_id="u1", user_name="U", is_typing=True)
        emit("qr_status", status="pending", message="scan me")
        emit("error", message="platform hiccup")
        emit("message", user_id="u1", user_name="Una", content={"Text": "hi in thread"},
             channel_id="room-7", is_group=True, thread_id="th-1", message_id="m-1",
             metadata={"was_mentioned": True})
        emit("message", user_id="u1", user_name="Una",
             content={"Command": {"name": "status", "args": ["now"]}}, channel_id="room-7")
    if method == "shutdown":
        break
"""


async def test_protocol_frames_with_a_scripted_sidecar(
    make_runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    script = tmp_path / "sidecar.py"
    script.write_text(textwrap.dedent(SCRIPTED))
    record = tmp_path / "commands.ndjson"
    config = f"""
[channels.sidecar]
command = "{sys.executable}"
args = ["-u", "{script}", "{record}"]
heartbeat_secs = 1
"""
    runtime = make_runtime(config, environ=base_environ(tmp_path))
    async with runtime.serving():
        await wait_ready(runtime)

        def sent() -> list[dict]:
            if not record.exists():
                return []
            return [json.loads(line) for line in record.read_text().splitlines()]

        with anyio.fail_after(TIMEOUT):
            while sum(1 for f in sent() if f["method"] == "send") < 2:
                await anyio.sleep(0.05)
            while not any(f["method"] == "heartbeat" for f in sent()):
                await anyio.sleep(0.05)
    frames = sent()
    methods = [f["method"] for f in frames]
    assert methods[0] == "ready_ack"
    assert methods[-1] == "shutdown"
    sends = {f["params"]["text"]: f["params"] for f in frames if f["method"] == "send"}
    assert sends["echo: hi in thread"]["channel_id"] == "room-7"
    assert sends["echo: hi in thread"]["thread_id"] == "th-1"
    assert sends["echo: hi in thread"]["user"] == {
        "platform_id": "u1",
        "display_name": "Una",
        "librefang_user": None,
    }
    assert "echo: /status now" in sends
    assert "platform hiccup" in caplog.text
    assert "invalid JSON" in caplog.text  # the stray line was skipped, the session went on
    assert "QR login pending scan me" in caplog.text


async def test_a_sidecar_that_never_gets_ready_is_reported(make_runtime, tmp_path: Path) -> None:
    config = f"""
[channels.sidecar]
command = "{sys.executable}"
args = ["-c", "import time; time.sleep(60)"]
ready_timeout_secs = 1
"""
    runtime = make_runtime(config, environ=base_environ(tmp_path))
    async with runtime.serving():
        runner = runtime.channels.running("sidecar")
        with pytest.raises(ChannelError, match="not ready"):
            await runtime.channels.send("sidecar", "x", OutboundMessage(text="hi"))
        with anyio.fail_after(TIMEOUT):
            while "within" not in (runner.counters.last_error or ""):
                await anyio.sleep(0.05)
    assert "within 1 s" in runner.counters.last_error


async def test_env_entries_are_checked(make_runtime, tmp_path: Path) -> None:
    config = f"""
[channels.sidecar]
command = "{sys.executable}"
env = ["BAD NAME=1"]
"""
    runtime = make_runtime(config, environ=base_environ(tmp_path))
    async with runtime.serving():
        runner = runtime.channels.running("sidecar")
        with anyio.fail_after(TIMEOUT):
            while runner.counters.last_error is None:
                await anyio.sleep(0.05)
    assert runner.counters.last_error == "env: 'BAD NAME' is not an environment variable name"


# -- conformance ---------------------------------------------------------------------------------


class NtfyPeer:
    """A person on an ntfy topic served through librefang-sdk's ntfy sidecar."""

    def __init__(self, fake: FakeNtfy, url: str) -> None:
        self.fake = fake
        self.url = url
        self.settings = {
            "command": sys.executable,
            "args": ["-m", "librefang.sidecar.adapters.ntfy"],
            "channel_type": "ntfy",
            "env": [f"NTFY_TOPIC={TOPIC}", f"NTFY_SERVER_URL={url}"],
            "bot_user_ids": ["LibreFang"],
            "group_policy": "all",
        }
        self.target = TOPIC
        # The sidecar protocol cannot report a refused send (see the module under test).
        self.refused_target = None
        self.unreachable_settings = {**self.settings, "command": "/nonexistent/fangwire-sidecar"}

    async def inbound(self, text: str) -> None:
        with anyio.fail_after(TIMEOUT):
            await until(lambda: self.fake.subscriber_count >= 1)
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{self.url}/{TOPIC}", content=text.encode(), headers={"Title": "alice"}
            )
            response.raise_for_status()

    async def received(self, count: int) -> list[str]:
        await until(lambda: len(answers(self.fake)) >= count)
        return answers(self.fake)


class TestSidecarConformance(ChannelConformance):
    adapter = SidecarChannel

    @pytest.fixture
    def peer(self) -> Iterator[NtfyPeer]:
        fake = FakeNtfy()
        with threaded_server(fake.app) as url:
            yield NtfyPeer(fake, url)
