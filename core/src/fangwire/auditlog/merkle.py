"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and verification (SHA-256, pure, no I/O).

Leaves are always handled as *leaf hashes* (``leaf_hash(data)``); everything here works on
32-byte hashes.  The audit log persists the hash of every complete, aligned subtree under the
key ``(level, index)``: level 0 holds the leaf hashes, and subtree ``(level, index)`` covers the
leaves ``[index * 2**level, (index + 1) * 2**level)``.  Proofs are computed from those persisted
subtrees via :func:`subtree_root`, never by loading all leaves.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "HashSource",
    "MemoryHashSource",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_of",
    "subtree_root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH (RFC 6962 §2.1) over already-hashed leaves; ``EMPTY_ROOT`` for no leaves."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


class HashSource(Protocol):
    """Read access to persisted complete aligned subtree hashes."""

    def get(self, level: int, index: int) -> bytes:
        """The hash of subtree ``(level, index)``; raises ``KeyError`` if it is not stored."""
        ...


class MemoryHashSource:
    """A dict-backed :class:`HashSource` (tests, tools, small logs)."""

    def __init__(self) -> None:
        self._hashes: dict[tuple[int, int], bytes] = {}

    def add(self, level: int, index: int, hash: bytes) -> None:
        self._hashes[(level, index)] = hash

    def get(self, level: int, index: int) -> bytes:
        return self._hashes[(level, index)]

    def __len__(self) -> int:
        return len(self._hashes)


def _peaks(size: int) -> list[tuple[int, int]]:
    """The ``(level, index)`` of the aligned subtrees making up ``[0, size)``, largest first."""
    peaks: list[tuple[int, int]] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            peaks.append((level, start >> level))
            start += 1 << level
    return peaks


