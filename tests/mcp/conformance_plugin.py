"""A test-only plugin: the fixture tools the official MCP conformance suite calls.

Registered on a test's plugin manager; its ``startup`` hook adds the tools to ``/mcp``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from fangwire.auth import Role
from fangwire.hookspecs import hookimpl
from fangwire_mcp.plugin import server_of
from fangwire_mcp.prompts import LocalPrompt, PromptArgument
from fangwire_mcp.resources import LocalResource, LocalResourceTemplate
from fangwire_mcp.tools import LocalTool, RawResult, ToolContext

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

# A 1x1 red PNG and a 1-sample WAV, made here rather than shipped.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
        "0000000c4944415408d763f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
    )
).decode()
WAV = base64.b64encode(
    b"RIFF" + (38).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
    + (16000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    + b"data" + (2).to_bytes(4, "little") + b"\x00\x00"
).decode()  # fmt: skip

NO_ARGS: Mapping[str, Any] = {"type": "object", "properties": {}}


def _fixed(*blocks: Mapping[str, Any], is_error: bool = False) -> Any:
    async def handler(runtime: Runtime, args: Mapping[str, Any], ctx: ToolContext) -> RawResult:
        return RawResult(content=blocks, is_error=is_error)

    return handler


async def _with_logging(runtime: Runtime, args: Mapping[str, Any], ctx: ToolContext) -> Any:
    await ctx.log("info", "Tool execution started")
    await anyio.sleep(0.05)
    await ctx.log("info", "Tool processing data")
    await anyio.sleep(0.05)
    await ctx.log("info", "Tool execution completed")
    return RawResult(content=({"type": "text", "text": "Logging completed"},))


async def _with_progress(runtime: Runtime, args: Mapping[str, Any], ctx: ToolContext) -> Any:
    for step in (0, 50, 100):
        await ctx.progress(step, 100)
        if step < 100:
            await anyio.sleep(0.05)
    return RawResult(content=({"type": "text", "text": "Progress completed"},))


FIXTURES = (
    LocalTool(
        "test_simple_text",
        "Returns a simple text response.",
        NO_ARGS,
        Role.VIEWER,
        _fixed({"type": "text", "text": "This is a simple text response for testing."}),
    ),
    LocalTool(
        "test_image_content",
        "Returns a 1x1 PNG.",
        NO_ARGS,
        Role.VIEWER,
        _fixed({"type": "image", "data": PNG, "mimeType": "image/png"}),
    ),
    LocalTool(
        "test_audio_content",
        "Returns a tiny WAV.",
        NO_ARGS,
        Role.VIEWER,
        _fixed({"type": "audio", "data": WAV, "mimeType": "audio/wav"}),
    ),
    LocalTool(
        "test_embedded_resource",
        "Returns an embedded text resource.",
        NO_ARGS,
        Role.VIEWER,
        _fixed(
            {
                "type": "resource",
                "resource": {
                    "uri": "test://embedded-resource",
                    "mimeType": "text/plain",
                    "text": "This is an embedded resource content.",
                },
            }
        ),
    ),
    LocalTool(
        "test_multiple_content_types",
        "Returns text, an image and a resource.",
        NO_ARGS,
        Role.VIEWER,
        _fixed(
            {"type": "text", "text": "Multiple content types test:"},
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {
                "type": "resource",
                "resource": {
                    "uri": "test://mixed-content-resource",
                    "mimeType": "application/json",
                    "text": '{"test":"data","value":123}',
                },
            },
        ),
    ),
    LocalTool(
        "test_error_handling",
        "Always fails.",
        NO_ARGS,
        Role.VIEWER,
        _fixed(
            {"type": "text", "text": "This tool intentionally returns an error for testing"},
            is_error=True,
        ),
    ),
    LocalTool(
        "test_tool_with_logging",
        "Sends three log notifications while it runs.",
        NO_ARGS,
        Role.VIEWER,
        _with_logging,
    ),
    LocalTool(
        "test_tool_with_progress",
        "Reports progress 0, 50 and 100 of 100.",
        NO_ARGS,
        Role.VIEWER,
        _with_progress,
    ),
    LocalTool(
        "json_schema_2020_12_tool",
        "Tool with JSON Schema 2020-12 features",
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {
                "address": {
                    "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                }
            },
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
            "additionalProperties": False,
        },
        Role.VIEWER,
        _fixed({"type": "text", "text": "ok"}),
    ),
)


def _user(*contents: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    return tuple({"role": "user", "content": content} for content in contents)


async def _simple(args: Mapping[str, str]) -> Any:
    return _user({"type": "text", "text": "This is a simple prompt for testing."})


async def _with_arguments(args: Mapping[str, str]) -> Any:
    text = f"Prompt with arguments: arg1='{args['arg1']}', arg2='{args['arg2']}'"
    return _user({"type": "text", "text": text})


async def _embedded(args: Mapping[str, str]) -> Any:
    resource = {
        "uri": args["resourceUri"],
        "mimeType": "text/plain",
        "text": "Embedded resource content for testing.",
    }
    return _user(
        {"type": "resource", "resource": resource},
        {"type": "text", "text": "Please process the embedded resource above."},
    )


async def _image(args: Mapping[str, str]) -> Any:
    return _user(
        {"type": "image", "data": PNG, "mimeType": "image/png"},
        {"type": "text", "text": "Please analyze the image above."},
    )


PROMPTS = (
    LocalPrompt("test_simple_prompt", "A simple prompt.", (), Role.VIEWER, _simple),
    LocalPrompt(
        "test_prompt_with_arguments",
        "A prompt with two arguments.",
        (
            PromptArgument("arg1", "First test argument", required=True),
            PromptArgument("arg2", "Second test argument", required=True),
        ),
        Role.VIEWER,
        _with_arguments,
    ),
    LocalPrompt(
        "test_prompt_with_embedded_resource",
        "A prompt embedding a resource.",
        (PromptArgument("resourceUri", "URI of the resource to embed", required=True),),
        Role.VIEWER,
        _embedded,
    ),
    LocalPrompt("test_prompt_with_image", "A prompt with an image.", (), Role.VIEWER, _image),
)


async def _static_text() -> Any:
    text = "This is the content of the static text resource."
    return ({"uri": "test://static-text", "mimeType": "text/plain", "text": text},)


async def _static_binary() -> Any:
    return ({"uri": "test://static-binary", "mimeType": "image/png", "blob": PNG},)


async def _templated(uri: str, variables: Mapping[str, str]) -> Any:
    ident = variables["id"]
    data = {"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"}
    return ({"uri": uri, "mimeType": "application/json", "text": json.dumps(data)},)


RESOURCES = (
    LocalResource(
        "test://static-text",
        "static-text",
        "A static text resource.",
        "text/plain",
        Role.VIEWER,
        _static_text,
    ),
    LocalResource(
        "test://static-binary",
        "static-binary",
        "A static PNG.",
        "image/png",
        Role.VIEWER,
        _static_binary,
    ),
    LocalResourceTemplate(
        "test://template/{id}/data",
        "template-data",
        "Data for an id.",
        "application/json",
        Role.VIEWER,
        _templated,
    ),
)


@hookimpl
def startup(runtime: Runtime) -> None:
    server = server_of(runtime)
    for tool in FIXTURES:
        server.add_tool(tool)
    for prompt in PROMPTS:
        server.add_prompt(prompt)
    for resource in RESOURCES:
        server.add_resource(resource)
