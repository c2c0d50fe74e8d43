"""The built-in ``openai`` model provider, against the local fake of the chat completions API."""

import logging
import socket
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

from fangwire.defaults.provider_openai import OpenAIProvider
from fangwire.models import ChatMessage, CompletionRequest, ModelError, Usage
from fangwire.testing.fake_openai import create_fake_openai
from fangwire.testing.live import live_server

pytestmark = pytest.mark.anyio

KEY = "sk-test-0123456789abcdef"
MODEL = "gpt-fake-1"
TIME_LIMIT = 20


@asynccontextmanager
async def serving_fake(make_runtime, *, config_text="", environ=None, key=KEY):
    """The runtime (serving) and the fake app, with the fake on a real loopback server."""
    app = create_fake_openai(api_key=key, models={MODEL, "other-model"})
    with anyio.fail_after(TIME_LIMIT):
        async with live_server(app) as url:
            runtime = make_runtime(config_text, environ=environ or {"OPENAI_API_KEY": key})
            async with runtime.serving():
                yield runtime, app, url + "/v1"


def request(base_url, *messages, model=MODEL, **settings):
    settings = {"base_url": base_url, "api_key_env": "OPENAI_API_KEY", **settings}
    messages = messages or (ChatMessage("user", "hello there"),)
    return CompletionRequest(model=model, messages=list(messages), settings=settings)


async def test_openai_is_registered_by_default(runtime):
    assert isinstance(runtime.model_providers["openai"], OpenAIProvider)
    assert runtime.pm.records["provider_openai"].status == "loaded"


async def test_completion_and_usage_mapping(make_runtime):
    async with serving_fake(make_runtime) as (runtime, app, base):
        app.cached_tokens = 2
        provider = runtime.model_providers["openai"]
        req = CompletionRequest(
            model=MODEL,
            messages=[ChatMessage("system", "be brief"), ChatMessage("user", "hello there")],
            max_tokens=50,
            temperature=0.5,
            settings={"base_url": base, "api_key_env": "OPENAI_API_KEY"},
        )
        completion = await provider.complete(req)
    assert completion.text == "fake: hello there"
    assert completion.finish_reason == "stop"
    assert completion.model == MODEL
    assert completion.provider == "openai"
    # prompt: (2 + 4) + (2 + 4); completion: 3 words
    assert completion.usage == Usage(input_tokens=12, output_tokens=3, cached_tokens=2)
    [received] = app.requests
    assert received["path"] == "/v1/chat/completions"
    assert received["headers"]["authorization"] == f"Bearer {KEY}"
    assert received["headers"]["content-type"] == "application/json"
    assert received["body"] == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
        "max_tokens": 50,
        "temperature": 0.5,
    }


async def test_streaming_deltas_then_final_usage(make_runtime):
    async with serving_fake(make_runtime) as (runtime, app, base):
        provider = runtime.model_providers["openai"]
        req = request(base, ChatMessage("user", "one two three"))
        chunks = [chunk async for chunk in provider.stream(req)]
    deltas = [c.delta for c in chunks[:-1]]
    assert deltas == ["fake: ", "one ", "two ", "three"]
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].delta == ""
    assert chunks[-1].usage == Usage(input_tokens=3 + 4, output_tokens=4)
    assert chunks[-1].finish_reason == "stop"
    body = app.requests[0]["body"]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert app.requests[0]["headers"]["accept"] == "text/event-stream"


async def test_streaming_max_tokens_reports_length(make_runtime):
    async with serving_fake(make_runtime) as (runtime, _app, base):
        req = CompletionRequest(
            model=MODEL,
            messages=[ChatMessage("user", "a b c d")],
            max_tokens=2,
            settings={"base_url": base, "api_key_env": "OPENAI_API_KEY"},
        )
        chunks = [c async for c in runtime.model_providers["openai"].stream(req)]
    assert "".join(c.delta for c in chunks) == "fake: a"
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage.output_tokens == 2


