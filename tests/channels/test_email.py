"""The ``email`` channel against real servers: dovecot (IMAP) and aiosmtpd (SMTP submission).

The person writing to the bot is a second mailbox on the same dovecot: it sends with the
standard library's ``smtplib`` through the submission server (which delivers into the bot's
INBOX with ``doveadm save``) and reads the bot's answer from its own INBOX with ``imaplib``.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import imaplib
import logging
import smtplib
import ssl
from collections.abc import Iterator
from email.headerregistry import Address
from typing import Any

import anyio
import pytest

from fangwire.agents import AgentSpec
from fangwire.channels import ChannelError, OutboundMessage
from fangwire.runtime import Runtime
from fangwire.testing.channels import ChannelConformance
from fangwire_channels.email import EmailChannel
from fangwire_channels.mailtext import (
    build_answer,
    html_to_text,
    read_mail,
    reply_subject,
    split_agent_tag,
    strip_quoted_tail,
)
from tests.channels.servers.dovecot import Dovecot, free_port, start_dovecot
from tests.channels.servers.smtpd import Submission, start_submission

TIMEOUT = 20


# -- servers -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    server = start_dovecot()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def submission(dovecot: Dovecot) -> Iterator[dict[str, Submission]]:
    servers = {mode: start_submission(dovecot, mode) for mode in ("starttls", "tls", "plain")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def accounts(dovecot: Dovecot) -> tuple[tuple[str, str], tuple[str, str]]:
    """A fresh bot mailbox and a fresh person's mailbox for one test."""
    return dovecot.add_user("bot"), dovecot.add_user("alice")


def config(
    dovecot: Dovecot,
    submission: dict[str, Submission],
    bot: str,
    *,
    tls: bool = True,
    **extra: object,
) -> str:
    lines = [
        "[channels.email]",
        f'username = "{bot}"',
        'imap_host = "127.0.0.1"',
        f"imap_port = {dovecot.imaps_port if tls else dovecot.imap_port}",
        'smtp_host = "127.0.0.1"',
        f"smtp_port = {submission['starttls' if tls else 'plain'].port}",
        f'ca_file = "{dovecot.certs.ca_file}"',
        "poll_interval_secs = 1",
        'agent = "assistant"',
    ]
    if not tls:
        lines += ['imap_security = "plain"', 'smtp_security = "plain"']
    for key, value in extra.items():
        lines.append(
            f"{key} = {value!r}".replace("'", '"').replace("True", "true").replace("False", "false")
        )
    return "\n".join(lines) + "\n"


# -- the person on the other side ---------------------------------------------------------------


def compose(
    sender: str, to: str, subject: str, body: str, **headers: str
) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain="mail.test")
    for key, value in headers.items():
        message[key.replace("_", "-")] = value
    message.set_content(body)
    return message


async def user_sends(
    submission: Submission, dovecot: Dovecot, user: str, message: email.message.EmailMessage
) -> str:
    """Send through the STARTTLS submission port with the standard library's client."""

    def run() -> None:
        with smtplib.SMTP(submission.host, submission.port, timeout=10) as smtp:
            smtp.starttls(context=dovecot.certs.client_context())
            smtp.login(user, dovecot.passwords[user])
            smtp.send_message(message)

    await anyio.to_thread.run_sync(run)
    return str(message["Message-ID"])


def _fetch_all(dovecot: Dovecot, address: str) -> list[tuple[email.message.EmailMessage, str]]:
    out = []
    with dovecot.client(address) as conn:
        _, data = conn.uid("SEARCH", "ALL")
        for uid in data[0].split():
            _, parts = conn.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
            head, raw = parts[0]
            flags = " ".join(
                imaplib.ParseFlags(head)[i].decode() for i in range(len(imaplib.ParseFlags(head)))
            )
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(parsed, email.message.EmailMessage)
            out.append((parsed, flags))
    return out


