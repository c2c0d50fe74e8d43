"""Adapting a JSON-object connection to the message streams the ``mcp`` SDK's client drives.

The SDK's ``Client`` accepts any async context manager that yields a pair of memory streams
(messages from the server, messages to the server). fangwire's own stdio transport speaks
plain JSON objects, so this module sits between the two: one task parses what the server
wrote into SDK messages, another serialises what the client sends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types
from mcp.client._transport import TransportStreams
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

log = logging.getLogger("fangwire.mcp.streams")

Send = Callable[[Mapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def parse_message(value: Mapping[str, Any]) -> SessionMessage | Exception:
    """An SDK message from a JSON object, or the validation error as a value."""
    try:
        message = mcp_types.jsonrpc_message_adapter.validate_python(value, by_name=False)
    except ValidationError as exc:
        return exc
    return SessionMessage(message)


def dump_message(message: SessionMessage) -> dict[str, Any]:
    """The JSON object for an SDK message, as the SDK's own transports write it."""
    dumped: dict[str, Any] = message.message.model_dump(
        by_alias=True, exclude_unset=True, mode="json"
    )
    return dumped


@asynccontextmanager
async def message_streams(send: Send, receive: Receive) -> AsyncIterator[TransportStreams]:
    """Streams for ``mcp.Client`` over ``send``/``receive``.

    ``receive`` raising any exception ends the server-to-client stream, so pending requests
    fail instead of waiting forever; a send that fails does the same.
    """
    to_client, from_server = anyio.create_memory_object_stream[SessionMessage | Exception](16)
    to_server, from_client = anyio.create_memory_object_stream[SessionMessage](16)

    async def reader() -> None:
        async with to_client:
            while True:
                try:
                    value = await receive()
                except Exception as exc:
                    log.debug("connection ended: %s", exc)
                    return
                try:
                    await to_client.send(parse_message(value))
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return

    async def writer() -> None:
        async with from_client:
            async for message in from_client:
                try:
                    await send(dump_message(message))
                except Exception as exc:
                    log.debug("could not write to the server: %s", exc)
                    await to_client.aclose()
                    return

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)
        try:
            yield from_server, to_server
        finally:
            tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                for stream in (from_server, to_server, to_client, from_client):
                    await stream.aclose()
