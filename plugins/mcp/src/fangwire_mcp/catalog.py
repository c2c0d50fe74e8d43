"""The catalog of installable MCP server templates.

Templates are TOML files, one per server: the package ships 33 in ``fangwire_mcp/catalog``,
and an operator may add or override templates in ``<home>/mcp/catalog/*.toml`` (same id
wins). :meth:`Catalog.reload` reads both again; a bad file is skipped with a logged reason
and listed in :attr:`Catalog.errors`, never taking the catalog down.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Iterable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import attrs

from fangwire_mcp.spec import Credentials, ServerSpec, SpecError, check_name

log = logging.getLogger("fangwire.mcp.catalog")

CATEGORY_LABELS = {
    "devtools": "Dev Tools",
    "productivity": "Productivity",
    "communication": "Communication",
    "data": "Data",
    "cloud": "Cloud",
    "ai": "AI & Search",
}


@attrs.frozen
class RequiredEnv:
    name: str
    label: str
    help: str = ""
    is_secret: bool = True
    get_url: str = ""


@attrs.frozen
class Template:
    """One catalog entry."""

    id: str
    name: str
    description: str
    category: str
    icon: str
    tags: tuple[str, ...]
    transport: Mapping[str, Any]
    required_env: tuple[RequiredEnv, ...]
    oauth: Mapping[str, Any] | None
    health_interval_secs: int
    unhealthy_threshold: int
    setup_instructions: str

    def view(self, *, installed: bool) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "icon": self.icon,
            "category": CATEGORY_LABELS.get(self.category, self.category),
            "category_id": self.category,
            "installed": installed,
            "tags": list(self.tags),
            "transport": dict(self.transport),
            "required_env": [attrs.asdict(e) for e in self.required_env],
            "has_oauth": self.oauth is not None,
            "setup_instructions": self.setup_instructions,
            "health_check": {
                "interval_secs": self.health_interval_secs,
                "unhealthy_threshold": self.unhealthy_threshold,
            },
        }

    def install(
        self, credentials: Mapping[str, Any], *, name: str | None = None
    ) -> tuple[ServerSpec, Credentials]:
        """The server spec for this template; :class:`SpecError` names a missing credential."""
        if not isinstance(credentials, Mapping):
            raise SpecError("credentials: expected an object of name to value")
        known = {e.name for e in self.required_env}
        for key, value in credentials.items():
            if key not in known:
                raise SpecError(f"credentials.{key}: template {self.id!r} does not use it")
            if not isinstance(value, str):
                raise SpecError(f"credentials.{key}: expected a string")
        for env in self.required_env:
            value = credentials.get(env.name)
            if not isinstance(value, str) or not value.strip():
                raise SpecError(
                    f"credentials.{env.name}: required by template {self.id!r} ({env.label})"
                )
        stored: Credentials = {("env", key): value for key, value in credentials.items()}
        spec = ServerSpec(
            name=check_name(name if name is not None else self.id),
            transport=self.transport["type"],
            command=self.transport.get("command", ""),
            args=tuple(self.transport.get("args", ())),
            url=self.transport.get("url", ""),
            env=tuple(e.name for e in self.required_env),
            template_id=self.id,
            health_interval_secs=self.health_interval_secs,
            unhealthy_threshold=self.unhealthy_threshold,
        )
        return spec, stored


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a list of strings")
    return tuple(value)


def parse_template(data: Mapping[str, Any], source: str) -> Template:
    """A template from a parsed TOML file; ``ValueError`` names the bad field."""

    def text(key: str, default: str | None = None) -> str:
        value = data.get(key, default)
        if not isinstance(value, str):
            raise ValueError(f"{source}: {key}: expected a string")
        return value

    transport = data.get("transport")
    if not isinstance(transport, Mapping) or transport.get("type") not in ("stdio", "sse", "http"):
        raise ValueError(f"{source}: transport.type: expected stdio, sse or http")
    if transport["type"] == "stdio" and not isinstance(transport.get("command"), str):
        raise ValueError(f"{source}: transport.command: required for stdio")
    if transport["type"] != "stdio" and not isinstance(transport.get("url"), str):
        raise ValueError(f"{source}: transport.url: required for {transport['type']}")
    envs = []
    for index, item in enumerate(data.get("required_env", [])):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ValueError(f"{source}: required_env[{index}].name: required")
        envs.append(
            RequiredEnv(
                name=item["name"],
                label=str(item.get("label", item["name"])),
                help=str(item.get("help", "")),
                is_secret=bool(item.get("is_secret", True)),
                get_url=str(item.get("get_url", "")),
            )
        )
    health = data.get("health_check", {})
    oauth = data.get("oauth")
    template_id = text("id")
    check_name(template_id, "id")
    return Template(
        id=template_id,
        name=text("name"),
        description=text("description", ""),
        category=text("category", "devtools"),
        icon=text("icon", ""),
        tags=_strs(data.get("tags", []), f"{source}: tags"),
        transport=dict(transport),
        required_env=tuple(envs),
        oauth=dict(oauth) if isinstance(oauth, Mapping) else None,
        health_interval_secs=int(health.get("interval_secs", 60)),
        unhealthy_threshold=int(health.get("unhealthy_threshold", 3)),
        setup_instructions=text("setup_instructions", ""),
    )


def _files(directories: Iterable[Path | Any]) -> list[tuple[str, bytes]]:
    found = []
    for directory in directories:
        try:
            entries = sorted(directory.iterdir(), key=lambda p: p.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.name.endswith(".toml") and entry.is_file():
                found.append((entry.name, entry.read_bytes()))
    return found


class Catalog:
    """Templates by id, read from the package's data files and the operator's directory."""

    def __init__(self, extra_dir: Path | None = None) -> None:
        self.extra_dir = extra_dir
        self.templates: dict[str, Template] = {}
        self.errors: list[str] = []
        self.reload()

    def reload(self) -> int:
        """Read every template file again; returns how many templates are loaded."""
        directories: list[Any] = [files("fangwire_mcp").joinpath("catalog")]
        if self.extra_dir is not None:
            directories.append(self.extra_dir)
        templates: dict[str, Template] = {}
        errors: list[str] = []
        for name, raw in _files(directories):
            try:
                template = parse_template(tomllib.loads(raw.decode("utf-8")), name)
            except (ValueError, SpecError, UnicodeDecodeError) as exc:
                errors.append(str(exc))
                log.warning("skipping MCP catalog file %s: %s", name, exc)
                continue
            templates[template.id] = template
        self.templates = dict(sorted(templates.items()))
        self.errors = errors
        return len(self.templates)

    def get(self, template_id: str) -> Template | None:
        return self.templates.get(template_id)