async def mailbox(dovecot: Dovecot, address: str) -> list[tuple[email.message.EmailMessage, str]]:
    return await anyio.to_thread.run_sync(_fetch_all, dovecot, address)


async def wait_for_mail(
    dovecot: Dovecot, address: str, count: int
) -> list[email.message.EmailMessage]:
    with anyio.fail_after(TIMEOUT):
        while True:
            found = await mailbox(dovecot, address)
            if len(found) >= count:
                return [m for m, _ in found]
            await anyio.sleep(0.1)


async def wait_for_flags(dovecot: Dovecot, address: str, *flags: str) -> None:
    with anyio.fail_after(TIMEOUT):
        while True:
            found = await mailbox(dovecot, address)
            if found and all(all(f in have for f in flags) for _, have in found):
                return
            await anyio.sleep(0.1)


def body(message: email.message.EmailMessage) -> str:
    """The text as a mail client shows it (line ends normalised)."""
    return str(message.get_content()).replace("\r\n", "\n").strip()


def adapter(runtime: Runtime) -> EmailChannel:
    channel = runtime.channels.running("email").adapter
    assert isinstance(channel, EmailChannel)
    return channel


# -- end to end ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_mail_is_answered_in_its_thread_over_tls(make_runtime, dovecot, submission, accounts):
    (bot, bot_pw), (alice, _) = accounts
    runtime = make_runtime(config(dovecot, submission, bot), environ={"EMAIL_PASSWORD": bot_pw})
    async with runtime.serving(), runtime.bus.subscribe("channel.inbound") as sub:
        first = compose(alice, bot, "Hello bot", "ping")
        first_id = await user_sends(submission["starttls"], dovecot, alice, first)
        (answer,) = await wait_for_mail(dovecot, alice, 1)
        await wait_for_flags(dovecot, bot, "\\Seen", "\\Answered")
        with anyio.fail_after(TIMEOUT):
            inbound = await sub.receive()

        # the person answers the answer: the thread keeps its root
        follow = compose(
            alice,
            bot,
            "Re: Hello bot",
            "and again\n\nOn Sunday the bot wrote:\n> echo: Subject: Hello bot\n>\n> ping\n",
            In_Reply_To=str(answer["Message-ID"]),
            References=f"{first_id} {answer['Message-ID']}",
        )
        follow_id = await user_sends(submission["starttls"], dovecot, alice, follow)
        answers = await wait_for_mail(dovecot, alice, 2)
        with anyio.fail_after(TIMEOUT):
            inbound2 = await sub.receive()
        assert runtime.channels.runners["email"].status == "running"

    assert answer["Subject"] == "Re: Hello bot"
    assert answer["From"] == bot
    assert answer["To"] == alice
    assert answer["In-Reply-To"] == first_id
    assert answer["References"] == first_id
    assert answer["Auto-Submitted"] == "auto-replied"
    assert body(answer) == "echo: Subject: Hello bot\n\nping"
    assert inbound.payload["thread_id"] == first_id
    assert inbound.payload["sender"] == alice

    second = answers[1]
    assert second["Subject"] == "Re: Hello bot"
    assert second["In-Reply-To"] == follow_id
    assert second["References"].split() == [first_id, str(answer["Message-ID"]), follow_id]
    assert inbound2.payload["thread_id"] == first_id
    assert inbound2.payload["text"] == "Subject: Re: Hello bot\n\nand again"


@pytest.mark.anyio
async def test_polling_without_idle_over_plain_connections(
    make_runtime, dovecot, submission, accounts
):
    (bot, bot_pw), (alice, _) = accounts
    text = config(dovecot, submission, bot, tls=False, use_idle=False)
    runtime = make_runtime(text, environ={"EMAIL_PASSWORD": bot_pw})
    async with runtime.serving():
        await user_sends(submission["starttls"], dovecot, alice, compose(alice, bot, "", "polled"))
        (answer,) = await wait_for_mail(dovecot, alice, 1)
    assert body(answer) == "echo: polled"
    assert answer["Subject"] == "Re: your message"


