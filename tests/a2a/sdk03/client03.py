"""Run by the isolated a2a-sdk 0.3 interpreter: talk to the A2A server at ``argv[1]`` as a
0.3 client and print what happened as one JSON object (the test asserts on it)."""

import asyncio
import json
import sys
import uuid

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientJSONRPCError
from a2a.types import Message, Part, Role, TaskIdParams, TaskQueryParams, TextPart


def message(text):
    return Message(
        role=Role.user, message_id=str(uuid.uuid4()), parts=[Part(root=TextPart(text=text))]
    )


def texts(task):
    return [p.root.text for a in task.artifacts or [] for p in a.parts if p.root.kind == "text"]


async def error_code(call):
    try:
        await call
    except A2AClientJSONRPCError as exc:
        return exc.error.code
    return None


async def main(base):
    out = {}
    async with httpx.AsyncClient(timeout=10) as http:
        card = await A2ACardResolver(http, base).get_agent_card()
        out["card"] = {"url": card.url, "protocol": card.protocol_version, "name": card.name}
        for streaming in (False, True):
            client = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(
                card
            )
            kinds, task = [], None
            async for event in client.send_message(message(f"old sdk {streaming}")):
                task, update = event if isinstance(event, tuple) else (None, event)
                kinds.append(type(update).__name__ if update is not None else "Task")
            fetched = await client.get_task(TaskQueryParams(id=task.id))
            out["streaming" if streaming else "blocking"] = {
                "events": kinds,
                "state": task.status.state.value,
                "texts": texts(task),
                "fetched_state": fetched.status.state.value,
                "cancel_finished": await error_code(client.cancel_task(TaskIdParams(id=task.id))),
                "get_unknown": await error_code(client.get_task(TaskQueryParams(id="nope"))),
            }
    print(json.dumps(out))


asyncio.run(main(sys.argv[1]))
