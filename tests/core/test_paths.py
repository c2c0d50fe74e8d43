"""Tests for fangwire.security.paths: safe_join, safe_filename and the refusal counter."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fangwire.security import paths
from fangwire.security.paths import UnsafePath, safe_filename, safe_join


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    root.mkdir()
    (root / "sub").mkdir()
    return root


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("a.txt",), "a.txt"),
        (("sub", "a.txt"), "sub/a.txt"),
        (("sub/a.txt",), "sub/a.txt"),
        (("sub/./a.txt",), "sub/a.txt"),
        (("new", "deeper", "file"), "new/deeper/file"),
        (("..foo",), "..foo"),
        (("foo..",), "foo.."),
        (("ünïcødé",), "ünïcødé"),
        ((".hidden",), ".hidden"),
    ],
)
def test_safe_join_accepts(base: Path, parts: tuple[str, ...], expected: str) -> None:
    result = safe_join(base, *parts)
    assert result == base.resolve() / expected
    assert result.is_relative_to(base.resolve())


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ((), "no path parts"),
        (("",), "empty"),
        (("/etc/passwd",), "absolute"),
        (("sub", "/etc"), "absolute"),
        (("..",), "'..'"),
        (("../x",), "'..'"),
        (("sub/../../x",), "'..'"),
        (("sub", "..", "a"), "'..'"),
        (("a\x00b",), "NUL"),
        (("..\\..\\windows",), "backslash"),
        (("sub\\a",), "backslash"),
        (("C:",), "drive"),
        (("c:/windows",), "drive"),
        (("sub/D:x",), "drive"),
    ],
)
def test_safe_join_refuses(base: Path, parts: tuple[str, ...], reason: str) -> None:
    with pytest.raises(UnsafePath, match=reason) as info:
        safe_join(base, *parts)
    assert str(base) not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_message_names_part_but_not_base(base: Path) -> None:
    with pytest.raises(UnsafePath) as info:
        safe_join(base, "ok", "../../secret-name")
    assert "secret-name" in str(info.value)
    assert str(base) not in str(info.value)
    assert str(base.parent) not in str(info.value)


def test_symlink_pointing_outside_is_refused(base: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "loot").write_text("x")
    os.symlink(outside, base / "link")
    with pytest.raises(UnsafePath, match="outside") as info:
        safe_join(base, "link", "loot")
    assert str(tmp_path) not in str(info.value)
    with pytest.raises(UnsafePath):
        safe_join(base, "link")
    # also for a file that does not exist yet (a write target)
    with pytest.raises(UnsafePath):
        safe_join(base, "link/new-file")


def test_symlink_to_file_outside_is_refused(base: Path, tmp_path: Path) -> None:
    target = tmp_path / "passwd"
    target.write_text("root")
    os.symlink(target, base / "innocent.txt")
    with pytest.raises(UnsafePath):
        safe_join(base, "innocent.txt")


def test_symlink_inside_base_is_allowed(base: Path) -> None:
    os.symlink(base / "sub", base / "alias")
    assert safe_join(base, "alias", "f") == base.resolve() / "sub" / "f"


def test_symlink_loop_is_refused(base: Path) -> None:
    os.symlink("loop", base / "loop")
    with pytest.raises(UnsafePath) as info:
        safe_join(base, "loop", "x")
    assert str(base) not in str(info.value)


def test_base_that_is_itself_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "base-link")
    assert safe_join(tmp_path / "base-link", "a") == real / "a"


@pytest.mark.parametrize(
    "name", ["report.pdf", ".env", "..x", "a b", "ünï", "x" * 255, "é" * 127, "名前.txt"]
)
def test_safe_filename_accepts(name: str) -> None:
    assert safe_filename(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "a/b",
        "/abs",
        "a\\b",
        "a\x00b",
        "a\nb",
        "tab\there",
        "bell\x07",
        "del\x7f",
        "c1\x85",
        "x" * 256,
        "é" * 128,
        "\ud800",
    ],
)
def test_safe_filename_refuses(name: str) -> None:
    with pytest.raises(UnsafePath):
        safe_filename(name)


def test_non_string_is_refused(base: Path) -> None:
    with pytest.raises(UnsafePath):
        safe_filename(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(UnsafePath):
        safe_join(base, b"bytes")  # type: ignore[arg-type]


def test_state_counts_refusals(base: Path) -> None:
    status, before = paths.state()
    assert status == "active"
    start = before["refusals"]
    assert isinstance(start, int)

    def refuse() -> None:
        for _ in range(100):
            with pytest.raises(UnsafePath):
                safe_filename("..")

    threads = [threading.Thread(target=refuse) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with pytest.raises(UnsafePath):
        safe_join(base, "../x")
    _, after = paths.state()
    assert after["refusals"] == start + 401
    safe_join(base, "fine")
    assert paths.state()[1]["refusals"] == start + 401


_token = st.sampled_from(["a", "sub", "out", ".", "..", "/", "\\", ":", "C:", "\x00", " ", "é"])
_part = st.lists(_token, max_size=6).map("".join)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_part, max_size=4))
def test_accepted_results_stay_inside_base(
    base: Path, outside_link: Path, parts: list[str]
) -> None:
    try:
        result = safe_join(base, *parts)
    except UnsafePath:
        return
    assert result.is_relative_to(base.resolve())


@pytest.fixture
def outside_link(base: Path, tmp_path: Path) -> Path:
    """A symlink ``base/out`` pointing outside ``base``, for the property test."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = base / "out"
    link.symlink_to(elsewhere)
    return link