@pytest.mark.anyio
async def test_implicit_tls_submission_sends_a_new_message(
    make_runtime, dovecot, submission, accounts
):
    (bot, bot_pw), (alice, _) = accounts
    text = config(dovecot, submission, bot).replace(
        f"smtp_port = {submission['starttls'].port}", f"smtp_port = {submission['tls'].port}"
    )
    text += 'smtp_security = "tls"\n'
    runtime = make_runtime(text, environ={"EMAIL_PASSWORD": bot_pw})
    async with runtime.serving():
        receipt = await runtime.channels.send(
            "email", alice, OutboundMessage(text="Grüße, hello", metadata={"subject": "Notice"})
        )
        (mail,) = await wait_for_mail(dovecot, alice, 1)
    assert receipt.message_ids == (str(mail["Message-ID"]),)
    assert mail["Subject"] == "Notice"
    assert mail["In-Reply-To"] is None
    assert body(mail) == "Grüße, hello"


@pytest.mark.anyio
async def test_subject_tag_routes_to_that_agent(make_runtime, dovecot, submission, accounts):
    (bot, bot_pw), (alice, _) = accounts
    runtime = make_runtime(config(dovecot, submission, bot), environ={"EMAIL_PASSWORD": bot_pw})
    async with runtime.serving(), runtime.bus.subscribe("channel.outbound") as sub:
        coder = await runtime.agents.spawn(
            AgentSpec(name="coder", provider="echo", model="echo-1"), actor="t"
        )
        message = compose(alice, bot, "[coder] Fix the build", "it fails")
        await user_sends(submission["starttls"], dovecot, alice, message)
        (answer,) = await wait_for_mail(dovecot, alice, 1)
        with anyio.fail_after(TIMEOUT):
            outbound = await sub.receive()
    assert outbound.payload["from"] == coder.id
    assert answer["Subject"] == "Re: [coder] Fix the build"
    assert body(answer) == "echo: Subject: Fix the build\n\nit fails"


@pytest.mark.anyio
async def test_encoded_subject_and_html_only_mail(make_runtime, dovecot, submission, accounts):
    (bot, bot_pw), (alice, _) = accounts
    runtime = make_runtime(config(dovecot, submission, bot), environ={"EMAIL_PASSWORD": bot_pw})
    raw = (
        f"From: =?utf-8?q?Al=C3=AFce?= <{alice}>\r\n"
        f"To: {bot}\r\n"
        "Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\n"
        "Message-ID: <html-1@mail.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        "<html><head><style>p{color:red}</style></head><body><p>Hello&nbsp;<b>w=C3=B6rld</b>"
        "</p><script>x()</script></body></html>\r\n"
    ).encode()
    async with runtime.serving(), runtime.bus.subscribe("channel.inbound") as sub:
        await anyio.to_thread.run_sync(dovecot.deliver, bot, raw)
        with anyio.fail_after(TIMEOUT):
            inbound = await sub.receive()
        (answer,) = await wait_for_mail(dovecot, alice, 1)
    assert inbound.payload["text"] == "Subject: Grüße\n\nHello wörld"
    assert inbound.payload["sender_name"] == "Alïce"
    assert answer["Subject"] == "Re: Grüße"


@pytest.mark.anyio
async def test_refused_recipient_raises_with_the_servers_reply(
    make_runtime, dovecot, submission, accounts
):
    (bot, bot_pw), _ = accounts
    runtime = make_runtime(config(dovecot, submission, bot), environ={"EMAIL_PASSWORD": bot_pw})
    async with runtime.serving():
        with pytest.raises(ChannelError) as refused:
            await runtime.channels.send("email", "nobody@mail.test", OutboundMessage(text="hi"))
        counters = runtime.channels.runners["email"].counters
    assert "550 5.1.1" in refused.value.reason
    assert "User unknown" in refused.value.reason
    assert refused.value.retryable is False
    assert counters.sent == 0
    assert counters.send_failures == 1


