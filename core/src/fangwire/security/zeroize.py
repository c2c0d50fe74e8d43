"""Secret zeroization, honestly scoped to memory fangwire itself holds in `bytearray`s.

Contract:

* `SecretBuffer(secret)` copies ``secret`` (bytes, bytearray, memoryview or str, the latter
  encoded as UTF-8) into a private `bytearray`. `wipe` overwrites that bytearray with zeros in
  place (so every `memoryview` obtained from `view` sees the zeros); it runs on context-manager
  exit (also on exceptions) and from ``__del__``. Wiping is idempotent.
* The secret never leaks by accident: ``repr``/``str``/f-strings show a mask, ``bytes(buf)``
  and pickling/copying raise `TypeError`. `reveal_bytes` is the explicit, greppable way out.

Limits: the *input* object (a `str` or `bytes`) and anything returned by `reveal_bytes` are
immutable Python objects that cannot be wiped; they live until the garbage collector frees them
and the allocator reuses the memory. A caller passing a `bytearray` keeps its own copy (wipe it
with `wipe_bytearray`). The OS may also have swapped pages out or put them in a core dump. This
module reduces how long fangwire-held copies live; it does not make Python memory-safe.
"""

from __future__ import annotations

import contextlib
import threading
from types import TracebackType
from typing import NoReturn

__all__ = ["SCOPE", "SecretBuffer", "state", "wipe_bytearray"]

SCOPE = "fangwire-held bytearrays only; immutable str/bytes copies cannot be wiped"

_lock = threading.Lock()
_counters: dict[str, int] = {"created": 0, "wiped": 0}


def wipe_bytearray(b: bytearray) -> None:
    """Overwrite ``b`` with zeros in place (same length; exported memoryviews stay valid)."""
    b[:] = bytes(len(b))


class SecretBuffer:
    """A secret held in a wipeable `bytearray`; see the module docstring for the limits."""

    __slots__ = ("_buf", "_wiped")

    def __init__(self, secret: bytes | bytearray | memoryview | str) -> None:
        self._wiped = True  # so __del__ is safe if the copy below fails
        if isinstance(secret, str):
            data = bytearray(secret.encode("utf-8"))
        elif isinstance(secret, bytes | bytearray | memoryview):
            data = bytearray(secret)
        else:
            raise TypeError(f"SecretBuffer needs bytes or str, not {type(secret).__name__}")
        self._buf = data
        self._wiped = False
        with _lock:
            _counters["created"] += 1

    @property
    def wiped(self) -> bool:
        """True once `wipe` has run."""
        return self._wiped

    def __len__(self) -> int:
        return len(self._buf)

    def view(self) -> memoryview:
        """Return a memoryview of the secret (zeros after `wipe`); raises ValueError if wiped."""
        if self._wiped:
            raise ValueError("secret buffer has been wiped")
        return memoryview(self._buf)

    def reveal_bytes(self) -> bytes:
        """Return an immutable copy (which cannot be wiped); ValueError if already wiped."""
        if self._wiped:
            raise ValueError("secret buffer has been wiped")
        return bytes(self._buf)

    def wipe(self) -> None:
        """Overwrite the secret with zeros in place; idempotent."""
        if self._wiped:
            return
        wipe_bytearray(self._buf)
        self._wiped = True
        with _lock:
            _counters["wiped"] += 1

    def __enter__(self) -> SecretBuffer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wipe()

    def __del__(self) -> None:
        # never raise from a finaliser (e.g. during interpreter shutdown)
        with contextlib.suppress(Exception):
            self.wipe()

    def __repr__(self) -> str:
        if self._wiped:
            return "SecretBuffer(<wiped>)"
        return f"SecretBuffer(<{len(self._buf)} bytes, masked>)"

    __str__ = __repr__

    def __bytes__(self) -> NoReturn:
        raise TypeError("SecretBuffer refuses bytes(); use .reveal_bytes() explicitly")

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretBuffer cannot be pickled or copied")

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__


def state() -> tuple[str, dict[str, object]]:
    """Return ``("active", {"created": n, "wiped": n, "scope": SCOPE})``."""
    with _lock:
        return "active", {**_counters, "scope": SCOPE}
