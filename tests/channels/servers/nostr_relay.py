"""A real Nostr relay for tests: ``nostr-relay`` 1.14 from PyPI on 127.0.0.1.

nostr-relay brings its own web stack (uvicorn with ``websockets``, gunicorn, aiohttp,
SQLAlchemy). Installed next to fangwire it would change how uvicorn serves fangwire's own
WebSocket routes in other tests (uvicorn picks ``websockets`` over ``wsproto`` when both are
there), so it lives in its own virtual environment, made once and cached under
``~/.cache/fangwire-tests`` (``FANGWIRE_TEST_CACHE`` overrides the place). pip must reach
PyPI the first time; a failed install fails the tests that need the relay.

:func:`start_relay` runs ``nostr-relay serve --use-uvicorn`` with an sqlite database in a
fresh directory and the packaged validators (signature, age, content size: 4096 characters)
unless told otherwise;
:meth:`Relay.restart` stops it and starts it again on the same port with the same database.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import attrs

from tests.channels.servers.dovecot import free_port, wait_for_port

VERSION = "1.14"
START_TIMEOUT = 60.0

CONFIG = """\
DEBUG: false
relay_name: fangwire test relay
storage:
  sqlalchemy.url: sqlite+aiosqlite:///{db}
  num_concurrent_reqs: 4
  num_concurrent_adds: 1
  validators:
{validators}
verification:
  nip05_verification: disabled
gunicorn:
  bind: 127.0.0.1:{port}
  workers: 1
  loglevel: warning
  reload: false
authentication:
  enabled: false
message_timeout: 1800
subscription_limit: 32
max_limit: 6000
"""


def relay_executable() -> Path:
    """The ``nostr-relay`` script of the cached environment, installed on first use."""
    cache = Path(os.environ.get("FANGWIRE_TEST_CACHE") or Path.home() / ".cache/fangwire-tests")
    venv = cache / f"nostr-relay-{VERSION}"
    script = venv / "bin" / "nostr-relay"
    marker = venv / ".complete"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"nostr-relay-{VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
            done = subprocess.run(
                [*pip, f"nostr-relay=={VERSION}"], capture_output=True, timeout=600
            )
            if done.returncode:
                raise RuntimeError(f"installing nostr-relay failed:\n{done.stderr.decode()}")
            marker.write_text(VERSION)
    return script


@attrs.define
class Relay:
    root: Path
    port: int
    script: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.root / "relay.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.script), "-c", str(self.root / "nostr.yaml"), "serve", "--use-uvicorn"],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_for_port(self.port, START_TIMEOUT, self.process)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


#: The packaged validators: content size (4096 characters), signature, age.
STRICT = ("is_not_too_large", "is_signed", "is_recent")


def start_relay(validators: tuple[str, ...] = STRICT) -> Relay:
    """Start a relay; ``validators`` names the checks it applies to published events (a relay
    without ``is_signed`` stores and forwards forged events, for testing their receivers)."""
    script = relay_executable()
    root = Path(tempfile.mkdtemp(prefix="fangwire-nostr-relay-"))
    port = free_port()
    (root / "nostr.yaml").write_text(
        CONFIG.format(
            db=root / "relay.sqlite3",
            port=port,
            validators="\n".join(f"    - nostr_relay.validators.{v}" for v in validators),
        ),
        encoding="utf-8",
    )
    relay = Relay(root, port, script)
    relay.start()
    return relay
