"""Optional bubblewrap confinement for stdio MCP servers.

``[mcp] bubblewrap`` chooses: ``"off"``, ``"auto"`` (the default: use ``bwrap`` when it is
installed and works on this machine) or ``"on"`` (refuse to start a server without it). Under
bubblewrap a server sees the whole file system read-only except its ``HOME``, ``/tmp`` and the
paths of ``[mcp] writable_paths``; it gets its own PID, IPC and UTS namespaces and dies with
its parent. The network is shared: MCP servers usually call remote APIs.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

Mode = Literal["off", "auto", "on"]
MODES: tuple[str, ...] = ("off", "auto", "on")
#: Shared with the host: servers and the tools they run expect a writable temp directory.
SHARED_TMP = "/tmp"  # noqa: S108


class SandboxUnavailable(Exception):
    """``bubblewrap = "on"`` but bubblewrap cannot be used here."""


def settings(mcp: Mapping[str, Any]) -> tuple[Mode, tuple[str, ...]]:
    """The mode and extra writable paths from the ``[mcp]`` table (bad values: defaults)."""
    mode = mcp.get("bubblewrap", "auto")
    if mode not in MODES:
        raise ValueError(f"mcp.bubblewrap: expected one of {', '.join(MODES)}, got {mode!r}")
    paths = mcp.get("writable_paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ValueError("mcp.writable_paths: expected a list of paths")
    return mode, tuple(paths)


@lru_cache(maxsize=8)
def usable_bwrap(path: str) -> str | None:
    """The ``bwrap`` executable on ``path`` if it can build a sandbox here, else ``None``."""
    found = shutil.which("bwrap", path=path)
    if found is None:
        return None
    probe = [found, *_base_flags(), "--", "/bin/sh", "-c", "exit 0"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=10, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found if done.returncode == 0 else None


def _base_flags() -> list[str]:
    return [
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--bind",
        SHARED_TMP,
        SHARED_TMP,
    ]


def wrap(
    bwrap: str, command: str, args: Sequence[str], *, home: str | None, writable: Sequence[str]
) -> list[str]:
    """The argv that runs ``command args`` inside bubblewrap."""
    argv = [bwrap, *_base_flags()]
    for path in (home, *writable):
        if path:
            argv += ["--bind-try", path, path]
    return [*argv, "--", command, *args]
