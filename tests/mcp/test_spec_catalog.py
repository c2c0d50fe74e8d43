"""Server descriptions, the catalog files, tool naming and the reconnect backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from fangwire_mcp.catalog import Catalog
from fangwire_mcp.connection import BACKOFF_CAP, backoff_seconds
from fangwire_mcp.naming import tool_name
from fangwire_mcp.resources import match_template
from fangwire_mcp.spec import SpecError, spec_from_body
from fangwire_mcp.stdio import expand_args


def test_raw_body_with_env_values_and_headers_keeps_secrets_out_of_the_spec() -> None:
    spec, credentials = spec_from_body(
        {
            "name": "remote",
            "transport": {"type": "streamable_http", "url": "https://mcp.example/mcp"},
            "headers": ["Authorization: Bearer abc", "X-Team: blue"],
            "timeout_secs": 5,
        }
    )
    assert spec.transport == "http"
    assert spec.headers == ("Authorization", "X-Team")
    assert credentials == {("header", "Authorization"): "Bearer abc", ("header", "X-Team"): "blue"}
    assert "abc" not in repr(spec.table())
    stdio, secrets = spec_from_body(
        {"name": "s", "transport": "stdio", "command": "x", "env": {"TOKEN": "t0k"}}
    )
    assert stdio.env == ("TOKEN",)
    assert secrets == {("env", "TOKEN"): "t0k"}
    # The table written to config.toml reads back to the same spec, with no credentials.
    assert spec_from_body(stdio.table(), name="s") == (stdio, {})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "a", "transport": "stdio", "command": "x", "timeout_secs": 0}, "timeout_secs"),
        ({"name": "a", "transport": "stdio", "command": "x", "env": ["1BAD"]}, "env"),
        (
            {"name": "a", "transport": "http", "url": "https://x", "headers": ["Bad Name: v"]},
            "headers",
        ),
        (
            {"name": "a", "transport": "http", "url": "https://x", "headers": {"X": "a\r\nb"}},
            "line break",
        ),
        ({"name": "a", "transport": "stdio", "command": "x", "headers": ["A: b"]}, "headers"),
        ({"name": "a", "transport": {"type": "stdio", "command": "x"}, "command": "y"}, "inside"),
        ({"name": "a", "transport": {"type": "sse", "url": "https://x", "extra": 1}}, "extra"),
        ({"name": "a", "transport": "stdio", "command": "x\x00y"}, "NUL"),
        ({"name": "a" * 65, "transport": "stdio", "command": "x"}, "name"),
    ],
)
def test_bad_bodies_name_the_field(body: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec_from_body(body)


def test_catalog_templates_and_operator_overrides(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    assert len(catalog.templates) == 33 and catalog.errors == []
    for template in catalog.templates.values():
        assert template.transport["type"] == "stdio"
        assert template.category in {
            "devtools",
            "productivity",
            "communication",
            "data",
            "cloud",
            "ai",
        }
    (tmp_path / "github.toml").write_text(
        'id = "github"\nname = "GitHub (ours)"\n[transport]\ntype = "http"\nurl = "https://gh.example/mcp"\n'
    )
    (tmp_path / "broken.toml").write_text("id = 3\n")
    assert catalog.reload() == 33
    assert catalog.templates["github"].name == "GitHub (ours)"
    assert catalog.templates["github"].required_env == ()
    assert len(catalog.errors) == 1 and "broken.toml" in catalog.errors[0]
    spec, _ = catalog.templates["github"].install({})
    assert (spec.transport, spec.url, spec.template_id) == (
        "http",
        "https://gh.example/mcp",
        "github",
    )
    with pytest.raises(SpecError, match="does not use"):
        catalog.templates["time"].install({"SURPRISE": "x"})


def test_tool_names() -> None:
    assert tool_name("Everything", "get-sum") == "mcp_everything_get_sum"
    assert tool_name("my.server", "a b/c") == "mcp_my_server_a_b_c"


def test_backoff_is_capped_with_jitter() -> None:
    assert backoff_seconds(1, lambda: 0.0) == 0.5
    assert backoff_seconds(1, lambda: 1.0) == 1.0
    assert backoff_seconds(3, lambda: 1.0) == 4.0
    assert backoff_seconds(50, lambda: 1.0) == BACKOFF_CAP
    assert BACKOFF_CAP / 2 <= backoff_seconds(50) <= BACKOFF_CAP


def test_args_expand_only_names_the_child_receives() -> None:
    env = {"HOME": "/home/u", "DB": "/data/x.db"}
    assert expand_args(["$HOME/files", "--db=${DB}", "$SECRET", "$$"], env) == [
        "/home/u/files",
        "--db=/data/x.db",
        "$SECRET",
        "$$",
    ]


def test_template_matching() -> None:
    assert match_template("test://template/{id}/data", "test://template/123/data") == {"id": "123"}
    assert match_template("test://template/{id}/data", "test://template/1/2/data") is None
    assert match_template("a+b://{x}.{y}", "a+b://left.right") == {"x": "left", "y": "right"}
    assert match_template("static://only", "static://only") == {}
