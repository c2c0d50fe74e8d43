"""A real IRC server for channel tests: InspIRCd (Debian package ``inspircd``) on 127.0.0.1.

:func:`inspircd_fixture` (fixture ``inspircd``, session-scoped) runs one server with a plain
listener and a TLS listener (a self-signed certificate made at start, served by InspIRCd's
own ``ssl_gnutls`` module), fake lag off and a high command rate so tests are not
throttled, and an operator account (:data:`OPER_NAME` / :data:`OPER_PASSWORD`) a test uses to
``KILL`` a connection.
The tests fail, not skip, when the binary is missing: ``.ci/run`` installs it.

:class:`RawIrcClient` is the "other user": a plain-socket IRC client that registers, joins,
sends and waits for lines.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import attrs
import pytest
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fangwire_channels.ircproto import Message, parse, serialize

OPER_NAME = "testoper"
OPER_PASSWORD = "oper-pass-1"
READY_TIMEOUT = 15.0


@attrs.frozen
class InspIRCd:
    host: str
    port: int
    tls_port: int
    ca_file: Path
    workdir: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` / 127.0.0.1 (it is its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


CONFIG = """
<server name="irc.test" description="fangwire test server" network="TestNet">
<admin name="test" nick="test" email="test@localhost">
<bind address="127.0.0.1" port="{port}" type="clients">
<bind address="127.0.0.1" port="{tls_port}" type="clients" sslprofile="tls">
<module name="ssl_gnutls">
<sslprofile name="tls" provider="gnutls" certfile="{cert}" keyfile="{key}" hash="sha256"
            requestclientcert="no">
<module name="cap">
<connect allow="*" timeout="60" threshold="100000" commandrate="100000" fakelag="off"
         pingfreq="120" hardsendq="1048576" softsendq="65536" recvq="65536"
         localmax="500" globalmax="500" resolvehostnames="no" useident="no">
<class name="BanControl" commands="KILL">
<type name="TestOper" classes="BanControl" host="oper.test">
<oper name="{oper}" password="{oper_password}" host="*@*" type="TestOper">
<pid file="{workdir}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{workdir}/ircd.log">
<options>
<limits maxnick="30" maxchan="64">
"""


def wait_listening(host: str, port: int, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="session", name="inspircd")
def inspircd_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InspIRCd]:
    binary = shutil.which("inspircd") or (
        "/usr/sbin/inspircd" if Path("/usr/sbin/inspircd").exists() else None
    )
    if binary is None:
        pytest.fail("inspircd is not installed (apt-get install -y inspircd; .ci/run does it)")
    workdir = tmp_path_factory.mktemp("inspircd")
    cert, key = make_certificate(workdir)
    port, tls_port = free_port(), free_port()
    config = workdir / "inspircd.conf"
    config.write_text(
        CONFIG.format(
            port=port,
            tls_port=tls_port,
            cert=cert,
            key=key,
            oper=OPER_NAME,
            oper_password=OPER_PASSWORD,
            workdir=workdir,
        )
    )
    output = (workdir / "stdout.txt").open("wb")
    process = subprocess.Popen(
        [binary, "--nofork", "--runasroot", f"--config={config}"],
        stdout=output,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            wait_listening("127.0.0.1", port, deadline)
            wait_listening("127.0.0.1", tls_port, deadline)
        except OSError:
            process.kill()
            pytest.fail(f"inspircd did not start: {(workdir / 'stdout.txt').read_text()[-2000:]}")
        yield InspIRCd("127.0.0.1", port, tls_port, cert, workdir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        output.close()


class RawIrcClient:
    """A plain-socket IRC user: everything it reads is kept in :attr:`lines`."""

    def __init__(self, stream: ByteStream, nick: str) -> None:
        self.stream = stream
        self.reader = BufferedByteReceiveStream(stream)
        self.nick = nick
        self.lines: list[bytes] = []
        self.closed = False
        self._seen = 0

    @classmethod
    async def connect(cls, host: str, port: int, nick: str) -> RawIrcClient:
        stream = await anyio.connect_tcp(host, port)
        client = cls(stream, nick)
        await client.send(f"NICK {nick}")
        await client.send(f"USER {nick} 0 * :test user")
        await client.wait_for(lambda m: m.command == "001")
        return client

    async def send(self, line: str) -> None:
        await self.stream.send(line.encode() + b"\r\n")

    async def privmsg(self, target: str, text: str) -> None:
        await self.send(serialize("PRIVMSG", target, text))

    async def join(self, channel: str) -> None:
        await self.send(f"JOIN {channel}")
        await self.wait_for(lambda m: m.command == "366" and m.param(1).lower() == channel.lower())

    async def read(self) -> Message:
        while True:
            raw = await self.reader.receive_until(b"\r\n", 65536)
            self.lines.append(raw)
            msg = parse(raw.decode("utf-8", "replace"))
            if msg.command == "PING":
                await self.send(serialize("PONG", *msg.params[-1:]))
                continue
            return msg

    async def wait_for(self, predicate: Callable[[Message], bool]) -> Message:
        """The next message (from now on) that satisfies ``predicate``."""
        while True:
            msg = await self.read()
            if predicate(msg):
                return msg

    async def oper_kill(self, nick: str) -> None:
        await self.send(f"OPER {OPER_NAME} {OPER_PASSWORD}")
        await self.wait_for(lambda m: m.command == "381")
        await self.send(f"KILL {nick} :test drops the connection")

    async def __aenter__(self) -> RawIrcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        with anyio.move_on_after(1), contextlib.suppress(anyio.BrokenResourceError, OSError):
            await self.send("QUIT :done")
        await self.stream.aclose()


@pytest.fixture(name="irc_user")
async def irc_user_fixture(
    inspircd: InspIRCd,
) -> AsyncIterator[Callable[[str], Awaitable[RawIrcClient]]]:
    """Connect users to the ``inspircd`` server by nick; all are disconnected at teardown."""
    clients: list[RawIrcClient] = []

    async def connect(nick: str) -> RawIrcClient:
        client = await RawIrcClient.connect(inspircd.host, inspircd.port, nick)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.aclose()