async def test_key_from_a_secret_and_settings_from_config(make_runtime):
    async with serving_fake(make_runtime, environ={"UNRELATED": "x"}) as (runtime, app, base):
        await runtime.secrets.set("openai_key", KEY)
        provider = runtime.model_providers["openai"]
        req = CompletionRequest(
            model=MODEL,
            messages=[ChatMessage("user", "from a secret")],
            settings={
                "base_url": base,
                "api_key_secret": "openai_key",
                "organization": "org-123",
                "extra_headers": {"X-Title": "fangwire"},
            },
        )
        completion = await provider.complete(req)
    assert completion.text == "fake: from a secret"
    headers = app.requests[0]["headers"]
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["openai-organization"] == "org-123"
    assert headers["x-title"] == "fangwire"


async def test_provider_config_table_is_used(make_runtime):
    app = create_fake_openai(api_key=KEY, models={MODEL})
    with anyio.fail_after(TIME_LIMIT):
        async with live_server(app) as url:
            config = f'[providers.openai]\nbase_url = "{url}/v1"\napi_key_env = "MY_KEY"\n'
            runtime = make_runtime(config, environ={"MY_KEY": KEY})
            async with runtime.serving():
                provider = runtime.model_providers["openai"]
                req = CompletionRequest(model=MODEL, messages=[ChatMessage("user", "cfg")])
                assert (await provider.complete(req)).text == "fake: cfg"
                # request settings override the table
                bad = CompletionRequest(
                    model=MODEL,
                    messages=[ChatMessage("user", "cfg")],
                    settings={"api_key_env": "NOT_SET"},
                )
                with pytest.raises(ModelError, match="NOT_SET"):
                    await provider.complete(bad)


async def test_wrong_key_is_a_401_without_the_key(make_runtime, caplog):
    wrong = "sk-wrong-key-that-must-not-leak"
    caplog.set_level(logging.DEBUG)
    async with serving_fake(make_runtime, environ={"OPENAI_API_KEY": wrong}) as (rt, _app, base):
        provider = rt.model_providers["openai"]
        with pytest.raises(ModelError) as info:
            await provider.complete(request(base))
        with pytest.raises(ModelError) as streamed:
            async for _ in provider.stream(request(base)):
                pass
    for error in (info.value, streamed.value):
        assert error.status == 401
        assert error.retryable is False
        assert "Incorrect API key provided" in error.reason
        assert wrong not in error.reason
        assert wrong not in str(error)
    assert wrong not in caplog.text


async def test_provider_message_echoing_the_key_is_scrubbed(make_runtime):
    async with serving_fake(make_runtime) as (runtime, app, base):
        app.fail_next.append((403, {"error": {"message": f"key {KEY} is not allowed here"}}))
        with pytest.raises(ModelError) as info:
            await runtime.model_providers["openai"].complete(request(base))
    assert info.value.status == 403
    assert KEY not in info.value.reason
    assert "is not allowed here" in info.value.reason


async def test_missing_key_is_a_401(make_runtime):
    async with serving_fake(make_runtime) as (runtime, _app, base):
        req = CompletionRequest(
            model=MODEL, messages=[ChatMessage("user", "hi")], settings={"base_url": base}
        )
        with pytest.raises(ModelError, match="didn't provide an API key") as info:
            await runtime.model_providers["openai"].complete(req)
    assert info.value.status == 401


async def test_unknown_model_is_a_404(make_runtime):
    async with serving_fake(make_runtime) as (runtime, _app, base):
        provider = runtime.model_providers["openai"]
        with pytest.raises(ModelError, match="`nope` does not exist") as info:
            await provider.complete(request(base, model="nope"))
        with pytest.raises(ModelError, match="does not exist") as streamed:
            async for _ in provider.stream(request(base, model="nope")):
                pass
    assert info.value.status == 404
    assert info.value.retryable is False
    assert streamed.value.status == 404


