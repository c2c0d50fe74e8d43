"""RFC 6962 Merkle tree: golden vectors, proofs, corruption and property tests."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fangwire.auditlog.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryHashSource,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    subtree_root,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}

# Known answers from the RFC 6962 reference test suite (certificate-transparency /
# transparency-dev merkle), cross-checked below against the independent reference code.
INCLUSION_VECTORS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


# --- independent reference implementation (RFC 6962 §2.1 verbatim, over full leaf lists) ---


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(data: list[bytes]) -> bytes:
    n = len(data)
    if n == 0:
        return _sha(b"")
    if n == 1:
        return _sha(b"\x00" + data[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _sha(b"\x01" + ref_mth(data[:k]) + ref_mth(data[k:]))


def ref_path(m: int, data: list[bytes]) -> list[bytes]:
    n = len(data)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, data[:k]), ref_mth(data[k:])]
    return [*ref_path(m - k, data[k:]), ref_mth(data[:k])]


def ref_subproof(m: int, data: list[bytes], b: bool) -> list[bytes]:
    n = len(data)
    if m == n:
        return [] if b else [ref_mth(data)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, data[:k], b), ref_mth(data[k:])]
    return [*ref_subproof(m - k, data[k:], False), ref_mth(data[:k])]


# --- helpers ---


def build(data: list[bytes]) -> tuple[CompactRange, MemoryHashSource, list[bytes]]:
    """Append every leaf to a CompactRange, persisting completed subtrees; roots by size."""
    cr = CompactRange()
    source = MemoryHashSource()
    roots = [cr.root()]
    for item in data:
        for level, index, h in cr.append(leaf_hash(item)):
            source.add(level, index, h)
        roots.append(cr.root())
    return cr, source, roots


def make_data(n: int) -> list[bytes]:
    return [b"leaf-%d" % i for i in range(n)]


def flip(h: bytes, bit: int = 0) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


_rng = random.Random(6962)
RANDOM_HASH = _rng.randbytes(32)


# --- golden vectors ---


def test_empty_root() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_of([]) == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", sorted(ROOTS))
def test_golden_roots(size: int) -> None:
    hashes = [leaf_hash(x) for x in LEAVES[:size]]
    assert ref_mth(LEAVES[:size]).hex() == ROOTS[size]
    assert root_of(hashes).hex() == ROOTS[size]
    _, source, roots = build(LEAVES[:size])
    assert roots[size].hex() == ROOTS[size]
    assert subtree_root(0, size, source).hex() == ROOTS[size]
    assert CompactRange.from_source(size, source).root().hex() == ROOTS[size]


def test_hash_prefixes() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    a, b = _sha(b"a"), _sha(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


@pytest.mark.parametrize(("index", "size", "expected"), INCLUSION_VECTORS)
def test_inclusion_known_answers(index: int, size: int, expected: list[str]) -> None:
    _, source, roots = build(LEAVES)
    proof = inclusion_proof(index, size, source)
    assert [p.hex() for p in proof] == expected
    assert proof == ref_path(index, LEAVES[:size])
    assert verify_inclusion(index, size, leaf_hash(LEAVES[index]), proof, roots[size])


@pytest.mark.parametrize(("old", "new", "expected"), CONSISTENCY_VECTORS)
def test_consistency_known_answers(old: int, new: int, expected: list[str]) -> None:
    _, source, roots = build(LEAVES)
    proof = consistency_proof(old, new, source)
    assert [p.hex() for p in proof] == expected
    if old < new:
        assert proof == ref_subproof(old, LEAVES[:new], True)
    assert verify_consistency(old, new, roots[old], roots[new], proof)


def test_all_small_proofs_match_reference() -> None:
    data = make_data(33)
    _, source, roots = build(data)
    for n in range(1, len(data) + 1):
        for i in range(n):
            proof = inclusion_proof(i, n, source)
            assert proof == ref_path(i, data[:n])
            assert verify_inclusion(i, n, leaf_hash(data[i]), proof, roots[n])
        for m in range(n + 1):
            proof = consistency_proof(m, n, source)
            if 0 < m < n:
                assert proof == ref_subproof(m, data[:n], True)
            else:
                assert proof == []
            assert verify_consistency(m, n, roots[m], roots[n], proof)


# --- edge cases and bad requests ---


def test_edge_consistency() -> None:
    _, _, roots = build(make_data(5))
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, roots[5], [])
    assert not verify_consistency(0, 5, EMPTY_ROOT, roots[5], [roots[5]])
    assert not verify_consistency(0, 5, roots[1], roots[5], [])
    assert verify_consistency(5, 5, roots[5], roots[5], [])
    assert not verify_consistency(5, 5, roots[5], roots[4], [])
    assert not verify_consistency(5, 5, roots[5], roots[5], [roots[5]])
    assert not verify_consistency(3, 5, roots[3], roots[5], [])


def test_bad_requests_raise_value_error() -> None:
    _, source, _ = build(make_data(4))
    for args in [(4, 4), (-1, 4), (0, 0)]:
        with pytest.raises(ValueError, match="invalid"):
            inclusion_proof(*args, source)
    for args in [(5, 4), (-1, 4)]:
        with pytest.raises(ValueError, match="invalid"):
            consistency_proof(*args, source)
    with pytest.raises(ValueError, match="invalid"):
        subtree_root(3, 2, source)
    with pytest.raises(KeyError):
        subtree_root(0, 5, source)
    with pytest.raises(KeyError):
        inclusion_proof(0, 6, source)


@pytest.mark.parametrize(
    "args",
    [
        ("0", 1, RANDOM_HASH, [], RANDOM_HASH),
        (0, 1.0, RANDOM_HASH, [], RANDOM_HASH),
        (True, 2, RANDOM_HASH, [RANDOM_HASH], RANDOM_HASH),
        (0, 1, "x" * 32, [], "x" * 32),
        (0, 1, RANDOM_HASH[:31], [], RANDOM_HASH[:31]),
        (0, 2, RANDOM_HASH, None, RANDOM_HASH),
        (0, 2, RANDOM_HASH, "ab", RANDOM_HASH),
        (0, 2, RANDOM_HASH, [None], RANDOM_HASH),
        (0, 2, RANDOM_HASH, [bytearray(32)], RANDOM_HASH),
        (0, 2, RANDOM_HASH, b"\x00" * 32, RANDOM_HASH),
        (-1, 2, RANDOM_HASH, [RANDOM_HASH], RANDOM_HASH),
        (0, 0, RANDOM_HASH, [], RANDOM_HASH),
        (0, 2**200, RANDOM_HASH, [RANDOM_HASH] * 200, RANDOM_HASH),
    ],
)
def test_verify_inclusion_garbage_returns_false(args: tuple[object, ...]) -> None:
    assert verify_inclusion(*args) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args",
    [
        ("1", 2, RANDOM_HASH, RANDOM_HASH, [RANDOM_HASH]),
        (1, None, RANDOM_HASH, RANDOM_HASH, [RANDOM_HASH]),
        (1, 2, None, RANDOM_HASH, [RANDOM_HASH]),
        (1, 2, RANDOM_HASH, b"", [RANDOM_HASH]),
        (1, 2, RANDOM_HASH, RANDOM_HASH, None),
        (1, 2, RANDOM_HASH, RANDOM_HASH, [1]),
        (1, 2, RANDOM_HASH, RANDOM_HASH, {RANDOM_HASH: 1}),
        (-1, 2, RANDOM_HASH, RANDOM_HASH, [RANDOM_HASH]),
        (3, 2, RANDOM_HASH, RANDOM_HASH, [RANDOM_HASH]),
        (3, 2**70, RANDOM_HASH, RANDOM_HASH, [RANDOM_HASH] * 80),
    ],
)
def test_verify_consistency_garbage_returns_false(args: tuple[object, ...]) -> None:
    assert verify_consistency(*args) is False  # type: ignore[arg-type]


# --- systematic corruption (transparency-dev style) ---


def inclusion_corruptions(
    index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes
) -> list[tuple[str, tuple[int, int, bytes, list[bytes], bytes]]]:
    out: list[tuple[str, tuple[int, int, bytes, list[bytes], bytes]]] = [
        ("index-1", (index - 1, size, leaf, proof, root)),
        ("index+1", (index + 1, size, leaf, proof, root)),
        ("index^2", (index ^ 2, size, leaf, proof, root)),
        ("size*2", (index, size * 2, leaf, proof, root)),
        ("size/2", (index, size // 2, leaf, proof, root)),
        ("wrong leaf", (index, size, leaf_hash(b"WRONG"), proof, root)),
        ("empty root", (index, size, leaf, proof, EMPTY_ROOT)),
        ("random root", (index, size, leaf, proof, RANDOM_HASH)),
        ("hash appended", (index, size, leaf, [*proof, RANDOM_HASH], root)),
        ("hash prepended", (index, size, leaf, [RANDOM_HASH, *proof], root)),
        ("root appended", (index, size, leaf, [*proof, root], root)),
        ("leaf prepended", (index, size, leaf, [leaf, *proof], root)),
    ]
    if proof:
        out.append(("last removed", (index, size, leaf, proof[:-1], root)))
        out.append(("first removed", (index, size, leaf, proof[1:], root)))
    for j in range(len(proof)):
        for bit in (0, 7):
            bad = list(proof)
            bad[j] = flip(bad[j], bit)
            out.append((f"flip {j}/{bit}", (index, size, leaf, bad, root)))
    for j in range(len(proof) + 1):
        out.append(
            (f"insert {j}", (index, size, leaf, [*proof[:j], RANDOM_HASH, *proof[j:]], root))
        )
    return out


def consistency_corruptions(
    m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]
) -> list[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]]:
    out: list[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]] = [
        ("size1-1", (m - 1, n, r1, r2, proof)),
        ("size1+1", (m + 1, n, r1, r2, proof)),
        ("size1^2", (m ^ 2, n, r1, r2, proof)),
        ("size2*2", (m, n * 2, r1, r2, proof)),
        ("size2/2", (m, n // 2, r1, r2, proof)),
        ("sizes swapped", (n, m, r1, r2, proof)),
        ("sizes swapped, roots too", (n, m, r2, r1, proof)),
        ("roots swapped", (m, n, r2, r1, proof)),
        ("wrong root1", (m, n, RANDOM_HASH, r2, proof)),
        ("wrong root2", (m, n, r1, RANDOM_HASH, proof)),
        ("empty root1", (m, n, EMPTY_ROOT, r2, proof)),
        ("empty proof", (m, n, r1, r2, [])),
        ("garbage appended", (m, n, r1, r2, [*proof, RANDOM_HASH])),
        ("garbage prepended", (m, n, r1, r2, [RANDOM_HASH, *proof])),
        ("root1 prepended", (m, n, r1, r2, [r1, *proof])),
        ("root2 appended", (m, n, r1, r2, [*proof, r2])),
    ]
    for j in range(len(proof)):
        out.append((f"truncated {j}", (m, n, r1, r2, proof[:j])))
        for bit in (0, 7):
            bad = list(proof)
            bad[j] = flip(bad[j], bit)
            out.append((f"flip {j}/{bit}", (m, n, r1, r2, bad)))
    return out


def test_inclusion_corruptions_fail() -> None:
    data = make_data(40)
    _, source, roots = build(data)
    checked = 0
    for n in [*range(1, 18), 31, 32, 33, 40]:
        for i in range(n):
            leaf = leaf_hash(data[i])
            proof = inclusion_proof(i, n, source)
            assert verify_inclusion(i, n, leaf, proof, roots[n])
            for name, args in inclusion_corruptions(i, n, leaf, proof, roots[n]):
                assert not verify_inclusion(*args), (i, n, name)
                checked += 1
    assert checked > 2000


def test_consistency_corruptions_fail() -> None:
    data = make_data(40)
    _, source, roots = build(data)
    checked = 0
    for n in [*range(2, 18), 31, 32, 33, 40]:
        for m in range(1, n):
            proof = consistency_proof(m, n, source)
            assert verify_consistency(m, n, roots[m], roots[n], proof)
            for name, args in consistency_corruptions(m, n, roots[m], roots[n], proof):
                assert not verify_consistency(*args), (m, n, name)
                checked += 1
    assert checked > 2000


# --- CompactRange ---


def test_append_reports_completed_subtrees() -> None:
    cr = CompactRange()
    h = [leaf_hash(x) for x in LEAVES]
    assert cr.append(h[0]) == [(0, 0, h[0])]
    n01 = node_hash(h[0], h[1])
    assert cr.append(h[1]) == [(0, 1, h[1]), (1, 0, n01)]
    assert cr.append(h[2]) == [(0, 2, h[2])]
    n23 = node_hash(h[2], h[3])
    assert cr.append(h[3]) == [(0, 3, h[3]), (1, 1, n23), (2, 0, node_hash(n01, n23))]
    assert cr.size == 4
    assert cr.hashes == (node_hash(n01, n23),)
    with pytest.raises(ValueError, match="32-byte"):
        cr.append(b"short")


def test_compact_range_json_and_validation() -> None:
    cr, _, roots = build(make_data(13))
    text = cr.to_json()
    assert json.loads(text)["size"] == 13
    assert len(json.loads(text)["hashes"]) == 3
    again = CompactRange.from_json(text)
    assert again == cr
    assert again.root() == roots[13]
    assert CompactRange.from_json(CompactRange().to_json()).root() == EMPTY_ROOT
    bad_texts: list[str | bytes] = [
        "",
        "[]",
        "{",
        '{"size": 1}',
        '{"size": -1, "hashes": []}',
        '{"size": 1, "hashes": []}',
        '{"size": 1, "hashes": ["zz"]}',
        '{"size": 1, "hashes": ["' + "zz" * 32 + '"]}',
        '{"size": true, "hashes": ["' + "00" * 32 + '"]}',
        '{"size": 1, "hashes": ["' + "00" * 32 + '"], "x": 1}',
        b"\xff",
    ]
    for bad in bad_texts:
        with pytest.raises(ValueError, match=r"."):
            CompactRange.from_json(bad)
    with pytest.raises(ValueError, match="needs"):
        CompactRange(3, [RANDOM_HASH])


# --- properties ---


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_trees(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 300), label="n")
    leaves = make_data(n)
    cr, source, roots = build(leaves)
    m = data.draw(st.integers(0, n), label="m")
    i = data.draw(st.integers(0, n - 1), label="i")
    k = data.draw(st.integers(i + 1, n), label="k")  # tree size containing leaf i

    hashes = [leaf_hash(x) for x in leaves]
    assert cr.root() == root_of(hashes) == ref_mth(leaves)
    assert roots[m] == root_of(hashes[:m])
    assert roots[k] == root_of(hashes[:k])

    proof = inclusion_proof(i, k, source)
    assert verify_inclusion(i, k, hashes[i], proof, roots[k])
    assert not verify_inclusion(i, k, hashes[i], proof, roots[k - 1])

    cproof = consistency_proof(m, n, source)
    assert verify_consistency(m, n, roots[m], roots[n], cproof)
    if 0 < m < n:
        assert cproof == ref_subproof(m, leaves, True)

    restored = CompactRange.from_source(m, source)
    assert restored.root() == roots[m]
    assert CompactRange.from_json(restored.to_json()) == restored
    assert subtree_root(0, m, source) == roots[m]
    # A restored range keeps growing identically.
    for x in hashes[m:]:
        restored.append(x)
    assert restored == cr
