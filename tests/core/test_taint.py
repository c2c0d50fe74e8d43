"""Tests for fangwire.security.taint: propagation, its documented limits, and sink checks."""

from __future__ import annotations

import copy
import pickle

import pytest

from fangwire.security import taint as taint_mod
from fangwire.security.taint import (
    DANGEROUS_SINKS,
    Taint,
    TaintedStr,
    TaintViolation,
    check_sink,
    declassify,
    taint_join,
    taint_of,
)

TG = Taint("channel:telegram", frozenset({"UserInput"}))
MCP = Taint("mcp:server/tool", frozenset({"ExternalNetwork"}))


def t(value: str, taint: Taint = TG) -> TaintedStr:
    return TaintedStr(value, taint)


def test_tainted_str_is_a_str() -> None:
    s = t("hello")
    assert isinstance(s, str)
    assert s == "hello"
    assert hash(s) == hash("hello")
    assert s.taint is TG


def test_taint_is_frozen() -> None:
    with pytest.raises(AttributeError):
        TG.source = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        (lambda s: s + "!", "rm -rf!"),
        (lambda s: "echo " + s, "echo rm -rf"),
        (lambda s: s * 2, "rm -rfrm -rf"),
        (lambda s: 2 * s, "rm -rfrm -rf"),
        (lambda s: s[0:2], "rm"),
        (lambda s: s[1], "m"),
        (lambda s: s[::-1], "fr- mr"),
        (lambda s: (" " + s + " ").strip(), "rm -rf"),
        (lambda s: ("x" + s).lstrip("x"), "rm -rf"),
        (lambda s: (s + "x").rstrip("x"), "rm -rf"),
        (lambda s: s.upper(), "RM -RF"),
        (lambda s: s.upper().lower(), "rm -rf"),
        (lambda s: s.casefold(), "rm -rf"),
        (lambda s: s.replace("rf", "r"), "rm -r"),
        (lambda s: str(s), "rm -rf"),
        (lambda s: TaintedStr("{} now", TG).format("x"), "x now"),
    ],
)
def test_taint_survives(op: object, expected: str) -> None:
    result = op(t("rm -rf"))  # type: ignore[operator]
    assert result == expected
    assert isinstance(result, TaintedStr)
    assert result.taint == TG


def test_split_keeps_taint() -> None:
    parts = t("a b").split()
    assert parts == ["a", "b"]
    assert all(isinstance(p, TaintedStr) and p.taint == TG for p in parts)


def test_merge_of_two_taints() -> None:
    combined = t("a") + t("b", MCP)
    assert isinstance(combined, TaintedStr)
    assert combined.taint.source == "channel:telegram,mcp:server/tool"
    assert combined.taint.labels == {"UserInput", "ExternalNetwork"}
    assert TG.merge(TG) is TG
    assert TG.merge(None) is TG


def test_replace_with_tainted_replacement_taints_clean_string() -> None:
    result = t("abc", MCP).replace("b", t("X"))
    assert result.taint.labels == {"UserInput", "ExternalNetwork"}


def test_format_merges_argument_taint() -> None:
    result = TaintedStr("run {}", MCP).format(t("x"))
    assert result.taint.labels == {"UserInput", "ExternalNetwork"}


def test_taint_join() -> None:
    joined = taint_join(" ", ["ls", t("-la"), "/tmp"])
    assert joined == "ls -la /tmp"
    assert isinstance(joined, TaintedStr)
    assert joined.taint == TG
    clean = taint_join(",", ["a", "b"])
    assert clean == "a,b"
    assert type(clean) is str
    assert isinstance(taint_join(t(","), ["a", "b"]), TaintedStr)
    assert taint_join("-", iter(["x", t("y")])) == "x-y"


@pytest.mark.parametrize(
    "op",
    [
        lambda s: f"echo {s}",
        lambda s: f"{s:>3}",
        lambda s: "echo %s" % s,  # noqa: UP031 - the limit being documented
        lambda s: "echo {}".format(s),  # noqa: UP032 - the limit being documented
        lambda s: "".join([s]),
        lambda s: s.title(),
        lambda s: declassify(s),
    ],
)
def test_documented_limits_lose_taint(op: object) -> None:
    result = op(t("x"))  # type: ignore[operator]
    assert taint_of(result) is None


def test_pickle_and_copy_keep_taint() -> None:
    s = t("x")
    for clone in (pickle.loads(pickle.dumps(s)), copy.copy(s), copy.deepcopy(s)):  # noqa: S301
        assert isinstance(clone, TaintedStr)
        assert clone.taint == TG


def test_taint_of_walks_containers() -> None:
    assert taint_of("plain") is None
    assert taint_of(42) is None
    assert taint_of(None) is None
    assert taint_of(t("x")) == TG
    assert taint_of({"cmd": ["ls", ("a", t("b"))]}) == TG
    assert taint_of({t("key"): "v"}) == TG
    assert taint_of({frozenset({t("x")})}.pop()) == TG
    assert taint_of([{"a": t("x", MCP)}, t("y")]) == TG.merge(MCP)
    assert taint_of([[], {}, ()]) is None


def test_taint_of_handles_cycles_and_fails_closed_on_depth() -> None:
    loop: list[object] = ["clean"]
    loop.append(loop)
    assert taint_of(loop) is None
    deep: list[object] = []
    cur = deep
    for _ in range(200):
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    result = taint_of(deep)
    assert result is not None
    assert "depth_exceeded" in result.labels


@pytest.mark.parametrize("sink", sorted(DANGEROUS_SINKS))
def test_check_sink_blocks_tainted(sink: str) -> None:
    with pytest.raises(TaintViolation) as info:
        check_sink(sink, ["ls", t("; rm -rf /")])
    assert isinstance(info.value, PermissionError)
    assert info.value.sink == sink
    assert info.value.taint == TG
    assert "channel:telegram" in str(info.value)
    assert "rm -rf" not in str(info.value)  # the tainted content itself is not echoed


def test_check_sink_allows_clean_approved_and_safe_sinks() -> None:
    check_sink("shell", ["ls", "-la"])
    check_sink("shell", t("ls"), approved=True)
    check_sink("log", t("anything"))
    check_sink("shell", declassify(t("ls")))


def test_dangerous_sinks() -> None:
    assert sorted(DANGEROUS_SINKS) == ["code_eval", "file_write", "shell", "sql"]


def test_state_counts() -> None:
    status, before = taint_mod.state()
    assert status == "active"
    check_sink("sql", "select 1")
    check_sink("sql", t("x"), approved=True)
    with pytest.raises(TaintViolation):
        check_sink("code_eval", t("x"))
    _, after = taint_mod.state()
    assert after["checks"] == before["checks"] + 3  # type: ignore[operator]
    assert after["violations"] == before["violations"] + 1  # type: ignore[operator]
    assert after["approved"] == before["approved"] + 1  # type: ignore[operator]
    assert after["sinks"] == ["code_eval", "file_write", "shell", "sql"]