@pytest.mark.parametrize(
    ("status", "body", "reason", "retryable"),
    [
        (429, {"error": {"message": "Rate limit reached", "type": "requests"}}, "Rate limit", True),
        (500, {"error": {"message": "The server had an error"}}, "server had an error", True),
        (503, {}, "Service Unavailable", True),
        (502, {"detail": "no error object"}, "Bad Gateway", True),
        (400, {"error": {"message": "bad things", "param": "x"}}, "bad things", False),
        (404, {"error": "plain string error"}, "plain string error", False),
    ],
)
async def test_http_errors(make_runtime, status, body, reason, retryable):
    async with serving_fake(make_runtime) as (runtime, app, base):
        provider = runtime.model_providers["openai"]
        app.fail_next.extend([(status, body), (status, body)])
        with pytest.raises(ModelError, match=reason) as info:
            await provider.complete(request(base))
        with pytest.raises(ModelError, match=reason) as streamed:
            async for _ in provider.stream(request(base)):
                pass
        # the failures were consumed; the next call succeeds
        assert (await provider.complete(request(base))).text == "fake: hello there"
    for error in (info.value, streamed.value):
        assert error.status == status
        assert error.retryable is retryable


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_connection_refused_is_retryable(make_runtime):
    base = f"http://127.0.0.1:{free_port()}/v1"
    runtime = make_runtime(environ={"OPENAI_API_KEY": KEY})
    with anyio.fail_after(TIME_LIMIT):
        async with runtime.serving():
            provider = runtime.model_providers["openai"]
            with pytest.raises(ModelError, match="could not reach") as info:
                await provider.complete(request(base))
            with pytest.raises(ModelError, match="could not reach") as streamed:
                async for _ in provider.stream(request(base)):
                    pass
    for error in (info.value, streamed.value):
        assert error.retryable is True
        assert error.status is None
        assert KEY not in error.reason


async def test_timeout_is_retryable(make_runtime):
    async with serving_fake(make_runtime) as (runtime, app, base):
        app.delay_seconds = 0.5
        with pytest.raises(ModelError, match="did not answer in time") as info:
            await runtime.model_providers["openai"].complete(request(base, timeout_seconds=0.1))
    assert info.value.retryable is True


@pytest.mark.parametrize(
    "body",
    [
        {"id": "x", "object": "chat.completion", "choices": []},
        {"id": "x", "object": "chat.completion"},
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]},
        {"choices": [{"index": 0}]},
        ["not", "an", "object"],
    ],
)
async def test_empty_answers_are_errors(make_runtime, body):
    async with serving_fake(make_runtime) as (runtime, app, base):
        app.fail_next.append((200, body))
        with pytest.raises(ModelError, match="the model returned no answer") as info:
            await runtime.model_providers["openai"].complete(request(base))
    assert info.value.status == 200


async def test_tool_call_without_content_is_an_answer(make_runtime):
    body = {
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
    async with serving_fake(make_runtime) as (runtime, app, base):
        app.fail_next.append((200, body))
        completion = await runtime.model_providers["openai"].complete(request(base))
    assert completion.text == ""
    assert completion.finish_reason == "tool_calls"
    assert completion.usage == Usage(input_tokens=5, output_tokens=1)


async def test_empty_streamed_answer_is_an_error(make_runtime):
    async with serving_fake(make_runtime) as (runtime, app, base):
        app.next_answers.append("")
        with pytest.raises(ModelError, match="the model returned no answer"):
            async for _ in runtime.model_providers["openai"].stream(request(base)):
                pass
        app.next_answers.append("")
        with pytest.raises(ModelError, match="the model returned no answer"):
            await runtime.model_providers["openai"].complete(request(base))


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"base_url": "ftp://example.com"}, "base_url"),
        ({"base_url": "not a url"}, "base_url"),
        ({"base_url": 5}, "base_url"),
        ({"base_url": "https://user:pw@example.com/v1"}, "base_url"),
        ({"api_key_env": ""}, "api_key_env"),
        ({"api_key_env": 3}, "api_key_env"),
        ({"api_key_secret": "bad name!"}, "api_key_secret"),
        ({"api_key_env": "A", "api_key_secret": "b"}, "api_key_secret"),
        ({"organization": ""}, "organization"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": -1}, "timeout_seconds"),
        ({"timeout_seconds": True}, "timeout_seconds"),
        ({"timeout_seconds": "60"}, "timeout_seconds"),
        ({"timeout_seconds": float("nan")}, "timeout_seconds"),
        ({"extra_headers": "X: y"}, "extra_headers"),
        ({"extra_headers": {"X-A": 1}}, "extra_headers"),
        ({"extra_headers": {"Authorization": "Bearer other"}}, "extra_headers"),
        ({"extra_headers": {"X-A": "a\r\nInjected: 1"}}, "extra_headers"),
        ({"api_base": "https://example.com"}, "api_base"),
    ],
)
def test_settings_validation_names_the_bad_key(runtime, settings, key):
    with pytest.raises(ValueError, match=key):
        runtime.model_providers["openai"].validate_settings(settings)


