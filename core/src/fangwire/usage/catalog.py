"""The model price catalog: what a model call costs.

Prices come from the packaged ``model_catalog.toml`` (vendors' list prices, in US dollars per
million tokens) and from operator overrides keyed ``"<provider>/<model>"``. Lookups are
case-insensitive. A model that is in neither — including every model of the ``echo``
provider — is priced at :data:`FALLBACK_PRICE` ($1 per million input tokens, $3 per million
output tokens, cached input at the input price) and reported as *not known*, so estimates stay
on the expensive side rather than free.

Token semantics (OpenAI's): ``Usage.input_tokens`` counts *all* prompt tokens, cached ones
included, and ``Usage.cached_tokens`` is the cached subset. See :meth:`ModelCatalog.cost`.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from importlib.resources import files
from typing import Any, Final

import attrs

from fangwire.models import Usage

__all__ = ["CATALOG_RESOURCE", "FALLBACK_PRICE", "ModelCatalog", "Price"]

CATALOG_RESOURCE: Final = "model_catalog.toml"
"""Name of the packaged catalog file inside :mod:`fangwire.usage`."""

_PRICE_KEYS: Final = ("input_per_million", "output_per_million", "cached_input_per_million")
_REQUIRED_PRICE_KEYS: Final = ("input_per_million", "output_per_million")
_ENTRY_KEYS: Final = frozenset({"provider", "model", "context_window", "aliases", *_PRICE_KEYS})


def _check_price(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is None and attribute.name == "cached_input_per_million":
        return
    if not _is_price(value):
        raise ValueError(f"{attribute.name} must be a non-negative finite number, got {value!r}")


def _is_price(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


@attrs.frozen
class Price:
    """US dollars per million tokens. ``cached_input_per_million=None`` bills cached input
    tokens at ``input_per_million``."""

    input_per_million: float = attrs.field(validator=_check_price)
    output_per_million: float = attrs.field(validator=_check_price)
    cached_input_per_million: float | None = attrs.field(default=None, validator=_check_price)


FALLBACK_PRICE: Final = Price(input_per_million=1.0, output_per_million=3.0)
"""Price of models the catalog does not know: $1/M input, $3/M output (cached at input)."""


@attrs.frozen
class _Entry:
    provider: str
    model: str
    price: Price
    context_window: int | None
    aliases: tuple[str, ...]
    source: str  # "catalog" or "override"


def _key(provider: str, model: str) -> tuple[str, str]:
    return provider.strip().lower(), model.strip().lower()


def _parse_price(raw: Mapping[str, Any], path: str, allowed: frozenset[str]) -> Price:
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise ValueError(f"{path}.{unknown[0]}: unknown key (expected {', '.join(_PRICE_KEYS)})")
    for name in _REQUIRED_PRICE_KEYS:
        if name not in raw:
            raise ValueError(f"{path}.{name}: required")
    for name in _PRICE_KEYS:
        if name in raw and not _is_price(raw[name]):
            raise ValueError(
                f"{path}.{name}: must be a non-negative finite number, got {raw[name]!r}"
            )
    cached = raw.get("cached_input_per_million")
    return Price(
        input_per_million=float(raw["input_per_million"]),
        output_per_million=float(raw["output_per_million"]),
        cached_input_per_million=None if cached is None else float(cached),
    )


def _load_packaged() -> list[_Entry]:
    text = files("fangwire.usage").joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
    data = tomllib.loads(text)
    entries: list[_Entry] = []
    for index, raw in enumerate(data.get("models", [])):
        path = f"{CATALOG_RESOURCE}: models[{index}]"
        price = _parse_price(raw, path, _ENTRY_KEYS)
        window = raw.get("context_window")
        if window is not None and (not isinstance(window, int) or window <= 0):
            raise ValueError(f"{path}.context_window: must be a positive integer")
        entries.append(
            _Entry(
                provider=str(raw["provider"]),
                model=str(raw["model"]),
                price=price,
                context_window=window,
                aliases=tuple(str(a) for a in raw.get("aliases", ())),
                source="catalog",
            )
        )
    return entries


class ModelCatalog:
    """Model prices: the packaged catalog with ``overrides`` applied on top.

    ``overrides`` maps ``"<provider>/<model>"`` (split at the first ``/``, so model ids may
    contain slashes: ``"groq/openai/gpt-oss-120b"``) to ``{input_per_million,
    output_per_million, cached_input_per_million?}``. An override replaces the whole price of a
    catalogued model (an omitted cached price means "cached at the input price") or adds a
    model. Invalid overrides raise ``ValueError`` naming the offending path, e.g.
    ``overrides["openai/gpt-4o"].input_per_million: ...``.
    """

    def __init__(
        self,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        source: str = "overrides",
    ) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._aliases: dict[tuple[str, str], tuple[str, str]] = {}
        for entry in _load_packaged():
            key = _key(entry.provider, entry.model)
            self._entries[key] = entry
            for alias in entry.aliases:
                self._aliases[_key(entry.provider, alias)] = key
        for name, raw in (overrides or {}).items():
            path = f"{source}[{name!r}]"
            provider, sep, model = str(name).partition("/")
            if not sep or not provider.strip() or not model.strip():
                raise ValueError(f"{path}: key must be '<provider>/<model>'")
            if not isinstance(raw, Mapping):
                raise ValueError(f"{path}: must be a table of prices")
            price = _parse_price(raw, path, frozenset(_PRICE_KEYS))
            key = self._resolve(provider, model)
            existing = self._entries.get(key)
            self._entries[key] = _Entry(
                provider=existing.provider if existing else provider.strip(),
                model=existing.model if existing else model.strip(),
                price=price,
                context_window=existing.context_window if existing else None,
                aliases=existing.aliases if existing else (),
                source="override",
            )

    def _resolve(self, provider: str, model: str) -> tuple[str, str]:
        key = _key(provider, model)
        return self._aliases.get(key, key)

    def price(self, provider: str, model: str) -> tuple[Price, bool]:
        """Return the price of ``provider``'s ``model`` and whether it is known (else the
        :data:`FALLBACK_PRICE`)."""
        entry = self._entries.get(self._resolve(provider, model))
        if entry is None:
            return FALLBACK_PRICE, False
        return entry.price, True

    def context_window(self, provider: str, model: str) -> int | None:
        """The model's context window in tokens, if the catalog knows it."""
        entry = self._entries.get(self._resolve(provider, model))
        return entry.context_window if entry else None

    @staticmethod
    def cost(usage: Usage, price: Price) -> float:
        """US dollars for ``usage`` at ``price`` (unrounded).

        ``usage.input_tokens`` includes the ``cached_tokens`` (OpenAI's semantics): the
        uncached part ``max(input_tokens - cached_tokens, 0)`` is billed at the input price and
        the cached tokens at the cached price (the input price when it is not set). Output
        tokens are billed at the output price. Negative counts raise ``ValueError``.
        """
        if min(usage.input_tokens, usage.output_tokens, usage.cached_tokens) < 0:
            raise ValueError("token counts must not be negative")
        cached_rate = (
            price.input_per_million
            if price.cached_input_per_million is None
            else price.cached_input_per_million
        )
        uncached = max(usage.input_tokens - usage.cached_tokens, 0)
        total = (
            uncached * price.input_per_million
            + usage.cached_tokens * cached_rate
            + usage.output_tokens * price.output_per_million
        )
        return total / 1_000_000

    def models(self) -> list[dict[str, Any]]:
        """Every priced model, sorted by provider then model, for listing."""
        return [
            {
                "provider": e.provider,
                "model": e.model,
                "input_per_million": e.price.input_per_million,
                "output_per_million": e.price.output_per_million,
                "cached_input_per_million": e.price.cached_input_per_million,
                "context_window": e.context_window,
                "aliases": list(e.aliases),
                "source": e.source,
            }
            for _, e in sorted(self._entries.items())
        ]
