"""The official ``a2a-sdk`` 1.x client (A2A 1.0) against a live fangwire server: discovery,
blocking and streaming sends, get, list, cancel, resubscribe, and the typed errors."""

from __future__ import annotations

import uuid

import anyio
import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.client.card_resolver import parse_agent_card
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError

from fangwire.app import create_app
from fangwire.testing.live import live_server
from tests.a2a.helpers import SLOW_ENV, slow_model, spawn_slow

pytestmark = pytest.mark.anyio


def request(text, *, return_immediately=False):
    message = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    return SendMessageRequest(
        message=message,
        configuration=SendMessageConfiguration(return_immediately=return_immediately),
    )


async def events_of(client, req):
    with anyio.fail_after(15):
        return [event async for event in client.send_message(req)]


async def open_client(url, http, *, streaming):
    return await create_client(url, ClientConfig(httpx_client=http, streaming=streaming))


async def test_sdk_client_discovers_and_sends_blocking(make_runtime):
    runtime = make_runtime()
    async with live_server(create_app(runtime)) as url, httpx.AsyncClient(timeout=10) as http:
        client = await open_client(url, http, streaming=False)
        events = await events_of(client, request("hello sdk"))
        assert len(events) == 1 and events[0].HasField("task")
        task = events[0].task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task.artifacts[0].parts[0].text == "echo: hello sdk"
        got = await client.get_task(GetTaskRequest(id=task.id))
        assert got.status.state == TaskState.TASK_STATE_COMPLETED
        listed = await client.list_tasks(ListTasksRequest())
        assert [t.id for t in listed.tasks] == [task.id]
        rest = (await http.get(f"{url}/a2a/tasks/{task.id}")).json()
        assert rest["status"] == "completed"
        with pytest.raises(TaskNotCancelableError):
            await client.cancel_task(CancelTaskRequest(id=task.id))
        with pytest.raises(TaskNotFoundError):
            await client.get_task(GetTaskRequest(id="no-such-task"))
        await client.close()


async def test_sdk_client_streams(make_runtime):
    runtime = make_runtime()
    async with live_server(create_app(runtime)) as url, httpx.AsyncClient(timeout=10) as http:
        client = await open_client(url, http, streaming=True)
        events = await events_of(client, request("stream me"))
        await client.close()
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[0] == "task"
    assert "artifact_update" in kinds
    assert kinds[-1] == "status_update"
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    artifact = next(e.artifact_update for e in events if e.HasField("artifact_update"))
    assert artifact.artifact.parts[0].text == "echo: stream me"


async def test_sdk_client_talks_to_one_agent_through_its_own_card(make_runtime):
    runtime = make_runtime()
    async with live_server(create_app(runtime)) as url, httpx.AsyncClient(timeout=10) as http:
        cards = (await http.get(f"{url}/a2a/agents")).json()["items"]
        agent_url = cards[0]["url"]
        client = await create_client(
            parse_agent_card(cards[0]), ClientConfig(httpx_client=http, streaming=False)
        )
        events = await events_of(client, request("direct"))
        await client.close()
    assert agent_url.endswith(f"/a2a/agents/{cards[0]['id']}")
    assert events[0].task.artifacts[0].parts[0].text == "echo: direct"


async def test_sdk_client_submits_polls_subscribes_and_cancels(make_runtime):
    async with slow_model() as (_, config):
        runtime = make_runtime(config, environ=SLOW_ENV)
        async with live_server(create_app(runtime)) as url, httpx.AsyncClient(timeout=10) as http:
            await spawn_slow(runtime)
            slow_card = next(
                c
                for c in (await http.get(f"{url}/a2a/agents")).json()["items"]
                if c["name"] == "slow"
            )
            card = parse_agent_card(slow_card)
            client = await create_client(card, ClientConfig(httpx_client=http, streaming=False))
            streaming = await create_client(card, ClientConfig(httpx_client=http, streaming=True))
            events = await events_of(client, request("slowly", return_immediately=True))
            task = events[0].task
            assert task.status.state in (
                TaskState.TASK_STATE_SUBMITTED,
                TaskState.TASK_STATE_WORKING,
            )
            with anyio.fail_after(10):
                while True:
                    got = await client.get_task(GetTaskRequest(id=task.id))
                    if got.status.state == TaskState.TASK_STATE_WORKING:
                        break
                    await anyio.sleep(0.02)
            seen = []

            async def follow():
                async for event in streaming.subscribe(SubscribeToTaskRequest(id=task.id)):
                    seen.append(event)

            with anyio.fail_after(15):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(follow)
                    while not seen:
                        await anyio.sleep(0.02)
                    cancelled = await client.cancel_task(CancelTaskRequest(id=task.id))
            assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
            assert seen[0].WhichOneof("payload") == "task"
            assert seen[-1].status_update.status.state == TaskState.TASK_STATE_CANCELED
            again = await client.get_task(GetTaskRequest(id=task.id))
            assert again.status.state == TaskState.TASK_STATE_CANCELED
            await client.close()
            await streaming.close()