@pytest.mark.anyio
async def test_wrong_smtp_password_is_a_refusal(make_runtime, dovecot, submission, accounts):
    (bot, _), (alice, _) = accounts
    runtime = make_runtime(config(dovecot, submission, bot), environ={"EMAIL_PASSWORD": "wrong"})
    async with runtime.serving():
        with pytest.raises(ChannelError, match="SMTP login refused: 535"):
            await runtime.channels.send("email", alice, OutboundMessage(text="hi"))


@pytest.mark.anyio
async def test_restart_neither_answers_again_nor_drops_mail(
    make_runtime, dovecot, submission, accounts
):
    (bot, bot_pw), (alice, _) = accounts
    text = config(dovecot, submission, bot)
    runtime = make_runtime(text, environ={"EMAIL_PASSWORD": bot_pw})
    async with runtime.serving():
        await user_sends(submission["starttls"], dovecot, alice, compose(alice, bot, "one", "1"))
        await wait_for_mail(dovecot, alice, 1)
        await wait_for_flags(dovecot, bot, "\\Seen", "\\Answered")
    # the daemon is down while the next mail arrives
    await user_sends(submission["starttls"], dovecot, alice, compose(alice, bot, "two", "2"))
    runtime = make_runtime(text, environ={"EMAIL_PASSWORD": bot_pw})
    async with runtime.serving():
        answers = await wait_for_mail(dovecot, alice, 2)
        # mail "one" is older than "two": had it been answered again, that answer would have
        # come first in the same search round.
        assert [a["Subject"] for a in answers] == ["Re: one", "Re: two"]
        await wait_for_flags(dovecot, bot, "\\Seen", "\\Answered")
        assert len(await mailbox(dovecot, alice)) == 2


@pytest.mark.anyio
async def test_own_and_automatic_mail_is_not_answered(make_runtime, dovecot, submission, accounts):
    (bot, bot_pw), (alice, _) = accounts
    runtime = make_runtime(config(dovecot, submission, bot), environ={"EMAIL_PASSWORD": bot_pw})
    own = compose(bot, bot, "note to self", "x")
    auto = compose(alice, bot, "Out of office", "away", Auto_Submitted="auto-replied")
    person = compose(alice, bot, "real", "question")
    for message in (own, auto, person):
        dovecot.deliver(bot, bytes(message))
    async with runtime.serving():
        answers = await wait_for_mail(dovecot, alice, 1)
        await wait_for_flags(dovecot, bot, "\\Seen")
        assert [a["Subject"] for a in answers] == ["Re: real"]
        flags = [f for _, f in await mailbox(dovecot, bot)]
    assert ["\\Answered" in f for f in flags] == [False, False, True]


@pytest.mark.anyio
async def test_reconnects_after_the_server_drops_the_connection(
    make_runtime, dovecot, submission, accounts
):
    (bot, bot_pw), (alice, _) = accounts
    runtime = make_runtime(config(dovecot, submission, bot), environ={"EMAIL_PASSWORD": bot_pw})
    async with runtime.serving():
        await user_sends(submission["starttls"], dovecot, alice, compose(alice, bot, "a", "1"))
        await wait_for_mail(dovecot, alice, 1)
        runner = runtime.channels.runners["email"]
        kicked = await anyio.to_thread.run_sync(dovecot.kick, bot)
        assert bot in kicked
        with anyio.fail_after(TIMEOUT):
            while runner.counters.last_error is None:
                await anyio.sleep(0.05)
        assert "IMAP connection lost" in runner.counters.last_error
        await user_sends(submission["starttls"], dovecot, alice, compose(alice, bot, "b", "2"))
        answers = await wait_for_mail(dovecot, alice, 2)
        assert runner.status == "running"
    assert [a["Subject"] for a in answers] == ["Re: a", "Re: b"]


