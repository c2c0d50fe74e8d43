"""A real Matrix homeserver (matrix-synapse with sqlite) for the channel tests.

Synapse is heavy and pins many libraries, so it lives in its own virtual environment, cached
under ``~/.cache/fangwire-tests/synapse-<version>`` and created on first use (``.ci/run``
creates it ahead of time with the same version). One server runs per test session, on
127.0.0.1 with an ephemeral port, in a temporary directory; it is killed at teardown.
A missing or broken install fails the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

#: Keep in step with the SYNAPSE_VERSION line in .ci/run.
SYNAPSE_VERSION = "1.163.2"
READY_TIMEOUT = 60.0
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fangwire-tests"


def synapse_python() -> Path:
    """The interpreter of the cached synapse environment, installing it if needed."""
    venv = CACHE_ROOT / f"synapse-{SYNAPSE_VERSION}"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"synapse-{SYNAPSE_VERSION}-", dir=CACHE_ROOT))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True, timeout=300)
        subprocess.run(
            [str(staging / "bin" / "pip"), "install", "-q", f"matrix-synapse=={SYNAPSE_VERSION}"],
            check=True,
            timeout=1200,
        )
        # Only complete environments get the final name (scripts are run with ``-m``, so the
        # move does not break them).
        with contextlib.suppress(OSError):
            staging.rename(venv)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not python.exists():
        raise RuntimeError(f"could not install matrix-synapse {SYNAPSE_VERSION} into {venv}")
    return python


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rate(per_second: float = 1000, burst: int = 1000) -> dict[str, float]:
    return {"per_second": per_second, "burst_count": burst}


class Synapse:
    """One synapse process and the helpers a test needs to act as a Matrix user."""

    def __init__(self, python: Path, workdir: Path) -> None:
        self.python = python
        self.workdir = workdir
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log = workdir / "synapse.log"
        self._counter = 0
        self.shared_secret = ""

    # -- process ------------------------------------------------------------------------------

    def configure(self) -> None:
        config = self.workdir / "homeserver.yaml"
        subprocess.run(
            [
                str(self.python),
                "-m",
                "synapse.app.homeserver",
                "--server-name",
                "localhost",
                "--config-path",
                str(config),
                "--generate-config",
                "--report-stats=no",
            ],
            cwd=self.workdir,
            check=True,
            capture_output=True,
            timeout=120,
        )
        generated = config.read_text()
        secrets = {}
        for key in ("registration_shared_secret", "macaroon_secret_key", "form_secret"):
            for line in generated.splitlines():
                if line.startswith(f"{key}:"):
                    secrets[key] = json.loads(line.split(":", 1)[1].strip())
        self.shared_secret = secrets["registration_shared_secret"]
        # JSON is YAML: write the whole file ourselves.
        settings: dict[str, Any] = {
            "server_name": "localhost",
            "pid_file": str(self.workdir / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.workdir / "homeserver.db")},
            },
            "media_store_path": str(self.workdir / "media"),
            "signing_key_path": str(self.workdir / "localhost.signing.key"),
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "rc_message": _rate(),
            "rc_registration": _rate(),
            "rc_login": {
                "address": _rate(),
                "account": _rate(),
                "failed_attempts": _rate(),
            },
            "rc_joins": {"local": _rate(), "remote": _rate()},
            "rc_invites": {"per_room": _rate(), "per_user": _rate(), "per_issuer": _rate()},
            "rc_admin_redaction": _rate(),
            # Identical /sync requests would otherwise get a cached (stale) answer for 2 min.
            "caches": {"sync_response_cache_duration": 0},
            **secrets,
        }
        config.write_text(json.dumps(settings, indent=2))

    def start(self) -> None:
        log = self._log.open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    str(self.python),
                    "-m",
                    "synapse.app.homeserver",
                    "-c",
                    str(self.workdir / "homeserver.yaml"),
                ],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"synapse exited early:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"synapse was not ready within {READY_TIMEOUT} s:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- client helpers -----------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.base_url}/_matrix/client/v3{path}"

    def register(self, prefix: str, password: str = "pw-secret-1") -> MatrixUser:  # noqa: S107
        """Register a fresh account (unique per call) through the open registration API."""
        self._counter += 1
        username = f"{prefix}{self._counter}{os.getpid()}"
        body: dict[str, Any] = {"username": username, "password": password}
        first = httpx.post(self.url("/register"), json=body, timeout=10)
        if first.status_code == 200:
            data = first.json()
        else:
            session = first.json()["session"]
            body["auth"] = {"type": "m.login.dummy", "session": session}
            second = httpx.post(self.url("/register"), json=body, timeout=10)
            second.raise_for_status()
            data = second.json()
        return MatrixUser(self, data["user_id"], data["access_token"], password)

    def register_admin(self, prefix: str, password: str = "pw-admin-1") -> MatrixUser:  # noqa: S107
        """Register a server admin through the shared-secret admin API."""
        self._counter += 1
        username = f"{prefix}{self._counter}{os.getpid()}"
        endpoint = f"{self.base_url}/_synapse/admin/v1/register"
        nonce = httpx.get(endpoint, timeout=10).json()["nonce"]
        mac = hmac.new(
            self.shared_secret.encode(),
            b"\x00".join([nonce.encode(), username.encode(), password.encode(), b"admin"]),
            hashlib.sha1,
        ).hexdigest()
        body = {"nonce": nonce, "username": username, "password": password, "admin": True}
        response = httpx.post(endpoint, json={**body, "mac": mac}, timeout=10)
        response.raise_for_status()
        data = response.json()
        return MatrixUser(self, data["user_id"], data["access_token"], password)


class MatrixUser:
    """A plain Client-Server API user: what a person on the other side of the bot does."""

    def __init__(self, server: Synapse, user_id: str, token: str, password: str) -> None:
        self.server = server
        self.user_id = user_id
        self.token = token
        self.password = password
        self.client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(40.0)
        )
        self._txn = 0

    async def aclose(self) -> None:
        await self.client.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.client.request(method, self.server.url(path), **kwargs)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def create_room(self, invite: list[str] | None = None, *, direct: bool = False) -> str:
        body: dict[str, Any] = {"preset": "private_chat", "invite": list(invite or [])}
        if direct:
            body["is_direct"] = True
        return str((await self.call("POST", "/createRoom", json=body))["room_id"])

    async def invite(self, room: str, user_id: str) -> None:
        await self.call("POST", f"/rooms/{room}/invite", json={"user_id": user_id})

    async def join(self, room: str) -> None:
        await self.call("POST", f"/join/{room}", json={})

    async def send_text(self, room: str, body: str, **extra: Any) -> str:
        self._txn += 1
        content = {"msgtype": "m.text", "body": body, **extra}
        result = await self.call(
            "PUT",
            f"/rooms/{room}/send/m.room.message/t{self._txn}{time.time_ns()}",
            json=content,
        )
        return str(result["event_id"])

    async def sync(self, since: str | None = None, timeout_ms: int = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"timeout": timeout_ms}
        if since:
            params["since"] = since
        return await self.call("GET", "/sync", params=params)

    async def wait_for_messages(
        self, room: str, since: str, count: int, *, sender: str | None = None
    ) -> list[dict[str, Any]]:
        """Long-poll /sync until ``count`` m.room.message events (from ``sender``) arrive."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            data = await self.sync(since, timeout_ms=10_000)
            since = data["next_batch"]
            timeline = data.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {})
            for event in timeline.get("events", []):
                if event.get("type") != "m.room.message":
                    continue
                if sender is not None and event.get("sender") != sender:
                    continue
                found.append(event)
        return found


@pytest.fixture(scope="session", name="synapse")
def synapse_fixture() -> Iterator[Synapse]:
    """A running synapse for the whole session (fails, never skips, when it cannot run)."""
    python = synapse_python()
    with tempfile.TemporaryDirectory(prefix="fangwire-synapse-") as workdir:
        server = Synapse(python, Path(workdir))
        server.configure()
        server.start()
        try:
            yield server
        finally:
            server.stop()