def test_valid_settings_pass(runtime):
    runtime.model_providers["openai"].validate_settings({})
    runtime.model_providers["openai"].validate_settings(
        {
            "base_url": "http://127.0.0.1:11434/v1",
            "api_key_secret": "openai_key",
            "organization": "org-1",
            "timeout_seconds": 2.5,
            "extra_headers": {"HTTP-Referer": "https://example.com"},
        }
    )


async def test_invalid_settings_and_missing_keys_fail_the_call(make_runtime):
    runtime = make_runtime()
    with anyio.fail_after(TIME_LIMIT):
        async with runtime.serving():
            provider = runtime.model_providers["openai"]
            msgs = [ChatMessage("user", "hi")]
            cases = [
                ({"timeout_seconds": -5}, "timeout_seconds"),
                ({"api_key_env": "ABSENT"}, "ABSENT holding the key is not set"),
                ({"api_key_secret": "absent_secret"}, "absent_secret holding the key"),
            ]
            for settings, reason in cases:
                req = CompletionRequest(model=MODEL, messages=msgs, settings=settings)
                with pytest.raises(ModelError, match=reason) as info:
                    await provider.complete(req)
                assert info.value.retryable is False
            with pytest.raises(ModelError, match="model name is required"):
                await provider.complete(CompletionRequest(model="", messages=msgs))


async def test_fake_validates_requests_like_the_real_api():
    app = create_fake_openai(api_key=KEY, models={MODEL})
    auth = {"Authorization": f"Bearer {KEY}"}
    ok_messages = [{"role": "user", "content": "hi"}]
    cases = [
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"model": MODEL, "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": MODEL, "messages": ok_messages, "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL, "messages": ok_messages, "max_tokens": "5"}, "max_tokens"),
        ({"model": MODEL, "messages": ok_messages, "bogus": 1}, "bogus"),
        ({"model": MODEL, "messages": ok_messages, "stream_options": {}}, "stream_options"),
    ]
    with anyio.fail_after(TIME_LIMIT):
        async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
            for body, param in cases:
                response = await client.post("/v1/chat/completions", json=body, headers=auth)
                assert response.status_code == 400, body
                error = response.json()["error"]
                assert error["type"] == "invalid_request_error"
                assert error["param"] == param
                assert set(error) == {"message", "type", "param", "code"}
            response = await client.post(
                "/v1/chat/completions", json={"model": MODEL, "messages": ok_messages}
            )
            assert response.status_code == 401
            response = await client.get("/v1/models", headers=auth)
            assert [m["id"] for m in response.json()["data"]] == [MODEL]
            response = await client.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": ok_messages},
                headers=auth,
            )
            data = response.json()
            assert data["object"] == "chat.completion"
            assert data["choices"][0]["message"] == {
                "role": "assistant",
                "content": "fake: hi",
                "refusal": None,
            }
            assert data["usage"]["total_tokens"] == 5 + 2
