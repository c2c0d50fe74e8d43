"""A real prosody XMPP server for the tests, on 127.0.0.1 with an ephemeral port.

Started from a session-scoped fixture: a temp dir holds the config, the data (owned by the
``prosody`` user, which prosodyctl and prosody switch to when started as root) and the log.
The ``prosody`` fixture offers no TLS (the adapter is pointed at it with ``use_tls = false``,
``allow_plaintext = true``); ``prosody_tls`` requires STARTTLS with a certificate for
``localhost`` generated at test time (``cert.pem`` is also the CA to trust). Both have one
virtual host ``localhost`` and a MUC component ``conference.localhost``. A missing
``prosody`` binary fails the tests that use it: ``.ci/run`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.channels.servers.certs import self_signed

DOMAIN = "localhost"
MUC_DOMAIN = "conference.localhost"
START_TIMEOUT = 15.0

CONFIG = """\
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
daemonize = false
log = {{ debug = "{dir}/prosody.log" }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "register"; "offline"{tls_module} }}
modules_disabled = {{ "s2s"; "posix"{no_tls} }}
authentication = "internal_plain"
{encryption}
VirtualHost "{domain}"
Component "{muc}" "muc"
    restrict_room_creation = false
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server not listening on {port} after {timeout}s")


@attrs.define
class Prosody:
    dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    domain: str = DOMAIN
    muc_domain: str = MUC_DOMAIN

    @property
    def config(self) -> Path:
        return self.dir / "prosody.cfg.lua"

    def prosodyctl(self, *args: str) -> None:
        subprocess.run(
            ["prosodyctl", "--config", str(self.config), *args],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def register(self, user: str, password: str) -> str:
        """Create an account; return its bare JID."""
        self.prosodyctl("register", user, self.domain, password)
        return f"{user}@{self.domain}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["prosody", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
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


PLAIN = "allow_unencrypted_plain_auth = true\nc2s_require_encryption = false"
TLS = (
    "c2s_require_encryption = true\n"
    'ssl = {{ certificate = "{dir}/cert.pem"; key = "{dir}/key.pem" }}'
)


@contextlib.contextmanager
def running_prosody(*, tls: bool) -> Iterator[Prosody]:
    if shutil.which("prosody") is None or shutil.which("prosodyctl") is None:
        pytest.fail("prosody is not installed (apt-get install prosody; .ci/run does this)")
    # Not under pytest's tmp dir: its parents are private to root, and prosody runs as its user.
    base = Path(tempfile.mkdtemp(prefix="fangwire-prosody-"))
    server = Prosody(dir=base, port=free_port())
    (base / "data").mkdir()
    if tls:
        self_signed(base, DOMAIN)
    server.config.write_text(
        CONFIG.format(
            dir=base,
            port=server.port,
            domain=DOMAIN,
            muc=MUC_DOMAIN,
            tls_module='; "tls"' if tls else "",
            no_tls="" if tls else '; "tls"',
            encryption=TLS.format(dir=base) if tls else PLAIN,
        ),
        encoding="utf-8",
    )
    if os.geteuid() == 0:
        user = pwd.getpwnam("prosody")
        os.chmod(base, 0o755)  # noqa: S103 - prosody's user must reach its data
        for path in (base, *base.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def prosody() -> Iterator[Prosody]:
    with running_prosody(tls=False) as server:
        yield server


@pytest.fixture(scope="session")
def prosody_tls() -> Iterator[Prosody]:
    with running_prosody(tls=True) as server:
        yield server
