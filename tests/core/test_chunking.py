"""Tests for fangwire.channelkit.chunking."""

from __future__ import annotations

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from fangwire.channelkit.chunking import measure, split_message
from fangwire.channels import LengthUnit

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # 11 UTF-16 units
FLAG = "\U0001f1eb\U0001f1f7"
E_ACUTE = "e\u0301"
HANGUL = "\u1100\u1161\u11a8"  # jamo forming one syllable cluster
GRAPHEME = regex.compile(r"\X")


def clusters(text: str) -> list[str]:
    return GRAPHEME.findall(text)


def gaps(text: str, chunks: list[str]) -> list[str]:
    """The whitespace dropped after each chunk; asserts the reconstruct property."""
    pos = 0
    dropped = []
    for index, chunk in enumerate(chunks):
        assert text.startswith(chunk, pos), (text, chunks)
        pos += len(chunk)
        end = pos
        if index + 1 < len(chunks):
            while not text.startswith(chunks[index + 1], end):
                assert text[end].isspace(), (text, chunks)
                end += 1
        else:
            end = len(text)
        dropped.append(text[pos:end])
        pos = end
    return dropped


def check(text: str, limit: int, unit: LengthUnit) -> list[str]:
    chunks = split_message(text, limit, unit)
    assert all(chunks)
    for chunk in chunks:
        assert measure(chunk, unit) <= limit or len(clusters(chunk)) == 1
    dropped = gaps(text, chunks)
    assert all(d == "" or d.isspace() for d in dropped)
    pieces: list[str] = []
    for chunk, gap in zip(chunks, dropped, strict=True):
        pieces += clusters(chunk) + clusters(gap)
    assert pieces == clusters(text)  # no cluster cut at any split point
    return chunks


@pytest.mark.parametrize(
    ("unit", "text", "expected"),
    [
        (LengthUnit.BYTES, "h\u00e9llo w\u00f6rld", 13),
        (LengthUnit.CHARACTERS, "h\u00e9llo " + E_ACUTE, 8),
        (LengthUnit.UTF16_UNITS, FAMILY + FLAG, 15),
        (LengthUnit.GRAPHEMES, FAMILY + FLAG + E_ACUTE + HANGUL + "ab", 6),
        (LengthUnit.GRAPHEMES, "a\r\nb", 3),
    ],
)
def test_measure(unit: LengthUnit, text: str, expected: int) -> None:
    assert measure(text, unit) == expected


@pytest.mark.parametrize(
    ("unit", "text", "limit", "expected"),
    [
        (LengthUnit.CHARACTERS, "one two three", 7, ["one two", "three"]),
        (
            LengthUnit.BYTES,
            "\u00e9\u00e9\u00e9 \u00e9\u00e9",
            6,
            ["\u00e9\u00e9\u00e9", "\u00e9\u00e9"],
        ),
        (LengthUnit.BYTES, "\u00e9\u00e9\u00e9\u00e9", 5, ["\u00e9\u00e9", "\u00e9\u00e9"]),
        (LengthUnit.UTF16_UNITS, "\U0001f600\U0001f600\U0001f600", 3, ["\U0001f600"] * 3),
        (LengthUnit.UTF16_UNITS, FAMILY + "abc", 10, [FAMILY, "abc"]),
        (LengthUnit.GRAPHEMES, FLAG * 3 + " " + FAMILY * 2, 2, [FLAG * 2, FLAG, FAMILY * 2]),
        (LengthUnit.CHARACTERS, E_ACUTE * 3, 3, [E_ACUTE, E_ACUTE, E_ACUTE]),
        (LengthUnit.CHARACTERS, HANGUL * 2, 4, [HANGUL, HANGUL]),
        (
            LengthUnit.CHARACTERS,
            "\u4e00\u4e8c\u3002\u4e09\u56db",
            4,
            ["\u4e00\u4e8c\u3002", "\u4e09\u56db"],
        ),
        (LengthUnit.CHARACTERS, "x  \u0301y", 2, ["x", " \u0301", "y"]),
    ],
)
def test_table(unit: LengthUnit, text: str, limit: int, expected: list[str]) -> None:
    assert check(text, limit, unit) == expected


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split_message("x", 0, LengthUnit.CHARACTERS)


