"""Path traversal prevention for paths built from untrusted parts.

Contract:

* `safe_join(base, *parts)` returns a fully resolved path that is ``base`` itself or inside it
  (after resolving symlinks, `Path.resolve(strict=False)`, so not-yet-existing targets work for
  writes). Each part may contain ``/`` as a separator. It raises `UnsafePath` for: no parts, an
  empty part, NUL bytes, backslashes, Windows drive prefixes (``C:``), absolute parts, ``..``
  components, symlink loops and anything that resolves outside the resolved ``base`` (e.g. a
  symlink inside ``base`` pointing elsewhere).
* `safe_filename(name)` checks a single file name coming from outside and returns it unchanged,
  or raises `UnsafePath`.
* Error messages name the offending part (``repr``, truncated) but never the base path, so they
  can be shown to a remote caller.

Limit: the check is time-of-check; a symlink created inside ``base`` after `safe_join` returns
can still redirect the later open. Callers that write into directories shared with untrusted
processes must additionally open with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

__all__ = ["UnsafePath", "safe_filename", "safe_join", "state"]

_MAX_NAME_BYTES = 255
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_lock = threading.Lock()
_refusals = 0


class UnsafePath(ValueError):
    """A path part or file name was refused; the message never contains the base path."""


def _show(part: str) -> str:
    shown = repr(part)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _refuse(part: str, why: str) -> UnsafePath:
    global _refusals
    with _lock:
        _refusals += 1
    return UnsafePath(f"unsafe path part {_show(part)}: {why}")


def _check_part(part: object) -> str:
    if not isinstance(part, str):
        raise _refuse(str(type(part).__name__), "not a string")
    if part == "":
        raise _refuse(part, "empty")
    if "\x00" in part:
        raise _refuse(part, "contains a NUL byte")
    if "\\" in part:
        raise _refuse(part, "contains a backslash")
    if part.startswith("/"):
        raise _refuse(part, "is absolute")
    for component in part.split("/"):
        if component == "..":
            raise _refuse(part, "contains a '..' component")
        if _DRIVE.match(component):
            raise _refuse(part, "contains a drive prefix")
    return part


def safe_join(base: Path, *parts: str) -> Path:
    """Join ``parts`` under ``base`` and return the resolved path, which stays inside ``base``.

    Raises `UnsafePath` (a `ValueError`) when any part is unsafe or the result escapes.
    """
    if not parts:
        raise _refuse("", "no path parts given")
    checked = [_check_part(part) for part in parts]
    try:
        root = Path(base).resolve(strict=False)
        target = root.joinpath(*checked).resolve(strict=False)
    except (OSError, RuntimeError):
        # RuntimeError is a symlink loop on Python 3.11; its message holds the absolute path.
        raise _refuse("/".join(checked), "cannot be resolved (symlink loop?)") from None
    if not target.is_relative_to(root):
        raise _refuse("/".join(checked), "resolves outside the base directory")
    return target


def safe_filename(name: str) -> str:
    """Return ``name`` if it is a safe single file name, else raise `UnsafePath`.

    Refused: non-strings, empty, ``.``/``..``, ``/``, ``\\``, NUL and other C0/C1 control
    characters, and names longer than 255 bytes in UTF-8.
    """
    if not isinstance(name, str):
        raise _refuse(str(type(name).__name__), "not a string")
    if name in ("", ".", ".."):
        raise _refuse(name, "not a file name")
    if "/" in name or "\\" in name:
        raise _refuse(name, "contains a path separator")
    if _CONTROL.search(name):
        raise _refuse(name, "contains a control character")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise _refuse(name, "is not valid UTF-8 (lone surrogate)") from None
    if size > _MAX_NAME_BYTES:
        raise _refuse(name, f"longer than {_MAX_NAME_BYTES} bytes")
    return name


def state() -> tuple[str, dict[str, object]]:
    """Return ``("active", {"refusals": n})`` for the security status report."""
    with _lock:
        return "active", {"refusals": _refusals}