@pytest.mark.anyio
async def test_stops_promptly_while_idling(make_runtime, dovecot, submission, accounts):
    (bot, bot_pw), (alice, _) = accounts
    runtime = make_runtime(config(dovecot, submission, bot), environ={"EMAIL_PASSWORD": bot_pw})
    async with runtime.serving():
        await user_sends(submission["starttls"], dovecot, alice, compose(alice, bot, "a", "1"))
        await wait_for_mail(dovecot, alice, 1)
        with anyio.fail_after(6):
            await runtime.channels.stop_all()
        assert "email" not in runtime.channels.runners


@pytest.mark.anyio
async def test_password_stays_out_of_repr_and_logs(
    make_runtime, dovecot, submission, accounts, caplog
):
    (bot, bot_pw), (alice, _) = accounts
    caplog.set_level(logging.DEBUG)
    runtime = make_runtime(config(dovecot, submission, bot), environ={"EMAIL_PASSWORD": bot_pw})
    async with runtime.serving():
        await user_sends(submission["starttls"], dovecot, alice, compose(alice, bot, "s", "x"))
        await wait_for_mail(dovecot, alice, 1)
        channel = adapter(runtime)
        assert bot_pw not in repr(channel)
        assert bot_pw not in repr(channel.ctx)
    assert "imap" in caplog.text.lower()  # the IMAP conversation was logged ...
    assert bot_pw not in caplog.text  # ... without the password


@pytest.mark.anyio
async def test_unreachable_imap_server_is_reported(make_runtime, dovecot, submission, accounts):
    (bot, bot_pw), _ = accounts
    text = config(dovecot, submission, bot).replace(
        f"imap_port = {dovecot.imaps_port}", "imap_port = 1"
    )
    runtime = make_runtime(text, environ={"EMAIL_PASSWORD": bot_pw})
    async with runtime.serving():
        runner = runtime.channels.runners["email"]
        with anyio.fail_after(TIMEOUT):
            while runner.counters.last_error is None:
                await anyio.sleep(0.05)
    assert "IMAP server 127.0.0.1:1 unreachable" in runner.counters.last_error


# -- parsing and building -----------------------------------------------------------------------


def test_plain_part_is_preferred_over_html() -> None:
    message = email.message.EmailMessage()
    message["From"] = "Bob <Bob@Example.org>"
    message["Subject"] = "hi"
    message.set_content("plain words")
    message.add_alternative("<p>html words</p>", subtype="html")
    mail = read_mail(bytes(message))
    assert mail.text == "plain words"
    assert mail.from_address == "bob@example.org"
    assert mail.from_name == "Bob"


def test_the_quoted_tail_of_a_reply_is_dropped() -> None:
    reply = "Thanks, and one more thing.\n\nOn Mon, Ann <a@x> wrote:\n> echo: hello\n>\n> more\n"
    assert strip_quoted_tail(reply) == "Thanks, and one more thing."
    inline = "> your point\nmy answer\n> another point\nanother answer"
    assert strip_quoted_tail(inline) == inline
    assert strip_quoted_tail("> only a quote") == "> only a quote"


def test_html_is_reduced_to_its_visible_text() -> None:
    markup = "<div>One<br>two &amp; <i>three</i></div><style>.x{}</style><p>four</p>"
    assert html_to_text(markup) == "One\ntwo & three\n\nfour"


def test_agent_tag_and_reply_subject() -> None:
    assert split_agent_tag("[coder] Fix it") == ("coder", "Fix it")
    assert split_agent_tag("  [a-b_c]x") == ("a-b_c", "x")
    assert split_agent_tag("[two words] x") == (None, "[two words] x")
    assert split_agent_tag("No tag") == (None, "No tag")
    assert reply_subject("Hello") == "Re: Hello"
    assert reply_subject("RE: Hello") == "RE: Hello"
    assert reply_subject("") == "Re: your message"


