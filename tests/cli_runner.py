"""`restora` as a user runs it: the installed command, or `python -m backend.cli` without one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "restora"
CLI = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "backend.cli"]


def restora(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
