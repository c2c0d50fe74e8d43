"""Where fangwire keeps its files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CONFIG_FILE_NAME = "config.toml"


def resolve_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$FANGWIRE_HOME`` if set, else ``~/.fangwire``."""
    env = os.environ if environ is None else environ
    value = env.get("FANGWIRE_HOME", "").strip()
    return Path(value).expanduser() if value else Path.home() / ".fangwire"


def ensure_home(home: Path) -> Path:
    """Create the home directory (mode 0700) if needed and return it."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home
