"""`restora plugin krita|gimp ...`: build or install an editor plug-in."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    plug = sub.add_parser(
        "plugin",
        help="build or install the Krita / GIMP 3 plug-in",
        description="Build or install an editor plug-in. Examples: `restora plugin krita "
        "install`, `restora plugin krita build --out dist`, `restora plugin gimp install`. "
        "Arguments after the editor go to the plug-in builder (installer/<editor>_plugin.py).",
    )
    plug.add_argument("editor", choices=["krita", "gimp"])
    plug.add_argument("args", nargs=argparse.REMAINDER, help="build | install | ... (see --help)")
    return plug


def cmd_plugin(args: argparse.Namespace) -> int:
    """Run the editor's plug-in builder (installer/<editor>_plugin.py) shipped with Restora."""
    import runpy

    from backend.editor_plugins import builder_script

    script = builder_script(args.editor)
    old_argv = sys.argv
    sys.argv = [str(script), *(args.args or ["--help"])]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old_argv
    return 0
