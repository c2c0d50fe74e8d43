"""Tests of the model price catalog (fangwire.usage.catalog)."""

from __future__ import annotations

import math
import tomllib
from importlib.resources import files
from typing import Any

import pytest

from fangwire.models import Usage
from fangwire.usage import CATALOG_RESOURCE, FALLBACK_PRICE, ModelCatalog, Price

# -- packaged catalog -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-mini"),
        ("openai", "gpt-4.1"),
        ("openai", "gpt-4.1-mini"),
        ("openai", "o3"),
        ("openai", "o4-mini"),
        ("anthropic", "claude-sonnet-4-5"),
        ("anthropic", "claude-haiku-4-5"),
        ("anthropic", "claude-opus-4-1"),
        ("groq", "llama-3.3-70b-versatile"),
        ("groq", "llama-3.1-8b-instant"),
        ("google", "gemini-2.5-pro"),
        ("google", "gemini-2.5-flash"),
        ("mistral", "mistral-large-latest"),
        ("mistral", "mistral-small-latest"),
        ("deepseek", "deepseek-chat"),
        ("deepseek", "deepseek-reasoner"),
    ],
)
def test_common_models_are_known(provider: str, model: str) -> None:
    price, known = ModelCatalog().price(provider, model)
    assert known
    assert price.input_per_million > 0
    assert price.output_per_million >= price.input_per_million


def test_known_prices() -> None:
    catalog = ModelCatalog()
    assert catalog.price("openai", "gpt-4o") == (Price(2.5, 10.0, 1.25), True)
    assert catalog.price("openai", "gpt-4o-mini") == (Price(0.15, 0.6, 0.075), True)
    assert catalog.price("anthropic", "claude-sonnet-4-5") == (Price(3.0, 15.0, 0.3), True)
    assert catalog.price("groq", "llama-3.3-70b-versatile") == (Price(0.59, 0.79), True)


def test_lookup_is_case_insensitive_and_follows_aliases() -> None:
    catalog = ModelCatalog()
    base = catalog.price("openai", "gpt-4o")
    assert catalog.price("OpenAI", " GPT-4o ") == base
    assert catalog.price("openai", "gpt-4o-2024-08-06") == base
    assert catalog.price("anthropic", "claude-sonnet-4-5-20250929") == catalog.price(
        "anthropic", "claude-sonnet-4-5"
    )


def test_model_ids_may_contain_slashes() -> None:
    price, known = ModelCatalog().price("groq", "openai/gpt-oss-120b")
    assert known
    assert price.input_per_million > 0


def test_unknown_models_and_echo_use_the_fallback() -> None:
    catalog = ModelCatalog()
    assert Price(1.0, 3.0, None) == FALLBACK_PRICE
    assert catalog.price("echo", "echo") == (FALLBACK_PRICE, False)
    assert catalog.price("openai", "gpt-99") == (FALLBACK_PRICE, False)
    assert catalog.price("nobody", "gpt-4o") == (FALLBACK_PRICE, False)  # provider matters


def test_context_window() -> None:
    catalog = ModelCatalog()
    assert catalog.context_window("openai", "gpt-4o") == 128_000
    assert catalog.context_window("echo", "echo") is None


def test_packaged_file_is_well_formed() -> None:
    text = files("fangwire.usage").joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
    assert "list prices" in text.lower()
    entries = tomllib.loads(text)["models"]
    keys = {(e["provider"], e["model"].lower()) for e in entries}
    assert len(keys) == len(entries), "duplicate catalog entries"
    for e in entries:
        for name in ("input_per_million", "output_per_million", "cached_input_per_million"):
            if name in e:
                assert math.isfinite(e[name])
                assert e[name] >= 0
        if "cached_input_per_million" in e:
            assert e["cached_input_per_million"] <= e["input_per_million"]


def test_models_listing() -> None:
    listing = ModelCatalog().models()
    assert listing == sorted(listing, key=lambda m: (m["provider"], m["model"].lower()))
    gpt4o = next(m for m in listing if m["model"] == "gpt-4o")
    assert gpt4o == {
        "provider": "openai",
        "model": "gpt-4o",
        "input_per_million": 2.5,
        "output_per_million": 10.0,
        "cached_input_per_million": 1.25,
        "context_window": 128_000,
        "aliases": ["gpt-4o-2024-08-06", "gpt-4o-2024-11-20"],
        "source": "catalog",
    }
    providers = {m["provider"] for m in listing}
    assert {"openai", "anthropic", "groq", "google", "mistral", "deepseek"} <= providers


# -- overrides -----------------------------------------------------------------------------


def test_override_replaces_a_known_model() -> None:
    catalog = ModelCatalog(
        {"openai/gpt-4o": {"input_per_million": 2, "output_per_million": 8}},
    )
    price, known = catalog.price("openai", "gpt-4o")
    assert known
    assert price == Price(2.0, 8.0, None)  # the whole price is replaced
    assert catalog.price("openai", "gpt-4o-2024-08-06") == (price, True)  # aliases follow
    entry = next(m for m in catalog.models() if m["model"] == "gpt-4o")
    assert entry["source"] == "override"
    assert entry["context_window"] == 128_000