def test_empty_and_fitting() -> None:
    assert split_message("", 5, LengthUnit.CHARACTERS) == []
    assert split_message("  hi  ", 6, LengthUnit.CHARACTERS) == ["  hi  "]


def test_paragraph_preferred() -> None:
    text = "First paragraph here.\n\nSecond one. It goes on and on and on"
    chunks = check(text, 50, LengthUnit.CHARACTERS)
    assert chunks[0] == "First paragraph here."


def test_line_preferred_over_sentence() -> None:
    text = "a line\nSentence one. Sentence two goes on"
    assert check(text, 30, LengthUnit.CHARACTERS)[0] == "a line"


def test_sentence_preferred_over_word() -> None:
    text = "Short sentence. Then a much longer sentence without end"
    chunks = check(text, 40, LengthUnit.CHARACTERS)
    assert chunks[0] == "Short sentence."


def test_long_url_without_spaces() -> None:
    url = "https://example.com/" + "a" * 300
    chunks = check("see " + url + " ok", 100, LengthUnit.CHARACTERS)
    assert chunks[0] == "see"
    assert "".join(chunks[1:]) == url + " ok"  # the rest fits after hard splits
    assert all(len(c) <= 100 for c in chunks)


def test_telegram_emoji_at_boundary() -> None:
    # 4095 units of ASCII, then an emoji (2 units) straddling the 4096 limit.
    text = "a" * 4095 + "\U0001f600" + "b" * 10
    chunks = check(text, 4096, LengthUnit.UTF16_UNITS)
    assert chunks == ["a" * 4095, "\U0001f600" + "b" * 10]
    text = "a" * 4090 + FAMILY + "b"
    chunks = check(text, 4096, LengthUnit.UTF16_UNITS)
    assert chunks == ["a" * 4090, FAMILY + "b"]


def test_discord_2000() -> None:
    words = " ".join(f"w{i}\U0001f600" for i in range(2000))
    chunks = check(words, 2000, LengthUnit.UTF16_UNITS)
    assert len(chunks) > 1
    assert all(measure(c, LengthUnit.UTF16_UNITS) <= 2000 for c in chunks)
    assert all(not c[0].isspace() and not c[-1].isspace() for c in chunks)


def test_oversized_cluster_emitted_alone() -> None:
    chunks = check("ab" + FAMILY + "cd", 10, LengthUnit.UTF16_UNITS)
    assert chunks == ["ab", FAMILY, "cd"]
    assert measure(chunks[1], LengthUnit.UTF16_UNITS) == 11


ATOMS = st.sampled_from(
    [
        "a",
        "Z",
        "7",
        ".",
        "!",
        "?",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\r\n",
        "\t",
        "\u4e2d",
        "\u6587",
        "\u3002",
        "\uff01",
        "\u3000",
        "\u00a0",
        FAMILY,
        FLAG,
        E_ACUTE,
        HANGUL,
        "\u0301",
        "\U0001f600",
        "\U0001d11e",
        "\u200d",
        "\U0001f44d\U0001f3fd",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    atoms=st.lists(ATOMS, max_size=80),
    limit=st.integers(min_value=1, max_value=200),
    unit=st.sampled_from(list(LengthUnit)),
)
def test_properties(atoms: list[str], limit: int, unit: LengthUnit) -> None:
    check("".join(atoms), limit, unit)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=300), limit=st.integers(min_value=1, max_value=50))
def test_properties_any_text(text: str, limit: int) -> None:
    for unit in LengthUnit:
        check(text, limit, unit)
