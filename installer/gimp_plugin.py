#!/usr/bin/env python3
"""Build and install Restora's GIMP 3 plug-in.

    python3 installer/gimp_plugin.py build --out DIR      # DIR/restora/ ready to copy
    python3 installer/gimp_plugin.py install [--dest DIR] # into GIMP 3's plug-ins folder
    python3 installer/gimp_plugin.py uninstall [--dest DIR]

The plug-in is one folder, `restora/`: `restora.py` (the file GIMP starts; GIMP 3 wants it
named after its folder) and `restora_lib/` with the GIMP adapter (plugin/gimp), the
editor-agnostic part (plugin/common) and its own copy of the wire protocol (shared/), so the
plug-in needs nothing but the Python GIMP runs it with. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "restora"
LIBRARY = "restora_lib"
ENTRY = "restora.py"  # in plugin/gimp/; GIMP starts plug-ins/restora/restora.py
#: the library's parts: (package inside restora_lib, folder in the repository)
PARTS = (("shared", REPO / "shared"), ("common", REPO / "plugin" / "common"),
         ("gimp", REPO / "plugin" / "gimp"))
LIBRARY_INIT = '''"""Restora's GIMP plug-in library: gimp/ (the GIMP adapter), common/
(editor-agnostic) and shared/ (the wire protocol), copied from the Restora repository by
installer/gimp_plugin.py. Every module reaches the protocol as `from ..shared import protocol`,
as in the repository."""
'''


def plugin_dirs(platform: str | None = None, env: Mapping[str, str] | None = None,
                home: Path | None = None) -> list[Path]:
    """GIMP 3's user plug-in folders on this system, the usual one first.

    Linux: ~/.config/GIMP/3.0/plug-ins (or $XDG_CONFIG_HOME), and Flatpak's GIMP's folder when
    Flatpak GIMP has been run; Windows: %APPDATA%\\GIMP\\3.0\\plug-ins; macOS:
    ~/Library/Application Support/GIMP/3.0/plug-ins. $GIMP3_DIRECTORY moves GIMP's whole
    folder, as it does for GIMP itself.
    """
    platform = platform or sys.platform
    env = os.environ if env is None else env
    home = home or Path.home()
    if env.get("GIMP3_DIRECTORY"):
        return [Path(env["GIMP3_DIRECTORY"]) / "plug-ins"]
    if platform.startswith("win"):
        appdata = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
        return [appdata / "GIMP" / "3.0" / "plug-ins"]
    if platform == "darwin":
        return [home / "Library" / "Application Support" / "GIMP" / "3.0" / "plug-ins"]
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    dirs = [config / "GIMP" / "3.0" / "plug-ins"]
    flatpak = home / ".var" / "app" / "org.gimp.GIMP" / "config"
    if flatpak.is_dir():
        dirs.append(flatpak / "GIMP" / "3.0" / "plug-ins")
    return dirs


def build(out: Path) -> Path:
    """Write the plug-in folder `out/restora/`; returns it. Replaces an older build."""
    target = out / PLUGIN_NAME
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{PLUGIN_NAME}-", dir=out))
    try:
        library = staging / LIBRARY
        library.mkdir()
        (library / "__init__.py").write_text(LIBRARY_INIT, encoding="utf-8")
        for package, source in PARTS:
            _copy_package(source, library / package, skip={ENTRY})
        entry = staging / ENTRY
        shutil.copyfile(REPO / "plugin" / "gimp" / ENTRY, entry)
        mode = stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
        entry.chmod(mode)  # GIMP on Linux and macOS starts it through its #! line
        staging.chmod(0o755)
        _replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _copy_package(source: Path, dest: Path, skip: set[str]) -> None:
    """The package's .py files only: no caches, tests or editor droppings."""
    dest.mkdir(parents=True)
    files = sorted(p for p in source.glob("*.py") if p.name not in skip)
    if not any(p.name == "__init__.py" for p in files):
        raise FileNotFoundError(f"{source} is not a Python package (no __init__.py)")
    for path in files:
        shutil.copyfile(path, dest / path.name)


def _replace(new: Path, target: Path) -> None:
    """Swap `new` in for `target`; an old copy is moved aside first, then deleted."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def install(dest: Path | None = None) -> list[Path]:
    """Build into `dest` (default: every GIMP 3 plug-ins folder found); returns the folders."""
    folders = [dest] if dest is not None else plugin_dirs()
    return [build(folder) for folder in folders]


def uninstall(dest: Path | None = None) -> list[Path]:
    removed = []
    for folder in [dest] if dest is not None else plugin_dirs():
        target = folder / PLUGIN_NAME
        if (target / ENTRY).exists():
            shutil.rmtree(target)
            removed.append(target)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build and install Restora's GIMP 3 plug-in.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the plug-in folder (restora/) into a folder")
    b.add_argument("--out", type=Path, required=True, help="where to write restora/")
    i = sub.add_parser("install", help="install into GIMP 3's plug-ins folder")
    i.add_argument("--dest", type=Path, help="a plug-ins folder (default: GIMP 3's own)")
    u = sub.add_parser("uninstall", help="remove the plug-in from GIMP 3's plug-ins folder")
    u.add_argument("--dest", type=Path, help="a plug-ins folder (default: GIMP 3's own)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(f"Built {build(args.out)}")
        elif args.command == "install":
            for folder in install(args.dest):
                print(f"Installed Restora's GIMP plug-in in {folder}")
            print("Restart GIMP: Restora's commands are under Filters > Restora.\n"
                  "They need the backend running: start it with `restora serve`.")
        else:
            removed = uninstall(args.dest)
            print("\n".join(f"Removed {p}" for p in removed) or "Nothing to remove.")
    except OSError as exc:
        print(f"Could not {args.command} the plug-in: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
