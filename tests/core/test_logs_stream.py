"""GET /api/logs/stream: live log records over server-sent events."""

from __future__ import annotations

import json
import logging

import anyio
import httpx
import pytest

from fangwire.app import create_app
from fangwire.defaults import logs_routes
from fangwire.testing.live import live_server
from fangwire.testing.sse import read_events

pytestmark = pytest.mark.anyio

log = logging.getLogger("fangwire.test.stream")


@pytest.fixture
async def stream_url(make_runtime, monkeypatch):
    monkeypatch.setattr(logs_routes, "HEARTBEAT_SECONDS", 0.2)
    runtime = make_runtime("[http]\nmax_log_streams = 2\n")
    runtime.redactor.add("hunter2-secret-value")
    log.setLevel(logging.DEBUG)
    logging.getLogger("fangwire").addHandler(runtime.log_hub.handler)
    try:
        async with live_server(create_app(runtime)) as url:
            yield url
    finally:
        logging.getLogger("fangwire").removeHandler(runtime.log_hub.handler)


async def emit_later(*records: tuple[int, str]) -> None:
    await anyio.sleep(0.3)
    for level, message in records:
        log.log(level, message)


async def test_streams_records_as_they_happen(stream_url):
    async with httpx.AsyncClient(base_url=stream_url, timeout=10) as http:
        with anyio.fail_after(10):
            async with http.stream("GET", "/api/logs/stream?filter=marker-one") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["x-content-type-options"] == "nosniff"
                async with anyio.create_task_group() as tg:
                    tg.start_soon(emit_later, (logging.INFO, "marker-one hello"))
                    events = await read_events(response, 1)
    record = events[0]["data"]
    assert record["msg"] == "marker-one hello"
    assert record["level"] == "info"
    assert record["logger"] == "fangwire.test.stream"
    assert int(events[0]["id"]) > 0


async def test_level_and_filter_select_records(stream_url):
    async with httpx.AsyncClient(base_url=stream_url, timeout=10) as http:
        with anyio.fail_after(10):
            url = "/api/logs/stream?level=warning&filter=marker-two"
            async with http.stream("GET", url) as response:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(
                        emit_later,
                        (logging.INFO, "marker-two quiet"),
                        (logging.WARNING, "other loud"),
                        (logging.ERROR, "marker-two loud"),
                    )
                    events = await read_events(response, 1)
    assert [e["data"]["msg"] for e in events] == ["marker-two loud"]


async def test_secrets_are_redacted(stream_url):
    async with httpx.AsyncClient(base_url=stream_url, timeout=10) as http:
        with anyio.fail_after(10):
            async with http.stream("GET", "/api/logs/stream?filter=marker-three") as response:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(emit_later, (logging.INFO, "marker-three hunter2-secret-value"))
                    events = await read_events(response, 1)
    assert "hunter2-secret-value" not in json.dumps(events)
    assert "***" in events[0]["data"]["msg"]


async def test_heartbeat_comments_keep_the_stream_alive(stream_url):
    comments: list[str] = []
    async with httpx.AsyncClient(base_url=stream_url, timeout=10) as http:
        with anyio.fail_after(10):
            async with http.stream("GET", "/api/logs/stream?filter=nothing-matches") as response:
                await read_events(response, 0, comments=comments)
    assert comments and comments[0].startswith(":")


async def test_last_event_id_resumes_after_a_disconnect(stream_url):
    async with httpx.AsyncClient(base_url=stream_url, timeout=10) as http:
        with anyio.fail_after(10):
            async with http.stream("GET", "/api/logs/stream?filter=marker-four") as response:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(emit_later, (logging.INFO, "marker-four first"))
                    first = await read_events(response, 1)
            log.info("marker-four missed while away")
            headers = {"last-event-id": first[0]["id"]}
            async with http.stream(
                "GET", "/api/logs/stream?filter=marker-four", headers=headers
            ) as response:
                resumed = await read_events(response, 1)
    assert resumed[0]["data"]["msg"] == "marker-four missed while away"


@pytest.mark.parametrize(
    ("query", "headers", "fragment"),
    [
        ("level=loud", {}, "level"),
        ("filter=" + "x" * 201, {}, "filter"),
        ("", {"last-event-id": "abc"}, "Last-Event-ID"),
    ],
)
async def test_bad_parameters_are_400(stream_url, query, headers, fragment):
    async with httpx.AsyncClient(base_url=stream_url, timeout=10) as http:
        response = await http.get(f"/api/logs/stream?{query}", headers=headers)
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


async def test_concurrent_streams_are_capped(stream_url):
    async with httpx.AsyncClient(base_url=stream_url, timeout=10) as http:
        with anyio.fail_after(10):
            async with http.stream("GET", "/api/logs/stream") as one:
                async with http.stream("GET", "/api/logs/stream") as two:
                    assert (one.status_code, two.status_code) == (200, 200)
                    third = await http.get("/api/logs/stream")
                    assert third.status_code == 429
                    assert third.json()["error"]["code"] == "too_many_streams"
                    assert third.headers["retry-after"]
            # Closing a stream frees its slot.
            for _ in range(50):
                async with http.stream("GET", "/api/logs/stream") as again:
                    if again.status_code == 200:
                        break
                await anyio.sleep(0.05)
            assert again.status_code == 200


async def test_stream_requires_a_credential_when_a_key_is_set(make_runtime):
    runtime = make_runtime('api_key = "stream-key-0123456789"\n')
    async with live_server(create_app(runtime)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            assert (await http.get("/api/logs/stream")).status_code == 401
