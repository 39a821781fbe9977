#!/usr/bin/env python3
"""One-command set-up: `python3 installer/setup.py [--dev]`.

Creates .venv/ at the repository root, installs the backend and its dependencies into it,
and imports the offline default models. Standard library only, so it runs on a bare Python.
Running it again is fast: the install step is skipped while the files that define it are
unchanged, and models already imported are left as they are.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".restora-installed"
DEFINING_FILES = ("pyproject.toml", "installer/torch-requirements.txt", "installer/setup.py")


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def venv_restora() -> Path:
    return VENV / ("Scripts/restora.exe" if os.name == "nt" else "bin/restora")


def install_key(dev: bool) -> str:
    h = hashlib.sha256(f"{sys.version_info[:2]}|dev={dev}".encode())
    for name in DEFINING_FILES:
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def run(cmd: list[str | Path]) -> None:
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", action="store_true", help="also install the test tools")
    parser.add_argument("--skip-models", action="store_true", help="do not import default models")
    args = parser.parse_args()

    key = install_key(args.dev)
    if not venv_python().exists():
        print(f"Creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text().strip() == key:
        print("Python packages are up to date.", flush=True)
    else:
        pip = [venv_python(), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        run([*pip, "-r", ROOT / "installer/torch-requirements.txt"])
        run([*pip, "-e", f"{ROOT}[dev]" if args.dev else str(ROOT)])
        STAMP.write_text(key + "\n")

    check = subprocess.run([str(venv_python()), "-c", "import cv2"], capture_output=True, text=True)
    if check.returncode != 0:
        print(
            "OpenCV cannot load a system library:\n"
            + check.stderr.strip().splitlines()[-1]
            + "\nOn Debian/Ubuntu: sudo apt-get install libgl1 libglib2.0-0",
            file=sys.stderr,
        )
        return 1
    if not args.skip_models:
        run([venv_restora(), "models", "install-defaults"])
    restora = venv_restora().relative_to(ROOT)
    print(f"\nReady. Try: {restora} upscale docs/sample.png -o sample-x4.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
