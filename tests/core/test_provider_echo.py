"""The built-in ``echo`` model provider."""

import anyio
import pytest

from fangwire.defaults.provider_echo import EchoProvider, count_input_tokens, split_words
from fangwire.models import ChatMessage, CompletionRequest, ModelError, Usage

pytestmark = pytest.mark.anyio


def request(*messages, model="echo-1", **kwargs):
    return CompletionRequest(model=model, messages=list(messages), **kwargs)


async def test_echo_is_registered_by_default(runtime):
    assert isinstance(runtime.model_providers["echo"], EchoProvider)
    assert runtime.pm.records["provider_echo"].status == "loaded"
    assert runtime.pm.records["provider_echo"].hooks == ("register_model_providers",)


async def test_echo_answers_the_last_user_message_with_counted_usage(runtime):
    provider = runtime.model_providers["echo"]
    req = request(
        ChatMessage("system", "be brief"),
        ChatMessage("user", "first question"),
        ChatMessage("assistant", "an answer"),
        ChatMessage("user", "hello big world"),
    )
    with anyio.fail_after(5):
        completion = await provider.complete(req)
    assert completion.text == "echo: hello big world"
    assert completion.finish_reason == "stop"
    assert completion.model == "echo-1"
    assert completion.provider == "echo"
    # words: 2 + 2 + 2 + 3 = 9, plus 4 per message * 4 messages = 16
    assert completion.usage == Usage(input_tokens=25, output_tokens=4)
    assert completion.usage.total_tokens == 29


async def test_echo_is_deterministic_and_accepts_any_model_name(runtime):
    provider = runtime.model_providers["echo"]
    req = request(ChatMessage("user", "same"), model="whatever-model")
    first = await provider.complete(req)
    assert first == await provider.complete(req)
    assert first.model == "whatever-model"


async def test_echo_streams_word_by_word_then_usage(runtime):
    provider = runtime.model_providers["echo"]
    req = request(ChatMessage("user", "one  two three"))
    with anyio.fail_after(5):
        chunks = [chunk async for chunk in provider.stream(req)]
    deltas = [c.delta for c in chunks[:-1]]
    assert deltas == ["echo: ", "one  ", "two ", "three"]
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(deltas) == (await provider.complete(req)).text
    last = chunks[-1]
    assert last.delta == ""
    assert last.usage == Usage(input_tokens=3 + 4, output_tokens=4)
    assert last.finish_reason == "stop"


async def test_echo_honours_max_tokens(runtime):
    provider = runtime.model_providers["echo"]
    req = request(ChatMessage("user", "a b c d e"), max_tokens=3)
    completion = await provider.complete(req)
    assert completion.text == "echo: a b"
    assert completion.finish_reason == "length"
    assert completion.usage.output_tokens == 3
    chunks = [c async for c in provider.stream(req)]
    assert "".join(c.delta for c in chunks) == "echo: a b"
    assert chunks[-1].finish_reason == "length"


async def test_echo_empty_message_still_answers(runtime):
    completion = await runtime.model_providers["echo"].complete(request(ChatMessage("user", "")))
    assert completion.text == "echo: "
    assert completion.usage == Usage(input_tokens=4, output_tokens=1)


@pytest.mark.parametrize(
    ("req", "reason"),
    [
        (request(ChatMessage("user", "hi"), model=""), "model name is required"),
        (request(ChatMessage("user", "hi"), model="  "), "model name is required"),
        (request(ChatMessage("system", "no user here")), "needs a user message"),
        (request(), "needs a user message"),
        (request(ChatMessage("user", "hi"), max_tokens=0), "max_tokens"),
        (request(ChatMessage("user", "hi"), settings={"base_url": "x"}), "base_url"),
    ],
)
async def test_echo_refuses_bad_requests(runtime, req, reason):
    provider = runtime.model_providers["echo"]
    with pytest.raises(ModelError, match=reason) as info:
        await provider.complete(req)
    assert info.value.retryable is False
    with pytest.raises(ModelError, match=reason):
        async for _ in provider.stream(req):
            pass


def test_echo_settings_validation(runtime):
    provider = runtime.model_providers["echo"]
    provider.validate_settings({})
    with pytest.raises(ValueError, match="temperature_bias"):
        provider.validate_settings({"temperature_bias": 1})


def test_token_rule_helpers():
    assert count_input_tokens([]) == 0
    assert count_input_tokens([ChatMessage("user", " a\tb\nc ")]) == 7
    assert split_words("echo: a  b ") == ["echo: ", "a  ", "b "]
    assert "".join(split_words("x\n y")) == "x\n y"
