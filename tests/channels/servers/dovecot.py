"""A real IMAP server for tests: Debian's dovecot on 127.0.0.1, plain IMAP and IMAPS ports.

:func:`start_dovecot` writes a minimal configuration into a fresh directory, starts
``dovecot -F``, waits until both ports answer and returns a :class:`Dovecot` handle.
:meth:`Dovecot.add_user` hands out an unused mailbox; :meth:`Dovecot.deliver` stores a
message in a user's INBOX through ``doveadm save`` (dovecot's own local delivery) and
:meth:`Dovecot.kick` drops a user's IMAP connections (``doveadm kick``). The binary comes
from the ``dovecot-imapd`` package, which ``.ci/run`` installs; a missing binary is an error,
not a skip.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

from tests.channels.servers.certs import self_signed

START_TIMEOUT = 20.0
#: Mailboxes made for one server (each test takes fresh ones).
MAILBOXES = 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


@attrs.frozen
class TestCertificates:
    """A self-signed server certificate for 127.0.0.1; clients trust ``ca_file``."""

    __test__ = False

    cert_file: Path
    key_file: Path

    @property
    def ca_file(self) -> Path:
        return self.cert_file  # self-signed: the certificate is its own authority

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@attrs.define
class Dovecot:
    root: Path
    config: Path
    imap_port: int
    imaps_port: int
    certs: TestCertificates
    process: subprocess.Popen[bytes]
    _pool: dict[str, str]
    passwords: dict[str, str] = attrs.field(factory=dict)

    host = "127.0.0.1"

    def add_user(self, prefix: str = "user") -> tuple[str, str]:
        """A mailbox nobody has used yet; return ``(address, password)`` (address = login).

        The users are made before the server starts: dovecot re-reads a changed passwd-file
        only now and then, so users added later are not reliably known at once.
        """
        for address in self._pool:
            if address not in self.passwords:
                self.passwords[address] = self._pool[address]
                return address, self._pool[address]
        raise RuntimeError("the dovecot test server ran out of mailboxes")

    def knows(self, address: str) -> bool:
        return address.lower() in {a.lower() for a in self.passwords}

    def doveadm(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["doveadm", "-c", str(self.config), *args],
            input=stdin,
            capture_output=True,
            timeout=20,
            check=True,
        )

    def deliver(self, address: str, message: bytes) -> None:
        """Store ``message`` in ``address``'s INBOX as new (unseen) mail."""
        self.doveadm("save", "-u", address, stdin=message)

    def kick(self, address: str) -> str:
        """Close every IMAP connection of ``address`` from the server side; return what
        doveadm reports (the users it kicked)."""
        return self.doveadm("kick", address).stdout.decode()

    @contextmanager
    def client(self, address: str) -> Iterator[imaplib.IMAP4]:
        """A logged-in stdlib IMAP client for ``address`` (plain port), INBOX selected."""
        conn = imaplib.IMAP4(self.host, self.imap_port, timeout=10)
        try:
            conn.login(address, self.passwords[address])
            conn.select("INBOX")
            yield conn
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                conn.logout()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


def start_dovecot() -> Dovecot:
    binary = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/sbin")
    if binary is None:
        raise RuntimeError("dovecot is not installed (apt-get install dovecot-imapd)")
    # Mail processes run as the dovecot user: the tree must be traversable by it, so not
    # under pytest's private (0700) temporary directory.
    root = Path(tempfile.mkdtemp(prefix="fangwire-dovecot-"))
    root.chmod(0o755)
    for sub in ("run", "state", "home"):
        (root / sub).mkdir()
    shutil.chown(root / "home", "dovecot", "dovecot")
    pool = {f"user{n}@mail.test": f"pw-{n}-{os.urandom(6).hex()}" for n in range(MAILBOXES)}
    (root / "users").write_text(
        "".join(f"{address}:{{PLAIN}}{password}\n" for address, password in pool.items()),
        encoding="utf-8",
    )
    (root / "tls").mkdir()
    self_signed(root / "tls", "127.0.0.1")
    certs = TestCertificates(root / "tls" / "cert.pem", root / "tls" / "key.pem")
    config = root / "dovecot.conf"
    imap_port, imaps_port = free_port(), free_port()
    config.write_text(
        CONFIG.format(
            root=root,
            cert=certs.cert_file,
            key=certs.key_file,
            imap_port=imap_port,
            imaps_port=imaps_port,
        ),
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [binary, "-F", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Dovecot(root, config, imap_port, imaps_port, certs, process, pool)
    try:
        wait_for_port(imap_port, START_TIMEOUT, process)
        wait_for_port(imaps_port, START_TIMEOUT, process)
    except BaseException:
        server.stop()
        raise
    return server
