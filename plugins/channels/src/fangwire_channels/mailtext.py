"""Reading inbound mail and writing answers, with the standard library's ``email`` package.

- :func:`read_mail` turns raw RFC 5322 bytes into a :class:`Mail`: decoded (RFC 2047)
  subject and addresses, the text (the ``text/plain`` part preferred, else the ``text/html``
  part with its markup stripped; a reply's quoted tail dropped), the threading ids and the
  agent named by a leading ``[agent]`` in the subject.
- :func:`build_answer` writes a plain-text answer threaded under the mail it answers
  (``In-Reply-To``, ``References``, ``Re: <subject>``).
"""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import html
import html.parser
import re
from collections.abc import Sequence

import attrs

_AGENT_TAG = re.compile(r"^\s*\[([^\[\]\s]{1,64})\]\s*")
_MSGID = re.compile(r"<[^<>\s]+>")
_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv|antw)\s*:\s*", re.IGNORECASE)


@attrs.frozen
class Mail:
    """The parts of an inbound mail the channel uses."""

    from_address: str
    from_name: str
    reply_address: str
    subject: str
    text: str
    message_id: str | None
    references: tuple[str, ...]
    agent: str | None
    automatic: bool

    @property
    def thread_root(self) -> str | None:
        """The Message-ID that started the conversation (this mail's own if it is the first)."""
        return self.references[0] if self.references else self.message_id


class _TextOnly(html.parser.HTMLParser):
    """Collects the visible text of an HTML document, one line per block element."""

    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """The visible text of ``markup``: tags, scripts and styles dropped, entities decoded."""
    parser = _TextOnly()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", html.unescape(text)).strip()


def split_agent_tag(subject: str) -> tuple[str | None, str]:
    """``"[coder] Fix it"`` → ``("coder", "Fix it")``; no tag → ``(None, subject)``."""
    match = _AGENT_TAG.match(subject)
    if match is None:
        return None, subject.strip()
    return match.group(1), subject[match.end() :].strip()


def message_ids(value: str | None) -> tuple[str, ...]:
    """The ``<id>`` tokens of a Message-ID, In-Reply-To or References header, in order."""
    return tuple(_MSGID.findall(value or ""))


def strip_quoted_tail(text: str) -> str:
    """Drop the quoted copy of earlier mail a reply carries below the new text: the trailing
    ``>`` lines and the "On ... wrote:" line above them. Quotes between new lines stay."""
    lines = text.rstrip().splitlines()
    end = len(lines)
    while end and (lines[end - 1].startswith(">") or not lines[end - 1].strip()):
        end -= 1
    if end == len(lines):
        return text.strip()
    if end and lines[end - 1].rstrip().endswith(("wrote:", "schrieb:", "a écrit :")):
        end -= 1
    kept = "\n".join(lines[:end]).strip()
    return kept or text.strip()


def _body_text(message: email.message.EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    if part is not None:
        return strip_quoted_tail(_content(part))
    part = message.get_body(preferencelist=("html",))
    if part is not None:
        return html_to_text(_content(part))
    return ""


def _content(part: email.message.MIMEPart) -> str:
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # unknown charset, broken transfer encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if not isinstance(content, str):
        return ""
    return content.replace("\r\n", "\n").replace("\r", "\n")


def _address(value: str | None) -> tuple[str, str]:
    name, address = email.utils.parseaddr(value or "")
    return name, address


def is_automatic(message: email.message.Message) -> bool:
    """True for mail no person wrote: auto-replies, bounces, lists (RFC 3834 and customs)."""
    auto = str(message.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(message.get("Precedence", "")).strip().lower()
    _, sender = _address(message.get("From"))
    return (
        auto not in ("", "no")
        or precedence in ("bulk", "junk", "list", "auto_reply")
        or sender.lower().startswith(("mailer-daemon@", "postmaster@"))
        or message.get("List-Id") is not None
        or message.get("X-Autoreply") is not None
    )


def read_mail(raw: bytes) -> Mail:
    """Parse one RFC 5322 message. Header words in RFC 2047 encoding are decoded."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    if not isinstance(message, email.message.EmailMessage):  # pragma: no cover - policy.default
        raise TypeError("expected an EmailMessage")
    from_name, from_address = _address(str(message.get("From", "")))
    _, reply_address = _address(str(message.get("Reply-To", "")))
    subject = " ".join(str(message.get("Subject", "")).split())
    agent, _ = split_agent_tag(subject)
    own_ids = message_ids(str(message.get("Message-ID", "")))
    references = message_ids(str(message.get("References", "")))
    if not references:
        references = message_ids(str(message.get("In-Reply-To", "")))
    return Mail(
        from_address=from_address.lower(),
        from_name=from_name,
        reply_address=(reply_address or from_address).lower(),
        subject=subject,
        text=_body_text(message),
        message_id=own_ids[0] if own_ids else None,
        references=references,
        agent=agent,
        automatic=is_automatic(message),
    )


def reply_subject(subject: str) -> str:
    """``Re: <subject>``, without stacking ``Re:`` on a subject that already has one."""
    stripped = subject.strip()
    if _REPLY_PREFIX.match(stripped):
        return stripped
    return f"Re: {stripped}" if stripped else "Re: your message"


def build_answer(
    *,
    sender: str,
    recipient: str,
    subject: str,
    text: str,
    in_reply_to: str | None,
    references: Sequence[str],
    message_id: str,
) -> email.message.EmailMessage:
    """A plain-text message; threaded when ``in_reply_to`` is given.

    Answers carry ``Auto-Submitted: auto-replied`` (RFC 3834) so that other automatic
    responders do not answer them back.
    """
    message = email.message.EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = message_id
    if in_reply_to:
        chain = [r for r in references if r != in_reply_to] + [in_reply_to]
        message["In-Reply-To"] = in_reply_to
        message["References"] = " ".join(chain)
        message["Auto-Submitted"] = "auto-replied"
    message.set_content(text)
    return message
