"""Reading and writing ``config.toml``.

Writes made through the API keep the operator's comments and layout (tomlkit), are validated
before anything touches the disk, and replace the file atomically: write a temporary file in
the same directory, fsync it, rename it over the old one, fsync the directory. A crash at any
point leaves either the old file or the new one, never a mix.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import cattrs
import tomlkit
from tomlkit.items import Table

from fangwire.config import Config, ConfigError, parse_config_text
from fangwire.fsutil import atomic_write
from fangwire.home import CONFIG_FILE_NAME

SOURCE_NAME = CONFIG_FILE_NAME


def default_config_text() -> str:
    """The commented default ``config.toml`` that ``fangwire init`` writes."""
    return files("fangwire").joinpath("default_config.toml").read_text(encoding="utf-8")


def atomic_write_text(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically and durably."""
    atomic_write(path, text.encode("utf-8"), mode=mode)


class ConfigFile:
    """The configuration file of one home directory."""

    def __init__(self, path: Path, converter: cattrs.Converter) -> None:
        self.path = path
        self._converter = converter
        self._lock = threading.Lock()

    def ensure_exists(self) -> bool:
        """Write the commented defaults if the file is missing. True when it was created."""
        if self.path.exists():
            return False
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_text(self.path, default_config_text())
        return True

    def load(self) -> Config:
        """Read and validate the file; :class:`ConfigError` names what is wrong."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return self._converter.structure({}, Config)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{SOURCE_NAME}: cannot be read: {exc.__class__.__name__}") from exc
        return parse_config_text(text, self._converter, SOURCE_NAME)

    def edit(self, change: Callable[[tomlkit.TOMLDocument], None]) -> Config:
        """Apply ``change`` to the document, validate the result, and write it atomically.

        Returns the new configuration. Raises :class:`ConfigError` (and leaves the file as it
        was) if the result is invalid.
        """
        with self._lock:
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = default_config_text()
            document = tomlkit.parse(text)
            change(document)
            new_text = tomlkit.dumps(document)
            config = parse_config_text(new_text, self._converter, SOURCE_NAME)
            atomic_write_text(self.path, new_text)
            return config

    def set_value(self, key_path: Sequence[str], value: Any) -> Config:
        """Set one key (creating tables along the way), keeping the rest of the file."""
        if not key_path:
            raise ValueError("key_path must not be empty")

        def change(document: tomlkit.TOMLDocument) -> None:
            table: Any = document
            for key in key_path[:-1]:
                if key not in table:
                    table[key] = tomlkit.table()
                table = table[key]
                if not isinstance(table, Table | dict):
                    raise ConfigError(f"{SOURCE_NAME}: {key} is not a table")
            table[key_path[-1]] = value

        return self.edit(change)

    def remove_value(self, key_path: Sequence[str]) -> Config:
        """Remove one key or table if present, keeping the rest of the file."""

        def change(document: tomlkit.TOMLDocument) -> None:
            table: Any = document
            for key in key_path[:-1]:
                if key not in table:
                    return
                table = table[key]
            if key_path[-1] in table:
                del table[key_path[-1]]

        return self.edit(change)
