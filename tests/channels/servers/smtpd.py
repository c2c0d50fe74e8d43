"""A real SMTP submission server for tests: aiosmtpd delivering into dovecot mailboxes.

:func:`start_submission` runs an aiosmtpd ``Controller`` on 127.0.0.1 in one of three modes:
``starttls`` (STARTTLS required before AUTH, like port 587), ``tls`` (implicit TLS, like port
465) or ``plain``. Clients must authenticate with a dovecot user's password. Each accepted
recipient must be a dovecot mailbox (others get ``550 5.1.1``); accepted mail is stored in the
recipient's INBOX with ``doveadm save``, so whoever sends through this server can be read back
over IMAP, and is also kept in :attr:`MailDrop.messages`.
"""

from __future__ import annotations

import email
import email.message
import email.policy
from typing import Any, Literal

import attrs
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.channels.servers.dovecot import Dovecot, free_port

Mode = Literal["starttls", "tls", "plain"]


@attrs.define
class MailDrop:
    """The handler: checks recipients against dovecot and delivers accepted mail there."""

    dovecot: Dovecot
    messages: list[email.message.EmailMessage] = attrs.field(factory=list)
    refuse_data_for: set[str] = attrs.field(factory=set)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self.dovecot.knows(address):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        if any(r in self.refuse_data_for for r in envelope.rcpt_tos):
            return "554 5.7.1 Message rejected by policy"
        for rcpt in envelope.rcpt_tos:
            self.dovecot.deliver(rcpt, raw)
        self.messages.append(message)
        return "250 2.0.0 OK queued"


@attrs.define
class Submission:
    controller: Controller
    drop: MailDrop
    port: int
    mode: Mode
    host: str = "127.0.0.1"

    def stop(self) -> None:
        self.controller.stop()


def start_submission(dovecot: Dovecot, mode: Mode) -> Submission:
    drop = MailDrop(dovecot)

    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode()
        ok = dovecot.passwords.get(login) == auth_data.password.decode()
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    port = free_port()
    kwargs: dict[str, Any] = {
        "hostname": "127.0.0.1",
        "port": port,
        "authenticator": authenticator,
        "auth_required": True,
        "server_hostname": "mail.test",
    }
    if mode == "starttls":
        kwargs.update(tls_context=dovecot.certs.server_context(), require_starttls=True)
    else:
        # aiosmtpd counts only STARTTLS as TLS when deciding to offer AUTH, and warns when
        # AUTH is required without it: offer AUTH without requiring it (the client under
        # test logs in anyway, and a wrong password is still refused).
        kwargs.update(auth_require_tls=False, auth_required=False)
        if mode == "tls":
            kwargs.update(ssl_context=dovecot.certs.server_context())
    controller = Controller(drop, **kwargs)
    controller.start()
    return Submission(controller, drop, port, mode)
