"""The ``openai`` model provider: any OpenAI-compatible ``/v1/chat/completions`` endpoint.

Works with OpenAI itself and the servers that speak its API (Groq, OpenRouter, Ollama, vLLM,
the llama.cpp server, ...). Calls go through the runtime's shared HTTP client.

Settings come from ``[providers.openai]`` in ``config.toml``, overridden per agent by the
request's ``settings``::

    [providers.openai]
    base_url = "https://api.openai.com/v1"   # default; e.g. "http://127.0.0.1:11434/v1"
    api_key_secret = "openai_key"            # a secret in the fangwire secret store, or
    # api_key_env = "OPENAI_API_KEY"         # an environment variable (not both)
    organization = "org-..."                 # optional, sent as OpenAI-Organization
    timeout_seconds = 60                     # whole-call timeout, default 60
    extra_headers = { "X-Title" = "fangwire" }

Without ``api_key_secret`` or ``api_key_env`` no ``Authorization`` header is sent (local
servers). The key is never written into an error message or a log line: it is registered
with the runtime's redactor and scrubbed from every error message the provider raises.

Failures raise :class:`~fangwire.models.ModelError`: HTTP errors carry the provider's own
``error.message`` (or the status text) and the ``status``; 408, 429 and 5xx, timeouts and
connection errors are ``retryable``. A 200 answer without choices, or with neither content
nor a tool call, is an error too ("the model returned no answer").
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from fangwire.hookspecs import hookimpl
from fangwire.models import (
    ChatMessage,
    Completion,
    CompletionRequest,
    ModelError,
    ModelProvider,
    StreamChunk,
    Usage,
)
from fangwire.secrets.store import validate_secret_name

log = logging.getLogger("fangwire.providers.openai")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT_SECONDS = 60.0
MAX_TIMEOUT_SECONDS = 3600.0
#: Longest provider error message kept in a ModelError.
MAX_REASON_CHARS = 500
NO_ANSWER = "the model returned no answer"

SETTING_KEYS = frozenset(
    {
        "base_url",
        "api_key_env",
        "api_key_secret",
        "organization",
        "timeout_seconds",
        "extra_headers",
    }
)
#: Headers the provider sets itself; ``extra_headers`` may not replace them.
_RESERVED_HEADERS = frozenset(
    {"authorization", "content-type", "content-length", "host", "openai-organization"}
)


def _is_retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


class OpenAIProvider(ModelProvider):
    provider_id = "openai"
    display_name = "OpenAI-compatible chat completions"

    # -- settings -----------------------------------------------------------------------

    def settings_for(self, request: CompletionRequest) -> dict[str, Any]:
        """``[providers.openai]`` with the request's own settings merged over it."""
        base = self.runtime.config.providers.get("openai", {})
        return {**base, **request.settings}

    def validate_settings(self, settings: Mapping[str, Any]) -> None:
        for key in settings:
            if key not in SETTING_KEYS:
                raise ValueError(
                    f"{key}: unknown setting (known: {', '.join(sorted(SETTING_KEYS))})"
                )
        base_url = settings.get("base_url", DEFAULT_BASE_URL)
        if not isinstance(base_url, str) or not base_url:
            raise ValueError("base_url: must be a non-empty string")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url: must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("base_url: must not contain credentials; use api_key_secret")
        if parts.query or parts.fragment:
            raise ValueError("base_url: must not have a query or a fragment")
        if "api_key_env" in settings and "api_key_secret" in settings:
            raise ValueError("api_key_secret: set either api_key_env or api_key_secret, not both")
        env_name = settings.get("api_key_env")
        if env_name is not None and (not isinstance(env_name, str) or not env_name.strip()):
            raise ValueError("api_key_env: must be the name of an environment variable")
        secret_name = settings.get("api_key_secret")
        if secret_name is not None:
            try:
                validate_secret_name(secret_name)
            except ValueError as exc:
                raise ValueError(f"api_key_secret: {exc}") from None
        organization = settings.get("organization")
        if organization is not None and (not isinstance(organization, str) or not organization):
            raise ValueError("organization: must be a non-empty string")
        timeout = settings.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or not 0 < timeout <= MAX_TIMEOUT_SECONDS
        ):
            raise ValueError(
                f"timeout_seconds: must be a number above 0 and at most {MAX_TIMEOUT_SECONDS:g}"
            )
        headers = settings.get("extra_headers", {})
        if not isinstance(headers, Mapping):
            raise ValueError("extra_headers: must be a table of header names to values")
        for name, value in headers.items():
            if not isinstance(name, str) or not name or not isinstance(value, str):
                raise ValueError("extra_headers: header names and values must be strings")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"extra_headers: {name} is set by the provider itself")
            if any(c in name + value for c in "\r\n\0"):
                raise ValueError(f"extra_headers: {name} contains a line break")

    async def _prepare(
        self, request: CompletionRequest, *, stream: bool
    ) -> tuple[str, dict[str, str], dict[str, Any], httpx.Timeout, str | None]:
        """URL, headers, body, timeout and the API key (for scrubbing) of one call."""
        if not request.model:
            raise ModelError("a model name is required")
        settings = self.settings_for(request)
        try:
            self.validate_settings(settings)
        except ValueError as exc:
            raise ModelError(f"invalid openai settings: {exc}") from None
        key = await self._api_key(settings)
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        headers.update(settings.get("extra_headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if "organization" in settings:
            headers["OpenAI-Organization"] = settings["organization"]
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [_message_json(m) for m in request.messages],
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        url = str(settings.get("base_url", DEFAULT_BASE_URL)).rstrip("/") + "/chat/completions"
        timeout = httpx.Timeout(float(settings.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)))
        return url, headers, body, timeout, key

    async def _api_key(self, settings: Mapping[str, Any]) -> str | None:
        env_name = settings.get("api_key_env")
        if env_name is not None:
            value = self.runtime.environ.get(env_name, "")
            if not value:
                raise ModelError(f"the environment variable {env_name} holding the key is not set")
            self.runtime.redactor.add(value)
            return str(value)
        secret_name = settings.get("api_key_secret")
        if secret_name is not None:
            secret = await self.runtime.secrets.get(secret_name)
            if secret is None or not secret:
                raise ModelError(f"the secret {secret_name} holding the key does not exist")
            value = secret.reveal()
            self.runtime.redactor.add(value)
            return value
        return None

    # -- calls --------------------------------------------------------------------------

    async def complete(self, request: CompletionRequest) -> Completion:
        url, headers, body, timeout, key = await self._prepare(request, stream=False)
        try:
            response = await self.runtime.http.post(
                url, json=body, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc, url, key) from None
        if response.status_code != 200:
            raise _status_error(response.status_code, response.reason_phrase, response.content, key)
        try:
            data = response.json()
        except ValueError:
            raise ModelError("the model endpoint answered with invalid JSON", status=200) from None
        if not isinstance(data, Mapping):
            raise ModelError(NO_ANSWER, status=200)
        if "error" in data and not data.get("choices"):
            raise _error_in_body(data, 200, key)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            raise ModelError(NO_ANSWER, status=200)
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, Mapping):
            raise ModelError(NO_ANSWER, status=200)
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        if not text and not message.get("tool_calls") and not message.get("function_call"):
            raise ModelError(NO_ANSWER, status=200)
        finish_reason = choice.get("finish_reason")
        model = data.get("model")
        return Completion(
            text=text,
            usage=_usage(data.get("usage")),
            model=model if isinstance(model, str) and model else request.model,
            provider=self.provider_id,
            finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        )

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        return self._stream(request)

    async def _stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        url, headers, body, timeout, key = await self._prepare(request, stream=True)
        usage: Usage | None = None
        finish_reason: str | None = None
        answered = False
        done = False
        try:
            async with self.runtime.http.stream(
                "POST", url, json=body, headers=headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    content = await response.aread()
                    raise _status_error(response.status_code, response.reason_phrase, content, key)
                async for line in response.aiter_lines():
                    line = line.strip()
                    if not line.startswith("data:"):
                        continue  # blank separators, ": comments", "event:" and "id:" fields
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        raise ModelError(
                            "the model endpoint sent an invalid stream event", status=200
                        ) from None
                    if not isinstance(chunk, Mapping):
                        continue
                    if "error" in chunk:
                        raise _error_in_body(chunk, 200, key)
                    if chunk.get("usage"):
                        usage = _usage(chunk["usage"])
                    choices = chunk.get("choices")
                    if not isinstance(choices, list) or not choices:
                        continue
                    choice = choices[0]
                    if not isinstance(choice, Mapping):
                        continue
                    if isinstance(choice.get("finish_reason"), str):
                        finish_reason = choice["finish_reason"]
                    delta = choice.get("delta")
                    if not isinstance(delta, Mapping):
                        continue
                    if delta.get("tool_calls") or delta.get("function_call"):
                        answered = True
                    text = delta.get("content")
                    if isinstance(text, str) and text:
                        answered = True
                        yield StreamChunk(delta=text)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, url, key) from None
        if not done and finish_reason is None:
            raise ModelError("the model's stream ended early", status=200, retryable=True)
        if not answered:
            raise ModelError(NO_ANSWER, status=200)
        yield StreamChunk(
            usage=usage if usage is not None else Usage(), finish_reason=finish_reason
        )


