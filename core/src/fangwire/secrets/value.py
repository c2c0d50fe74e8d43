"""`Secret`: a string that does not show itself by accident."""

from __future__ import annotations

import hmac
from typing import NoReturn, SupportsIndex

__all__ = ["Secret"]

_MASK = "***"
_MIN_LENGTH_TO_SHOW_TAIL = 12


class Secret:
    """Immutable wrapper around a secret string.

    Contract: only `reveal` returns the value. ``repr``/``str``/f-strings give
    ``Secret('***')``; equality against another `Secret` is constant-time; the hash is the
    same for every instance (so nothing about the value leaks through it); pickling raises
    `TypeError` so a secret is never serialized to plain text by accident. ``copy`` and
    ``deepcopy`` return the same instance.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the secret value. Call it only where the value is actually needed."""
        return self._value

    def masked(self, visible: int = 4) -> str:
        """Return ``***`` followed by the last ``visible`` characters, for display.

        The tail is shown only when the value has at least 12 characters, and never more than
        a third of the value; otherwise (or when ``visible <= 0``) the result is ``***``.
        """
        length = len(self._value)
        shown = min(visible, length // 3)
        if length < _MIN_LENGTH_TO_SHOW_TAIL or shown <= 0:
            return _MASK
        return _MASK + self._value[-shown:]

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(Secret)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret cannot be pickled")

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("Secret cannot be pickled")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self
