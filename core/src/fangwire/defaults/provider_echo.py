"""The ``echo`` model provider: offline and deterministic, for tests, demos and dry runs.

It answers every request with the text of the last ``user`` message, prefixed: the answer is
exactly ``"echo: " + text``. Any non-empty model name is accepted (``echo-1`` by convention);
it takes no settings.

Token counting rule (deterministic, no tokenizer):

- ``input_tokens`` = the number of whitespace-separated words in the contents of all
  messages, plus 4 per message (the per-message overhead);
- ``output_tokens`` = the number of whitespace-separated words in the answer (so
  ``"echo: hello world"`` counts 3);
- ``cached_tokens`` = 0.

When ``max_tokens`` is set and the answer has more words than that, the answer is cut after
``max_tokens`` words (keeping the whitespace between them) and ``finish_reason`` is
``"length"``; otherwise ``finish_reason`` is ``"stop"``.

Streaming yields the answer word by word (each delta is one word followed by the whitespace
after it, so the deltas concatenate to the answer), then one final chunk with the usage and
the finish reason. A request without a user message fails with :class:`ModelError`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

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

#: Tokens counted for each message on top of its words.
MESSAGE_OVERHEAD_TOKENS = 4
PREFIX = "echo: "

_PIECE = re.compile(r"\S+\s*|\s+")


def count_words(text: str) -> int:
    """The number of whitespace-separated words in ``text``."""
    return len(text.split())


def count_input_tokens(messages: Sequence[ChatMessage]) -> int:
    """Words of every message's content plus :data:`MESSAGE_OVERHEAD_TOKENS` per message."""
    return sum(count_words(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def split_words(text: str) -> list[str]:
    """``text`` cut into word-plus-trailing-whitespace pieces that concatenate to ``text``."""
    return _PIECE.findall(text)


class EchoProvider(ModelProvider):
    provider_id = "echo"
    display_name = "Echo (offline, deterministic)"

    def validate_settings(self, settings: Mapping[str, Any]) -> None:
        for key in settings:
            raise ValueError(f"{key}: the echo provider takes no settings")

    def _answer(self, request: CompletionRequest) -> tuple[list[str], Usage, str]:
        if not request.model.strip():
            raise ModelError("a model name is required (any name works, e.g. 'echo-1')")
        try:
            self.validate_settings(request.settings)
        except ValueError as exc:
            raise ModelError(f"invalid echo settings: {exc}") from None
        if request.max_tokens is not None and request.max_tokens < 1:
            raise ModelError("max_tokens must be a positive integer")
        last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
        if last_user is None:
            raise ModelError("the echo provider needs a user message to echo")
        pieces = split_words(PREFIX + last_user.content)
        finish_reason = "stop"
        if request.max_tokens is not None:
            words = [i for i, piece in enumerate(pieces) if piece.strip()]
            if len(words) > request.max_tokens:
                pieces = pieces[: words[request.max_tokens - 1] + 1]
                pieces[-1] = pieces[-1].rstrip()
                finish_reason = "length"
        usage = Usage(
            input_tokens=count_input_tokens(request.messages),
            output_tokens=count_words("".join(pieces)),
        )
        return pieces, usage, finish_reason

    async def complete(self, request: CompletionRequest) -> Completion:
        pieces, usage, finish_reason = self._answer(request)
        return Completion(
            text="".join(pieces),
            usage=usage,
            model=request.model,
            provider=self.provider_id,
            finish_reason=finish_reason,
        )

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        return self._stream(request)

    async def _stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        pieces, usage, finish_reason = self._answer(request)
        for piece in pieces:
            yield StreamChunk(delta=piece)
        yield StreamChunk(usage=usage, finish_reason=finish_reason)


@hookimpl
def register_model_providers(register: Callable[[type[ModelProvider]], None]) -> None:
    register(EchoProvider)
