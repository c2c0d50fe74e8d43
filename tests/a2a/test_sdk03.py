"""The a2a-sdk 0.3 line, from an isolated environment: its client against fangwire's server,
and fangwire's client against its server (``A2AStarletteApplication``)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from fangwire.app import create_app
from fangwire.testing.live import live_server

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent / "sdk03"


async def test_the_0_3_client_against_fangwire(make_runtime, sdk03_python):
    runtime = make_runtime()
    async with live_server(create_app(runtime)) as url:
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [str(sdk03_python), str(HERE / "client03.py"), url], check=False
            )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    out = json.loads(done.stdout)
    assert out["card"] == {"url": f"{url}/a2a", "protocol": "0.3", "name": "fangwire"}
    blocking, streaming = out["blocking"], out["streaming"]
    assert blocking["state"] == "completed" and blocking["fetched_state"] == "completed"
    assert blocking["texts"] == ["echo: old sdk False"]
    assert streaming["state"] == "completed" and streaming["texts"] == ["echo: old sdk True"]
    assert "TaskArtifactUpdateEvent" in streaming["events"]
    assert streaming["events"][-1] == "TaskStatusUpdateEvent"
    for result in (blocking, streaming):
        assert result["cancel_finished"] == -32002
        assert result["get_unknown"] == -32001


async def test_fangwire_client_against_a_0_3_server(make_runtime, make_client, sdk03_python):
    runtime = make_runtime('[a2a]\nallow_hosts = ["127.0.0.1"]\n')
    async with await anyio.open_process([str(sdk03_python), str(HERE / "server03.py")]) as process:
        try:
            with anyio.fail_after(30):
                line = b""
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive(1)
            url = f"http://127.0.0.1:{int(line)}"
            async with make_client(runtime) as http:
                with anyio.fail_after(30):
                    while True:  # the port is bound before uvicorn serves
                        found = await http.post("/api/a2a/discover", json={"url": url})
                        if found.status_code == 202:
                            break
                        await anyio.sleep(0.1)
                agent = found.json()
                assert agent["protocol"] == "0.3" and agent["name"] == "old sdk peer"
                approved = await http.post(f"/api/a2a/agents/{agent['id']}/approve")
                assert approved.status_code == 200
                sent = await http.post("/api/a2a/send", json={"url": url, "message": "from new"})
                task = sent.json()
                assert sent.status_code == 200, task
                assert task["status"] == "completed"
                assert task["result"]["parts"] == [{"type": "text", "text": "old peer: from new"}]
                polled = await http.get(f"/api/a2a/tasks/{task['task_id']}/status")
                assert polled.json()["status"] == "completed"
        finally:
            process.terminate()
