"""Fixtures of the A2A tests: an isolated environment with the a2a-sdk 0.3 line.

The 0.3 SDK cannot share an environment with the 1.x SDK (same import name), so a session
fixture creates a virtual environment with it once and caches it under ``.test-cache/``
(or ``$FANGWIRE_TEST_CACHE``); tests run 0.3 clients and servers as subprocesses of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SDK03 = "0.3.26"
UVICORN = "0.54.0"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sdk03_python() -> Path:
    cache = Path(os.environ.get("FANGWIRE_TEST_CACHE") or ROOT / ".test-cache")
    venv = cache / f"a2a-sdk-{SDK03}"
    python = venv / "bin" / "python"
    ready = venv / "ready"
    if not ready.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             f"a2a-sdk[http-server]=={SDK03}", f"uvicorn=={UVICORN}"],
            check=True,
            timeout=600,
        )  # fmt: skip
        ready.write_text(SDK03)
    return python
