"""A real Mumble server (murmurd, Debian's mumble-server) for the tests.

Started from a session-scoped fixture on 127.0.0.1 with an ephemeral port, in a temp dir
holding its ini, sqlite database, log and a self-signed certificate generated here (its
SHA-256 fingerprint is what the adapter pins). Ice/D-Bus are off, auto-ban and the text
flood limit are relaxed (the tests connect often and send quickly). ``-supw`` sets the
SuperUser password first, so a test client can create channels and ACLs. A missing
``murmurd`` fails the tests that use it: ``.ci/run`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.channels.servers.certs import self_signed
from tests.channels.servers.prosody import free_port, wait_for_port

START_TIMEOUT = 20.0
SERVER_PASSWORD = "murmur-server-pw"
SUPERUSER_PASSWORD = "murmur-su-pw"

INI = """\
database={dir}/murmur.sqlite
logfile={dir}/murmur.log
pidfile={dir}/murmur.pid
host=127.0.0.1
port={port}
serverpassword={password}
sslCert={dir}/cert.pem
sslKey={dir}/key.pem
welcometext=
users=100
bandwidth=72000
textmessagelength=5000
allowhtml=true
messageburst=1000
messagelimit=1000
autobanAttempts=0
autobanTimeframe=0
allowping=false
bonjour=false
ice=
icesecretwrite=
"""


@attrs.define
class Murmur:
    dir: Path
    port: int
    fingerprint: str
    proc: subprocess.Popen[bytes] | None = None
    password: str = SERVER_PASSWORD
    superuser_password: str = SUPERUSER_PASSWORD

    @property
    def ini(self) -> Path:
        return self.dir / "murmur.ini"

    def start(self) -> None:
        with (self.dir / "console.log").open("ab") as console:
            self.proc = subprocess.Popen(
                ["murmurd", "-fg", "-ini", str(self.ini)],
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(self.port, self.proc, START_TIMEOUT)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def restart(self) -> None:
        """Kill the server (every connection drops) and start it again on the same port."""
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.dir / "console.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def running_murmur(*, extra_ini: str = "") -> Iterator[Murmur]:
    if shutil.which("murmurd") is None:
        pytest.fail("murmurd is not installed (apt-get install mumble-server; .ci/run does this)")
    base = Path(tempfile.mkdtemp(prefix="fangwire-murmur-"))
    server = Murmur(dir=base, port=free_port(), fingerprint=self_signed(base, "127.0.0.1"))
    server.ini.write_text(
        INI.format(dir=base, port=server.port, password=SERVER_PASSWORD) + extra_ini,
        encoding="utf-8",
    )
    if os.geteuid() == 0:
        # murmurd started as root switches to its own user, which must own its files.
        user = pwd.getpwnam("mumble-server")
        for path in (base, *base.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
    subprocess.run(
        ["murmurd", "-ini", str(server.ini), "-supw", SUPERUSER_PASSWORD],
        check=True,
        capture_output=True,
        timeout=30,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def murmur() -> Iterator[Murmur]:
    with running_murmur() as server:
        yield server
