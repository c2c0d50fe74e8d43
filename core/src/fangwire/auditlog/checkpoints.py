"""Signed checkpoints of the audit log and the anchor kept outside the database.

A checkpoint signs the log's size, Merkle root and chain tip with the node's Ed25519 key (a
C2SP signed note, :mod:`fangwire.auditlog.checkpoint`). One is made after every
``audit.checkpoint_every`` entries, ``audit.checkpoint_interval_seconds`` after the first entry
not yet covered, and at shutdown. Each is stored in the database and the newest is also written
to ``audit.anchor`` in the home directory: the database alone cannot vouch for itself, since
whoever rewrites it can rewrite its checkpoint table too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from fangwire.auditlog.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    load_or_create_signing_key,
    utc_timestamp,
    verify_note,
)
from fangwire.auditlog.log import AuditLog
from fangwire.auditlog.verify import TrustedCheckpoint
from fangwire.config import AuditConfig
from fangwire.fsutil import atomic_write

log = logging.getLogger("fangwire.audit")

KEY_FILE = "audit-signing.key"
ANCHOR_FILE = "audit.anchor"
KEY_NAME = "fangwire-audit"


class CheckpointKeeper:
    """Makes, stores and checks the audit log's signed checkpoints."""

    def __init__(self, audit: AuditLog, *, home: Path, config: Callable[[], AuditConfig]) -> None:
        self._audit = audit
        self._home = home
        self._config = config
        self._signer: CheckpointSigner | None = None
        self._origin = ""
        self._last_size = 0
        self._pending = 0
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self.last_error: str | None = None

    @property
    def checkpoint_every(self) -> int:
        return self._config().checkpoint_every

    @property
    def anchor_path(self) -> Path:
        return self._home / ANCHOR_FILE

    @property
    def signer(self) -> CheckpointSigner:
        if self._signer is None:
            raise RuntimeError("the checkpoint keeper is not open")
        return self._signer

    @property
    def verifier_key(self) -> str:
        """The C2SP verifier key anyone can use to check this node's checkpoints."""
        return self.signer.verifier_key()

    async def open(self) -> None:
        key = await anyio.to_thread.run_sync(load_or_create_signing_key, self._home / KEY_FILE)
        self._signer = CheckpointSigner(key, KEY_NAME)
        self._origin = f"fangwire.audit/{self.verifier_key.split('+')[1]}"
        latest = await self._audit.store.fetch_one(
            "SELECT COALESCE(MAX(size), 0) AS size FROM audit_checkpoints"
        )
        self._last_size = int(latest["size"]) if latest else 0

    def on_entry(self, _: object) -> None:
        """Listener for committed entries: counts them and wakes the keeper when due."""
        self._pending += 1
        if self._pending >= self._config().checkpoint_every:
            self._wake.set()

    async def run(self) -> None:
        """Make checkpoints when due, until cancelled."""
        while True:
            interval = self._config().checkpoint_interval_seconds
            with anyio.move_on_after(interval if self._pending else math.inf):
                await self._wake.wait()
            self._wake = anyio.Event()
            if self._pending:
                try:
                    await self.checkpoint()
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("could not make an audit checkpoint")

    async def checkpoint(self) -> dict[str, Any]:
        """Sign the current tree head (if it grew) and return the newest checkpoint."""
        async with self._lock:
            self._pending = 0
            size, root, tip = await self._audit.tree_head()
            if size > self._last_size or not self.anchor_path.exists():
                cp = Checkpoint(self._origin, size, root, utc_timestamp(), chain_tip=tip)
                note = self.signer.sign(cp)
                await self._audit.store.execute(
                    "INSERT OR IGNORE INTO audit_checkpoints (size, root, tip, timestamp, note)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (size, root, tip, cp.timestamp, note),
                )
                await anyio.to_thread.run_sync(atomic_write, self.anchor_path, note.encode("utf-8"))
                self._last_size = size
                self.last_error = None
            return await self.latest_or_empty()

    async def latest_or_empty(self) -> dict[str, Any]:
        row = await self._audit.store.fetch_one(
            "SELECT size, root, tip, timestamp, note FROM audit_checkpoints"
            " ORDER BY size DESC LIMIT 1"
        )
        if row is None:
            return {"size": 0, "verifier_key": self.verifier_key}
        return {
            "size": row["size"],
            "root": bytes(row["root"]).hex(),
            "chain_tip": bytes(row["tip"]).hex(),
            "timestamp": row["timestamp"],
            "note": row["note"],
            "verifier_key": self.verifier_key,
        }

    async def trusted(self) -> tuple[list[TrustedCheckpoint], str | None]:
        """Checkpoints whose signatures verify: the anchor's and the database's. The second
        value names a problem (unreadable anchor, bad signature) that makes the log suspect."""
        vkey = self.verifier_key
        found: list[TrustedCheckpoint] = []
        problem: str | None = None
        try:
            text = await anyio.to_thread.run_sync(self._read_anchor)
        except OSError as exc:
            text, problem = None, f"the anchor file cannot be read ({type(exc).__name__})"
        if text is not None:
            try:
                found.append(_trusted(verify_note(text, vkey)))
            except CheckpointError as exc:
                problem = f"the anchored checkpoint does not verify: {exc}"
        elif self._last_size and problem is None:
            problem = "the anchor file is missing although checkpoints were made"
        rows = await self._audit.store.fetch_all("SELECT size, note FROM audit_checkpoints")
        for row in rows:
            try:
                cp = verify_note(row["note"], vkey)
            except CheckpointError as exc:
                problem = problem or f"stored checkpoint {row['size']} does not verify: {exc}"
                continue
            found.append(_trusted(cp))
        return found, problem

    def _read_anchor(self) -> str | None:
        try:
            return self.anchor_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None


def _trusted(cp: Checkpoint) -> TrustedCheckpoint:
    if cp.chain_tip is None:
        raise CheckpointError("the checkpoint does not sign the chain tip")
    return TrustedCheckpoint(size=cp.size, root=cp.root, tip=cp.chain_tip)
