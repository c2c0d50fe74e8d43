"""Model providers: the interface agents use to call language models.

A provider is registered through ``register_model_providers`` and keyed by ``provider_id``
(``echo``, ``openai``, ...). Agents name a provider and a model; the core meters every call
(tokens, cost, latency) and checks budgets before it. Providers report failures by raising
:class:`ModelError` — never by returning an empty answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

if TYPE_CHECKING:
    from fangwire.runtime import Runtime

Role = Literal["system", "user", "assistant", "tool"]


@attrs.frozen
class ChatMessage:
    """One message of a conversation."""

    role: Role
    content: str
    name: str | None = None
    tool_call_id: str | None = None


@attrs.frozen
class Usage:
    """Tokens a call consumed, as the provider reported them (or counted them)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@attrs.frozen
class Completion:
    """A model's answer."""

    text: str
    usage: Usage
    model: str
    provider: str
    finish_reason: str | None = None


@attrs.frozen
class StreamChunk:
    """Part of a streamed answer: text deltas, then one final chunk with ``usage`` set."""

    delta: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None


@attrs.frozen
class CompletionRequest:
    """What an agent asks of a model. ``settings`` are the provider's own options for this
    agent (base URL, the name of the secret holding the key, ...), validated by the provider."""

    model: str
    messages: Sequence[ChatMessage]
    max_tokens: int | None = None
    temperature: float | None = None
    settings: Mapping[str, Any] = attrs.field(factory=dict)


class ModelError(Exception):
    """A model call failed. ``reason`` is safe to show to operators (no keys, no bodies
    beyond the provider's own error message); ``status`` is the provider's HTTP status."""

    def __init__(self, reason: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retryable = retryable


class ModelProvider:
    """Base class for providers registered through ``register_model_providers``."""

    provider_id: ClassVar[str] = ""
    display_name: ClassVar[str] = ""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def validate_settings(self, settings: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming the bad key if ``settings`` cannot work."""

    async def complete(self, request: CompletionRequest) -> Completion:
        """Answer ``request``; raise :class:`ModelError` on any failure."""
        raise NotImplementedError

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        """Stream the answer: text deltas, then a final chunk carrying ``usage``.
        Providers without streaming get this default, which yields the whole answer once."""
        return self._stream_whole(request)

    async def _stream_whole(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        completion = await self.complete(request)
        yield StreamChunk(delta=completion.text)
        yield StreamChunk(usage=completion.usage, finish_reason=completion.finish_reason)
