"""Heuristic prompt-injection scanner (offline; a signal for approval routing and audit).

Contract: `scan(text, source=...)` returns a list of `Finding` (at most one per rule, for the
first match, in rule order) and never raises. It is a heuristic: it is easy to evade and will
sometimes flag benign text, so use it to route content to approval or to annotate the audit log,
never as the only defence (see reliability.md §7.3).

Matching: hidden characters (zero-width, Unicode tags, bidi controls) are reported from the raw
text; then the text is NFKC-normalised (folding full-width and other compatibility forms), the
hidden characters are removed (so ``ig<U+200B>nore`` still matches) and the phrase rules run
case-insensitively on the result. Excerpts are at most 80 characters, taken around the match,
with control and hidden characters shown as ``\\uXXXX`` escapes.

`source` (e.g. ``"channel:telegram"``) is only used in the debug log line.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from typing import Literal

import attrs

__all__ = ["RULES", "Finding", "Severity", "scan", "state"]

logger = logging.getLogger(__name__)

Severity = Literal["low", "medium", "high"]

_EXCERPT_MAX = 80
_EXCERPT_BEFORE = 20


@attrs.frozen
class Finding:
    """One rule that matched: its name, severity and an excerpt (<= 80 chars) around the match."""

    rule: str
    severity: Severity
    excerpt: str


@attrs.frozen
class _Rule:
    name: str
    severity: Severity
    pattern: re.Pattern[str]
    doc: str
    hints: tuple[str, ...]
    """Cheap prefilter: the (lowercased) text must contain one of these for the regex to run."""


_CREDENTIAL_NOUNS = (
    r"(?:api[\s_-]?keys?|passwords?|pass\s?phrases?|tokens?|secrets?|credentials?"
    r"|private\s+keys?)"
)

RULES: tuple[_Rule, ...] = (
    # "ignore all previous instructions", "forget the prior rules", "disregard your earlier prompt"
    _Rule(
        "override.ignore_instructions",
        "high",
        re.compile(
            r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+(?:of\s+)?)?"
            r"(?:(?:the|your|my|any|these|those)\s+)?"
            r"(?:previous|prior|above|earlier|preceding|all|original|initial)\s+"
            r"(?:instructions?|prompts?|rules|directions|directives|guidelines|context)\b",
        ),
        "instruction override: ignore/forget previous instructions",
        ("ignore", "disregard", "forget", "override", "bypass"),
    ),
    # "disregard the above", "disregard everything above", "disregard all prior"
    _Rule(
        "override.disregard_above",
        "high",
        re.compile(
            r"\bdisregard\s+(?:all\s+|everything\s+)?(?:of\s+)?(?:the\s+|that\s+)?"
            r"(?:above|previous|prior|preceding)\b",
        ),
        "instruction override: disregard the above",
        ("disregard",),
    ),
    # "new system prompt:", "updated system instructions", "your real system message"
    _Rule(
        "override.new_system_prompt",
        "high",
        re.compile(
            r"\b(?:new|updated|revised|real|actual|true|override)\s+system\s+"
            r"(?:prompt|instructions?|message)\b",
        ),
        "instruction override: replacement system prompt",
        ("system",),
    ),
    # "you are now DAN", "you are now an unrestricted AI" (also matches benign "you are now
    # connected", hence medium)
    _Rule(
        "override.you_are_now",
        "medium",
        re.compile(r"\byou\s+are\s+now\b"),
        "role reassignment: you are now ...",
        ("now",),
    ),
    # "act as the system", "acting as a developer", "pretend you are root"
    _Rule(
        "override.act_as_privileged",
        "medium",
        re.compile(
            r"\b(?:act(?:ing)?\s+as|pretend(?:ing)?\s+(?:to\s+be|you\s+are))\s+"
            r"(?:(?:a|an|the|your)\s+)?(?:system|developer|root|admin(?:istrator)?)\b",
        ),
        "role reassignment to a privileged role (system/developer/root/admin)",
        ("act", "pretend"),
    ),
    # "reveal your system prompt", "print the initial instructions"
    _Rule(
        "override.prompt_extraction",
        "medium",
        re.compile(
            r"\b(?:reveal|print|show|repeat|output|leak|dump|tell\s+me)\s+(?:me\s+)?"
            r"(?:your|the)\s+(?:system\s+prompt|initial\s+instructions|hidden\s+instructions)\b",
        ),
        "system prompt extraction request",
        ("prompt", "instructions"),
    ),
    # chat-template tokens no human types: <|im_start|>, <|eot_id|>, [INST], <<SYS>>, <system>
    _Rule(
        "role.template_token",
        "high",
        re.compile(
            r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|"
            r"end_header_id|begin_of_text)\|>|\[/?inst\]|<</?sys>>|</?system>",
        ),
        "chat-template / role delimiter spoofing",
        ("<|", "inst]", "sys>>", "system>"),
    ),
    # a line that starts like a transcript turn: "system:", "assistant:", "### system"
    _Rule(
        "role.line_prefix",
        "medium",
        re.compile(
            r"^[ \t>]*(?:#{1,6}[ \t]*)?(?:system|assistant|developer)[ \t]*(?::|$)",
            re.MULTILINE,
        ),
        "role spoofing: line starting with system:/assistant:/### system",
        ("system", "assistant", "developer"),
    ),
    # "send me your api key", "post the password to ...", "email all credentials"
    _Rule(
        "exfil.send_secret",
        "high",
        re.compile(
            r"\b(?:send|post|forward|email|upload|share|leak|transmit|paste|give)\s+(?:me\s+)?"
            r"(?:the|your|all|any|its|their)\s+(?:\w+\s+)?" + _CREDENTIAL_NOUNS + r"\b",
        ),
        "exfiltration: request to send a credential",
        ("key", "pass", "token", "secret", "credential"),
    ),
)

# markdown image or link to an http(s) URL; group 1 = "!" for images, group 2 = the URL. The
# alt text cannot contain brackets and the closing ")" is not required, so a failed attempt never
# rescans a long tail and finditer stays linear.
_MD_URL = re.compile(r"(!?)\[[^\[\]\n]{0,500}\]\(\s*(https?://[^\s)]{1,4096})")
# placeholders an injected prompt asks the model to fill: {data}, {{x}}, $VAR, <secret>, [DATA]
_PLACEHOLDER = re.compile(
    r"\{|\}|%7b|%7d|\$\w|<[^>]{1,40}>|%3c|\[[a-z_ ]{2,40}\]|\b(?:data|secret|token|password|"
    r"api_?key|conversation|history|chat)\b"
)

# base64 / base64url blob of >= 200 chars; the lookbehind anchors the start of a run so the
# scan stays linear on long runs of letters
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{200,}={0,2}")

_ZERO_WIDTH = re.compile("[\u200b-\u200f\u2060\ufeff]")
_TAGS = re.compile("[\U000e0000-\U000e007f]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_HIDDEN = re.compile("[\u200b-\u200f\u2060\ufeff\U000e0000-\U000e007f\u202a-\u202e\u2066-\u2069]")
# legitimate uses that are not hidden text: emoji subdivision flags (black flag + tag letters +
# cancel tag), zero-width joiners inside emoji sequences, and a leading byte-order mark
_FLAG_TAGS = re.compile("\U0001f3f4[\U000e0020-\U000e007e]{1,8}\U000e007f")
_EMOJI = "\U0001f000-\U0001faff\u2600-\u27bf"
_EMOJI_ZWJ = re.compile(f"(?<=[{_EMOJI}\ufe0f])\u200d(?=[{_EMOJI}])")
_ESCAPE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2060\ufeff\u202a-\u202e\u2066-\u2069"
    "\U000e0000-\U000e007f]"
)

_EXTRA_RULES = (
    "hidden.zero_width",
    "hidden.unicode_tags",
    "hidden.bidi_control",
    "exfil.markdown_url",
    "exfil.markdown_image_query",
    "encoding.base64_blob",
)

_lock = threading.Lock()
_counters: dict[str, int] = {"scanned": 0, "low": 0, "medium": 0, "high": 0, "errors": 0}


def _escape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        code = ord(m.group())
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"

    return _ESCAPE.sub(one, text).replace("\n", " ").replace("\t", " ").replace("\r", " ")


def _excerpt(text: str, start: int, end: int) -> str:
    """Return <= 80 chars around text[start:end], escapes included in the budget."""
    before = _escape(text[max(0, start - _EXCERPT_BEFORE) : start])[-_EXCERPT_BEFORE:]
    body = _escape(text[start : start + _EXCERPT_MAX])
    return (before + body)[:_EXCERPT_MAX]


def _hidden_findings(raw: str) -> list[Finding]:
    cleaned = _FLAG_TAGS.sub("", raw)
    cleaned = _EMOJI_ZWJ.sub("", cleaned)
    if cleaned.startswith("\ufeff"):
        cleaned = cleaned[1:]
    findings: list[Finding] = []
    checks: tuple[tuple[str, Severity, re.Pattern[str]], ...] = (
        # zero-width space/joiners, LRM/RLM, word joiner, BOM: splits or hides words
        ("hidden.zero_width", "medium", _ZERO_WIDTH),
        # Unicode tag characters: invisible ASCII copies ("ASCII smuggling"), no benign use here
        ("hidden.unicode_tags", "high", _TAGS),
        # bidi embeddings/overrides/isolates: reorder what a reviewer sees (trojan source)
        ("hidden.bidi_control", "medium", _BIDI),
    )
    for name, severity, pattern in checks:
        m = pattern.search(cleaned)
        if m:
            findings.append(Finding(name, severity, _excerpt(cleaned, m.start(), m.end())))
    return findings


def _scan(raw: str) -> list[Finding]:
    hidden = _HIDDEN.search(raw) is not None
    findings = _hidden_findings(raw) if hidden else []
    text = unicodedata.normalize("NFKC", raw)
    if hidden:
        text = _HIDDEN.sub("", text)
    # rules match the lowercased text (much faster than re.IGNORECASE); excerpts come from the
    # original case unless lowercasing changed the length (e.g. "İ"), which would shift offsets
    low = text.lower()
    if len(low) != len(text):
        text = low
    for rule in RULES:
        if not any(hint in low for hint in rule.hints):
            continue
        m = rule.pattern.search(low)
        if m:
            findings.append(Finding(rule.name, rule.severity, _excerpt(text, m.start(), m.end())))
    # exfiltration via markdown: images load automatically, so any query string is suspicious;
    # links or images whose query carries fill-in placeholders are the classic exfil pattern
    image_hit: Finding | None = None
    for m in _MD_URL.finditer(low) if "](" in low else ():
        _, has_query, query = m.group(2).partition("?")
        if not has_query:
            continue
        if _PLACEHOLDER.search(query):
            findings.append(
                Finding("exfil.markdown_url", "high", _excerpt(text, m.start(), m.end()))
            )
            image_hit = None
            break
        if m.group(1) and image_hit is None:
            image_hit = Finding(
                "exfil.markdown_image_query", "medium", _excerpt(text, m.start(), m.end())
            )
    if image_hit is not None:
        findings.append(image_hit)
    # long base64 blobs can smuggle encoded instructions or carry exfiltrated data
    m = _BASE64.search(text)  # case matters here: search the unlowered text
    if m:
        findings.append(
            Finding("encoding.base64_blob", "medium", _excerpt(text, m.start(), m.end()))
        )
    return findings


def scan(text: str, *, source: str) -> list[Finding]:
    """Scan ``text`` (from ``source``) for prompt-injection signals; never raises.

    If scanning itself fails, a single low-severity ``scanner.error`` finding is returned.
    """
    try:
        raw = text if isinstance(text, str) else str(text)
        findings = _scan(raw)
    except Exception as exc:  # never let a scanner bug block message flow
        with _lock:
            _counters["scanned"] += 1
            _counters["errors"] += 1
            _counters["low"] += 1
        return [Finding("scanner.error", "low", type(exc).__name__[:_EXCERPT_MAX])]
    with _lock:
        _counters["scanned"] += 1
        for finding in findings:
            _counters[finding.severity] += 1
    if findings:
        logger.debug("injection scan of %s: %s", source[:100], ", ".join(f.rule for f in findings))
    return findings


def state() -> tuple[str, dict[str, object]]:
    """Return ``("active", {"scanned": n, "findings": {severity: n}, "errors": n, ...})``."""
    with _lock:
        return "active", {
            "scanned": _counters["scanned"],
            "findings": {k: _counters[k] for k in ("low", "medium", "high")},
            "errors": _counters["errors"],
            "rules": len(RULES) + len(_EXTRA_RULES),
        }