def test_override_adds_a_model_and_prices_echo() -> None:
    catalog = ModelCatalog(
        {
            "local/llama-70b": {
                "input_per_million": 0,
                "output_per_million": 0.5,
                "cached_input_per_million": 0,
            },
            "echo/echo": {"input_per_million": 0.0, "output_per_million": 0.0},
            "groq/openai/gpt-oss-120b": {"input_per_million": 1, "output_per_million": 2},
        }
    )
    assert catalog.price("local", "llama-70b") == (Price(0.0, 0.5, 0.0), True)
    assert catalog.price("echo", "echo") == (Price(0.0, 0.0), True)
    assert catalog.price("groq", "openai/gpt-oss-120b") == (Price(1.0, 2.0), True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gpt-4o": {}}, r"overrides\['gpt-4o'\]: key must be '<provider>/<model>'"),
        ({"/gpt-4o": {}}, r"overrides\['/gpt-4o'\]: key must be"),
        ({"openai/": {}}, r"overrides\['openai/'\]: key must be"),
        ({"openai/x": 3}, r"overrides\['openai/x'\]: must be a table"),
        (
            {"openai/x": {"input_per_million": 1, "output_per_million": 1, "currency": "EUR"}},
            r"overrides\['openai/x'\]\.currency: unknown key",
        ),
        (
            {"openai/x": {"output_per_million": 1}},
            r"overrides\['openai/x'\]\.input_per_million: required",
        ),
        (
            {"openai/x": {"input_per_million": 1}},
            r"overrides\['openai/x'\]\.output_per_million: required",
        ),
        (
            {"openai/x": {"input_per_million": -1, "output_per_million": 1}},
            r"overrides\['openai/x'\]\.input_per_million: must be a non-negative finite",
        ),
        (
            {"openai/x": {"input_per_million": 1, "output_per_million": math.inf}},
            r"\.output_per_million: must be a non-negative finite",
        ),
        (
            {"openai/x": {"input_per_million": 1, "output_per_million": math.nan}},
            r"\.output_per_million: must be a non-negative finite",
        ),
        (
            {"openai/x": {"input_per_million": "1", "output_per_million": 1}},
            r"\.input_per_million: must be a non-negative finite",
        ),
        (
            {"openai/x": {"input_per_million": True, "output_per_million": 1}},
            r"\.input_per_million: must be a non-negative finite",
        ),
        (
            {
                "openai/x": {
                    "input_per_million": 1,
                    "output_per_million": 1,
                    "cached_input_per_million": -0.1,
                }
            },
            r"\.cached_input_per_million: must be a non-negative finite",
        ),
    ],
)
def test_invalid_overrides(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelCatalog(overrides)


def test_override_error_path_uses_the_given_source() -> None:
    with pytest.raises(ValueError, match=r"usage\.prices\['openai/x'\]\.input_per_million"):
        ModelCatalog(
            {"openai/x": {"input_per_million": -1, "output_per_million": 1}},
            source="usage.prices",
        )


def test_price_validates_itself() -> None:
    with pytest.raises(ValueError, match="input_per_million"):
        Price(-1.0, 1.0)
    with pytest.raises(ValueError, match="cached_input_per_million"):
        Price(1.0, 1.0, math.nan)


# -- cost ----------------------------------------------------------------------------------


def test_cost_of_input_and_output() -> None:
    price = Price(2.5, 10.0, 1.25)
    cost = ModelCatalog.cost(Usage(input_tokens=1_000_000, output_tokens=500_000), price)
    assert cost == pytest.approx(2.5 + 5.0)
    assert ModelCatalog.cost(Usage(), price) == 0.0


def test_cached_tokens_are_part_of_input_and_billed_at_the_cached_price() -> None:
    price = Price(2.0, 8.0, 0.5)
    usage = Usage(input_tokens=1000, output_tokens=100, cached_tokens=400)
    expected = (600 * 2.0 + 400 * 0.5 + 100 * 8.0) / 1e6
    assert ModelCatalog.cost(usage, price) == pytest.approx(expected)


def test_cached_tokens_without_a_cached_price_cost_the_input_price() -> None:
    usage = Usage(input_tokens=1000, output_tokens=0, cached_tokens=400)
    assert ModelCatalog.cost(usage, Price(2.0, 8.0)) == pytest.approx(1000 * 2.0 / 1e6)


def test_cached_beyond_input_is_billed_as_cached_only() -> None:
    usage = Usage(input_tokens=100, output_tokens=0, cached_tokens=300)
    assert ModelCatalog.cost(usage, Price(2.0, 8.0, 0.5)) == pytest.approx(300 * 0.5 / 1e6)


def test_fallback_cost() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert ModelCatalog.cost(usage, FALLBACK_PRICE) == pytest.approx(4.0)


def test_negative_tokens_are_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        ModelCatalog.cost(Usage(input_tokens=-1), FALLBACK_PRICE)