class CompactRange:
    """Incremental state of a growing tree: the hashes of its "peaks" (largest first).

    ``size`` leaves are summarised by ``popcount(size)`` hashes, one per set bit of ``size``.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if not _is_size(size):
            raise ValueError(f"invalid size {size!r}")
        hashes = list(hashes)
        if len(hashes) != size.bit_count():
            raise ValueError(f"size {size} needs {size.bit_count()} hashes, got {len(hashes)}")
        if not all(_is_hash(h) for h in hashes):
            raise ValueError("hashes must be 32-byte values")
        self._size = size
        self._hashes = hashes

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append a leaf *hash*; return the newly completed aligned subtrees.

        The result starts with ``(0, index, leaf)`` and continues with every subtree the leaf
        completes, in increasing level, so the caller can persist them atomically.
        """
        if not _is_hash(leaf):
            raise ValueError("leaf must be a 32-byte leaf hash")
        index = self._size
        level = 0
        current = leaf
        completed = [(0, index, leaf)]
        while index & 1:
            current = node_hash(self._hashes.pop(), current)
            level += 1
            index >>= 1
            completed.append((level, index, current))
        self._hashes.append(current)
        self._size += 1
        return completed

    def root(self) -> bytes:
        """The tree head (MTH) of the range; ``EMPTY_ROOT`` when empty.  O(log n)."""
        if not self._hashes:
            return EMPTY_ROOT
        result = self._hashes[-1]
        for peak in reversed(self._hashes[:-1]):
            result = node_hash(peak, result)
        return result

    def to_json(self) -> str:
        """``{"size": n, "hashes": [hex, ...]}`` as compact JSON text."""
        return json.dumps(
            {"size": self._size, "hashes": [h.hex() for h in self._hashes]},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> CompactRange:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on anything malformed."""
        try:
            data: Any = json.loads(text)
        except (ValueError, TypeError) as exc:  # JSONDecodeError / UnicodeDecodeError
            raise ValueError(f"malformed compact range: {exc}") from None
        if not isinstance(data, dict) or set(data) != {"size", "hashes"}:
            raise ValueError("malformed compact range: expected {'size', 'hashes'}")
        size, hashes = data["size"], data["hashes"]
        if not _is_size(size) or not isinstance(hashes, list):
            raise ValueError("malformed compact range: bad size or hashes")
        decoded: list[bytes] = []
        for item in hashes:
            if not isinstance(item, str) or len(item) != 2 * HASH_SIZE:
                raise ValueError("malformed compact range: bad hash")
            decoded.append(bytes.fromhex(item))
        return cls(size, decoded)

    @classmethod
    def from_source(cls, size: int, source: HashSource) -> CompactRange:
        """Rebuild from the ``<= log2(size)`` persisted peak subtrees of ``[0, size)``."""
        if not _is_size(size):
            raise ValueError(f"invalid size {size!r}")
        return cls(size, [source.get(level, index) for level, index in _peaks(size)])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"


def subtree_root(start: int, end: int, source: HashSource) -> bytes:
    """MTH of the leaves ``[start, end)`` computed from persisted aligned subtrees only.

    For the ranges used by proofs (``start`` a multiple of the range's enclosing power of two)
    this takes O(log n) lookups; any range works, just with more lookups if unaligned.
    """
    if not (_is_size(start) and _is_size(end)) or start > end:
        raise ValueError(f"invalid range [{start!r}, {end!r})")
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and start % n == 0:
        return source.get(n.bit_length() - 1, start // n)
    k = _split(n)
    return node_hash(subtree_root(start, start + k, source), subtree_root(start + k, end, source))


def inclusion_proof(index: int, size: int, source: HashSource) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 §2.1.1 (leaf-to-root order)."""
    if not (_is_size(index) and _is_size(size)) or index >= size:
        raise ValueError(f"invalid inclusion proof request: index {index!r}, size {size!r}")
    proof: list[bytes] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            proof.append(subtree_root(start + k, end, source))
            end = start + k
        else:
            proof.append(subtree_root(start, start + k, source))
            start += k
            m -= k
    proof.reverse()
    return proof


def consistency_proof(old_size: int, new_size: int, source: HashSource) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) of RFC 6962 §2.1.2; empty when old_size is 0 or equal."""
    if not (_is_size(old_size) and _is_size(new_size)) or old_size > new_size:
        raise ValueError(f"invalid consistency proof request: {old_size!r} -> {new_size!r}")
    if old_size == 0 or old_size == new_size:
        return []
    proof: list[bytes] = []
    start, end, m, complete = 0, new_size, old_size, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                proof.append(subtree_root(start, end, source))
            break
        k = _split(n)
        if m <= k:
            proof.append(subtree_root(start + k, end, source))
            end = start + k
        else:
            proof.append(subtree_root(start, start + k, source))
            start += k
            m -= k
            complete = False
    proof.reverse()
    return proof


def _valid_proof(proof: object) -> list[bytes] | None:
    if not isinstance(proof, (list, tuple)) or len(proof) > 128:
        return None
    if not all(_is_hash(p) for p in proof):
        return None
    return list(proof)


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2.  Returns ``False`` (never raises) for any invalid input."""
    hashes = _valid_proof(proof)
    if (
        hashes is None
        or not (_is_size(index) and _is_size(size))
        or index >= size
        or not (_is_hash(leaf_hash) and _is_hash(root))
    ):
        return False
    inner = (index ^ (size - 1)).bit_length()
    if len(hashes) != inner + (index >> inner).bit_count():
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in hashes:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(r, root)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2.  Returns ``False`` (never raises) for any invalid input.

    ``(0, n)`` is accepted only with an empty proof and ``old_root == EMPTY_ROOT``;
    ``(n, n)`` only with an empty proof and equal roots.
    """
    hashes = _valid_proof(proof)
    if (
        hashes is None
        or not (_is_size(old_size) and _is_size(new_size))
        or old_size > new_size
        or not (_is_hash(old_root) and _is_hash(new_root))
    ):
        return False
    if old_size == new_size:
        return not hashes and hmac.compare_digest(old_root, new_root)
    if old_size == 0:
        return not hashes and hmac.compare_digest(old_root, EMPTY_ROOT)
    if not hashes:
        return False
    # Expected length (as in transparency-dev/merkle): the proof is an inclusion proof of the
    # subtree of size 2**shift holding leaf old_size - 1, plus its seed unless it is old_root.
    shift = (old_size & -old_size).bit_length() - 1
    inner = ((old_size - 1) ^ (new_size - 1)).bit_length() - shift
    border = ((old_size - 1) >> (inner + shift)).bit_count()
    seeded = old_size == 1 << shift
    if len(hashes) != (0 if seeded else 1) + inner + border:
        return False
    if seeded:
        hashes.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = hashes[0]
    for c in hashes[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(fr, old_root) and hmac.compare_digest(sr, new_root)