def test_threading_ids_come_from_references_then_in_reply_to() -> None:
    raw = (
        b"From: a@x\r\nMessage-ID: <c@x>\r\nIn-Reply-To: <b@x>\r\nReferences: <a@x> <b@x>\r\n\r\nx"
    )
    mail = read_mail(raw)
    assert (mail.message_id, mail.references, mail.thread_root) == (
        "<c@x>",
        ("<a@x>", "<b@x>"),
        "<a@x>",
    )
    mail = read_mail(b"From: a@x\r\nMessage-ID: <c@x>\r\nIn-Reply-To: <b@x>\r\n\r\nx")
    assert mail.thread_root == "<b@x>"
    mail = read_mail(b"From: a@x\r\nMessage-ID: <c@x>\r\n\r\nx")
    assert mail.thread_root == "<c@x>"


def test_answer_headers_and_long_lines() -> None:
    text = "word " * 1000  # one 5000-character line
    answer = build_answer(
        sender="bot@x.test",
        recipient=str(Address("Ann", addr_spec="ann@x.test")),
        subject="Re: Grüße",
        text=text,
        in_reply_to="<b@x>",
        references=["<a@x>", "<b@x>"],
        message_id="<m@x.test>",
    )
    raw = bytes(answer)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert b"Subject: Re: =?utf-8?q?Gr=C3=BC=C3=9Fe?=" in raw
    parsed = read_mail(raw)
    assert parsed.text == text.strip()
    assert parsed.references == ("<a@x>", "<b@x>")
    assert answer["References"] == "<a@x> <b@x>"


def test_tls_defaults_follow_the_port() -> None:
    fields = {f.key: f for f in EmailChannel.config_fields}
    assert fields["imap_port"].default == 993
    assert fields["smtp_port"].default == 587
    assert fields["password"].secret and fields["password"].env == "EMAIL_PASSWORD"
    assert ssl.create_default_context().check_hostname  # certificates are checked by default


# -- conformance ----------------------------------------------------------------------------------


class EmailPeer:
    """A person with a mailbox on the test dovecot, writing to and reading from the bot."""

    def __init__(self, dovecot: Dovecot, submission: dict[str, Submission], accounts: Any) -> None:
        (self.bot, bot_pw), (self.person, _) = accounts
        self.dovecot = dovecot
        self.submission = submission["starttls"]
        self.settings = {
            "username": self.bot,
            "password": bot_pw,
            "imap_host": "127.0.0.1",
            "imap_port": dovecot.imaps_port,
            "smtp_host": "127.0.0.1",
            "smtp_port": self.submission.port,
            "ca_file": str(dovecot.certs.ca_file),
            "poll_interval_secs": 1,
        }
        self.target = self.person
        self.refused_target = "nobody@mail.test"
        self.unreachable_settings = {**self.settings, "imap_port": free_port()}

    async def inbound(self, text: str) -> None:
        await user_sends(
            self.submission, self.dovecot, self.person, compose(self.person, self.bot, "", text)
        )

    async def received(self, count: int) -> list[str]:
        return [body(m) for m in await wait_for_mail(self.dovecot, self.person, count)]


class TestEmailConformance(ChannelConformance):
    adapter = EmailChannel

    @pytest.fixture
    async def peer(self, dovecot, submission, accounts) -> EmailPeer:
        return EmailPeer(dovecot, submission, accounts)


@pytest.mark.anyio
async def test_test_message_goes_to_the_bots_own_address_and_is_not_answered(
    make_runtime, dovecot, submission, accounts
):
    (bot, bot_pw), _ = accounts
    runtime = make_runtime(config(dovecot, submission, bot), environ={"EMAIL_PASSWORD": bot_pw})
    async with runtime.serving():
        receipt = await runtime.channels.test("email", None)
        (mail,) = await wait_for_mail(dovecot, bot, 1)
        await wait_for_flags(dovecot, bot, "\\Seen")
        counters = runtime.channels.runners["email"].counters
    assert receipt.message_ids == (str(mail["Message-ID"]),)
    assert body(mail) == "fangwire test message"
    assert counters.received == 0