def _message_json(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _usage(raw: object) -> Usage:
    if not isinstance(raw, Mapping):
        return Usage()
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else 0
    return Usage(
        input_tokens=_count(raw.get("prompt_tokens")),
        output_tokens=_count(raw.get("completion_tokens")),
        cached_tokens=_count(cached),
    )


def _scrub(text: str, key: str | None) -> str:
    if key:
        text = text.replace(key, "***")
    text = " ".join(text.split())
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 3] + "..."
    return text


def _provider_message(data: object) -> str | None:
    if not isinstance(data, Mapping):
        return None
    error = data.get("error")
    if isinstance(error, Mapping):
        message = error.get("message")
        if isinstance(message, str) and message.strip():
            return message
    elif isinstance(error, str) and error.strip():
        return error  # some compatible servers send {"error": "..."}
    return None


def _error_in_body(data: object, status: int, key: str | None) -> ModelError:
    message = _provider_message(data) or "the model endpoint reported an error"
    return ModelError(_scrub(message, key), status=status, retryable=False)


def _status_error(status: int, reason_phrase: str, content: bytes, key: str | None) -> ModelError:
    message: str | None
    try:
        message = _provider_message(json.loads(content))
    except ValueError:
        message = None
    if message is None:
        message = reason_phrase or httpx.codes.get_reason_phrase(status) or f"HTTP {status}"
    return ModelError(_scrub(message, key), status=status, retryable=_is_retryable(status))


def _transport_error(exc: httpx.HTTPError, url: str, key: str | None) -> ModelError:
    host = urlsplit(url).netloc
    if isinstance(exc, httpx.TimeoutException):
        reason = f"the model endpoint {host} did not answer in time ({type(exc).__name__})"
    else:
        detail = _scrub(str(exc), key) or type(exc).__name__
        reason = f"could not reach the model endpoint {host}: {detail}"
    log.info("openai provider call failed: %s", reason)
    return ModelError(reason, retryable=True)


@hookimpl
def register_model_providers(register: Callable[[type[ModelProvider]], None]) -> None:
    register(OpenAIProvider)
