"""Split outbound text into chunks that fit a platform's message-length limit.

Platforms count length in different units (see :class:`~fangwire.channels.LengthUnit`):
UTF-8 bytes, code points, UTF-16 code units (Telegram, Discord) or extended grapheme
clusters. :func:`split_message` cuts a text into chunks whose :func:`measure` in that unit is
at most the limit, preferring natural break points:

1. a paragraph break (a whitespace run holding two or more line breaks, or U+2029),
2. a line break,
3. a sentence end: ``.``, ``!`` or ``?`` followed by whitespace, or the CJK full stop
   ``。`` and fullwidth ``!`` / ``?`` (U+3002, U+FF01, U+FF1F; no whitespace needed after them),
4. whitespace between words (no-break spaces U+00A0, U+2007, U+202F are not break points),
5. only when none of these lies within the limit: the last grapheme-cluster boundary that fits.

A chunk never ends inside a grapheme cluster, so emoji ZWJ sequences, flags, combining marks
and Hangul syllables stay whole; since we work on ``str`` a chunk never ends inside a UTF-8
sequence or a UTF-16 surrogate pair either.

What is dropped: when the split happens at whitespace, that whole maximal whitespace run is
dropped (it would only show as leading or trailing blanks). Nothing else is ever dropped:
``text`` equals the chunks joined with the dropped runs put back in between (a run after the
last chunk is possible when the text ends in whitespace). Splits after a CJK sentence end and hard
splits drop nothing.

A single grapheme cluster that is longer than the limit by itself (a 25-code-unit family
emoji with a limit of 10 UTF-16 units, say) cannot be split without breaking it: it is emitted
alone in its own chunk, which then exceeds the limit. Callers that must not send such a chunk
can check each chunk with :func:`measure`.

Work is linear in the text length: each chunk segments and measures a window only slightly
larger than itself, with the per-character work done by ``regex`` and ``str`` in C.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from itertools import accumulate

import regex

from fangwire.channels import LengthUnit

__all__ = ["measure", "split_message"]

_GRAPHEME = regex.compile(r"\X")
# Whitespace that may be a break point (no-break spaces excluded) and line breaks.
_W = r"[^\S\u00a0\u2007\u202f]"
_LB = r"[\n\r\x0b\x0c\x85\u2028]"
_CJK_END = r"[\u3002\uff01\uff1f]"
_RUN_FORWARD = regex.compile(_W + "*")
_RUN_BACKWARD = regex.compile("(?r)" + _W + "*")
# Reverse searches (the last match before endpos), one per preference level.
_PARAGRAPH_REV = regex.compile(rf"(?r)(?:\r\n|{_LB})(?:(?!{_LB}){_W})*(?:\r\n|{_LB})|\u2029")
_LINE_REV = regex.compile(rf"(?r){_LB}|\u2029")
_SENTENCE_REV = regex.compile(rf"(?r)[.!?](?={_W})|{_CJK_END}")
_WORD_REV = regex.compile(rf"(?r){_W}+")
_SENTENCE_END = frozenset(".!?\u3002\uff01\uff1f")
_LINE_BREAKS = ("\n", "\r", "\x0b", "\x0c", "\x85", "\u2028")

_PARAGRAPH, _LINE, _SENTENCE, _WORD = range(4)
_LEVEL_PATTERNS = (_PARAGRAPH_REV, _LINE_REV, _SENTENCE_REV, _WORD_REV)


def measure(text: str, unit: LengthUnit) -> int:
    """The length of ``text`` as a platform counting in ``unit`` sees it.

    Lone surrogates (possible in a Python ``str``) count as 3 bytes / 1 UTF-16 unit.
    """
    if unit is LengthUnit.CHARACTERS:
        return len(text)
    if unit is LengthUnit.BYTES:
        return len(text.encode("utf-8", "surrogatepass"))
    if unit is LengthUnit.UTF16_UNITS:
        return len(text.encode("utf-16-le", "surrogatepass")) // 2
    return len(_GRAPHEME.findall(text))


def _level(text: str, run_start: int, run_end: int) -> int:
    """The preference level of breaking at the whitespace run ``text[run_start:run_end]``."""
    run = text[run_start:run_end]
    if "\u2029" in run:
        return _PARAGRAPH
    breaks = sum(run.replace("\r\n", "\n").count(c) for c in _LINE_BREAKS)
    if breaks >= 2:
        return _PARAGRAPH
    if breaks == 1:
        return _LINE
    if text[run_start - 1] in _SENTENCE_END:
        return _SENTENCE
    return _WORD


def _ends_cluster(text: str, pos: int) -> bool:
    """Whether a cluster boundary lies at ``pos``, given ``text[pos - 1]`` is whitespace.

    A whitespace character starts its own cluster (it is never Extend, ZWJ or SpacingMark,
    and the only whitespace pair kept together, CR LF, ends at LF), so matching one cluster
    from ``pos - 1`` is enough.
    """
    if pos >= len(text):
        return True
    match = _GRAPHEME.match(text, pos - 1)
    return match is not None and match.end() == pos


def _fit(text: str, start: int, limit: int, unit: LengthUnit) -> tuple[int, set[int] | None]:
    """The furthest cluster boundary ``end`` with ``text[start:end]`` within the limit.

    Returns ``end`` and the cluster boundaries in ``[start, end]`` (``None``: all positions
    are boundaries). ``end == start`` means the first cluster alone exceeds the limit.
    """
    window = text[start : start + limit + 1]
    if window.isascii() and "\r" not in window:
        # Fast path: one unit per character in every unit, every position a boundary (the
        # character at the end is in the window, so it is not a combining mark either).
        return min(start + limit, len(text)), None
    size = limit + 16 if unit is not LengthUnit.GRAPHEMES else 2 * limit + 16
    while True:
        end = start + size
        graphemes = _GRAPHEME.findall(text, start, min(end, len(text)))
        if end < len(text):
            graphemes.pop()  # the last cluster may have been cut by the window's edge
        offsets = list(accumulate(map(len, graphemes), initial=start))
        if unit is LengthUnit.CHARACTERS:
            count = bisect_right(offsets, start + limit) - 1
        elif unit is LengthUnit.GRAPHEMES:
            count = min(limit, len(graphemes))
        else:
            low, high = 0, len(graphemes)  # the answer lies in [low, high]
            while low < high:
                mid = (low + high + 1) // 2
                if measure(text[start : offsets[mid]], unit) <= limit:
                    low = mid
                else:
                    high = mid - 1
            count = low
        if count < len(graphemes) or end >= len(text):
            return offsets[count], set(offsets[: count + 1])
        size *= 2


def _whole_run(text: str, start: int, pos: int) -> tuple[int, int]:
    """The whitespace run around ``pos``, not reaching before ``start``."""
    backward = _RUN_BACKWARD.match(text, start, pos)
    forward = _RUN_FORWARD.match(text, pos)
    run_start = backward.start() if backward is not None else pos
    run_end = forward.end() if forward is not None else pos
    return run_start, run_end


def _best_break(
    text: str, start: int, fit_end: int, bounds: set[int] | None
) -> tuple[int, int] | None:
    """The preferred break ``(chunk_end, next_start)`` with ``start < chunk_end <= fit_end``."""
    # A run touching fit_end may go on past it: classify it on its own, search before it.
    straddle = _whole_run(text, start, fit_end)
    search_end = straddle[0] if straddle[0] < straddle[1] else fit_end
    straddle_level = (
        _level(text, straddle[0], straddle[1])
        if start < straddle[0] < straddle[1] and (bounds is None or straddle[0] in bounds)
        else None
    )
    for level, pattern in enumerate(_LEVEL_PATTERNS):
        if level == straddle_level:
            return _keep_clusters(text, *straddle)
        endpos = search_end
        while endpos > start:
            match = pattern.search(text, start, endpos)
            if match is None:
                break
            endpos = match.start()
            if level == _SENTENCE:
                run_start = match.end()
                run_end = _RUN_FORWARD.match(text, run_start).end()  # type: ignore[union-attr]
            else:
                run_start, run_end = _whole_run(text, start, match.start())
                run_end = max(run_end, match.end())
            if run_start > start and (bounds is None or run_start in bounds):
                return _keep_clusters(text, run_start, run_end)
    return None


def _keep_clusters(text: str, chunk_end: int, next_start: int) -> tuple[int, int]:
    # A space followed by a combining mark belongs to the mark's cluster: keep it.
    while next_start > chunk_end and not _ends_cluster(text, next_start):
        next_start -= 1
    return chunk_end, next_start


def _split(text: str, limit: int, unit: LengthUnit) -> Iterator[str]:
    start = 0
    while start < len(text):
        fit_end, bounds = _fit(text, start, limit, unit)
        if fit_end == len(text):
            yield text[start:]
            return
        if fit_end == start:
            # One cluster alone exceeds the limit: emit it whole (documented above).
            match = _GRAPHEME.match(text, start)
            end = match.end() if match is not None else len(text)
            yield text[start:end]
            start = end
            continue
        found = _best_break(text, start, fit_end, bounds)
        if found is None:
            yield text[start:fit_end]
            start = fit_end
        else:
            chunk_end, next_start = found
            yield text[start:chunk_end]
            start = next_start


def split_message(text: str, limit: int, unit: LengthUnit) -> list[str]:
    """Split ``text`` into non-empty chunks of at most ``limit`` in ``unit``.

    See the module docstring for the break-point preference, exactly what is dropped at
    split points (only the whitespace run a split happened at) and the one case where a chunk
    exceeds the limit (a single grapheme cluster longer than ``limit``). An empty text gives
    no chunks; ``limit < 1`` raises :class:`ValueError`.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if not text:
        return []
    return list(_split(text, limit, unit))
