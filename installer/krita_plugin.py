#!/usr/bin/env python3
"""Build and install the Krita plug-in: `python3 installer/krita_plugin.py build|install`.

  build [--out DIR]         DIR/restora-krita.zip (default dist/), the file Krita's
                            Tools > Scripts > Import Python Plugin from File... accepts
  install [--pykrita DIR] [--kritarc FILE] [--no-enable]
                            copy the plug-in into Krita's pykrita folder and enable it in
                            kritarc ([python] enable_restora=true); restart Krita after
  tree --out DIR            the unpacked plug-in (DIR/restora.desktop, DIR/restora/)

The package is laid out as Krita wants it (restora.desktop beside restora/) and carries its
own copies of `shared/` (restora/shared) and `plugin/common/` (restora/common), because the
user's Krita has no Restora installed; the adapter imports them relatively. Standard library
only, so it runs with any Python 3.10+.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "restora"
ZIP_NAME = "restora-krita.zip"
#: repository folder -> folder inside the plug-in package
PACKAGE_FOLDERS = {"shared": "shared", "plugin/common": "common", "plugin/krita": "krita"}
#: files of plugin/krita that go beside or above the package rather than into restora/krita/
KRITA_EXTRAS = {"restora.desktop", "Manual.html"}
#: a fixed time for the zip entries, so two builds of the same sources are the same file
ZIP_TIME = (2024, 1, 1, 0, 0, 0)

ENTRY = '''"""Restora for Krita, built by installer/krita_plugin.py: edit plugin/ instead."""

__version__ = "{version}"

try:
    import krita  # noqa: F401 - only inside Krita does the plug-in register itself
except ImportError:
    pass
else:
    from .krita.extension import register

    register()
'''


def version() -> str:
    # in an installed Restora this file is backend/editor_plugins/installer/krita_plugin.py
    for init in (ROOT / "backend" / "__init__.py", ROOT.parent / "__init__.py"):
        if init.is_file():
            match = re.search(r'^__version__ = "([^"]+)"', init.read_text(encoding="utf-8"), re.M)
            if match:
                return match.group(1)
    return "0"


def default_out() -> Path:
    """dist/ of the checkout, or of the current folder when run from an installed Restora."""
    return ROOT / "dist" if (ROOT / "pyproject.toml").is_file() else Path("dist")


def build_tree(dest: Path) -> Path:
    """Write the plug-in (restora.desktop and restora/) into `dest`; returns dest."""
    dest.mkdir(parents=True, exist_ok=True)
    package = dest / NAME
    if package.exists():
        shutil.rmtree(package)
    package.mkdir()
    for src, name in PACKAGE_FOLDERS.items():
        target = package / name
        target.mkdir()
        for path in sorted((ROOT / src).iterdir()):
            if path.suffix == ".py":
                shutil.copyfile(path, target / path.name)
    (package / "__init__.py").write_text(ENTRY.format(version=version()), encoding="utf-8")
    shutil.copyfile(ROOT / "plugin" / "krita" / "Manual.html", package / "Manual.html")
    shutil.copyfile(ROOT / "plugin" / "krita" / "restora.desktop", dest / f"{NAME}.desktop")
    return dest


def build_zip(out_dir: Path) -> Path:
    """The zip Krita imports, with directory entries (Krita's importer looks for them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ZIP_NAME
    with tempfile.TemporaryDirectory() as tmp:
        tree = build_tree(Path(tmp))
        entries = sorted(p for p in tree.rglob("*"))
        partial = target.with_suffix(".zip.part")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in entries:
                name = path.relative_to(tree).as_posix()
                if path.is_dir():
                    info = zipfile.ZipInfo(name + "/", ZIP_TIME)
                    info.external_attr = 0o40755 << 16
                    zf.writestr(info, b"")
                else:
                    info = zipfile.ZipInfo(name, ZIP_TIME)
                    info.external_attr = 0o644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, path.read_bytes())
        partial.replace(target)
    return target


def default_pykrita() -> Path:
    """Krita's per-user Python plug-in folder on this platform."""
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "krita" \
            / "pykrita"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "krita" / "pykrita"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "krita" / "pykrita"


def default_kritarc() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "kritarc"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Preferences" / "kritarc"
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "kritarc"


def install(pykrita: Path, kritarc: Path | None, enable: bool = True) -> Path:
    """Copy the plug-in into `pykrita` (replacing an older copy) and enable it in kritarc."""
    pykrita.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tree = build_tree(Path(tmp))
        target = pykrita / NAME
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(tree / NAME, target)
        shutil.copyfile(tree / f"{NAME}.desktop", pykrita / f"{NAME}.desktop")
    if enable and kritarc is not None:
        enable_in_kritarc(kritarc)
    return pykrita / NAME


def enable_in_kritarc(path: Path, name: str = NAME) -> None:
    """Set `enable_<name>=true` in the [python] group, touching no other line.

    A line edit, not configparser: kritarc is KConfig's format (case-sensitive keys, groups
    like [Group][Sub]) and must come back byte for byte apart from this line.
    """
    key = f"enable_{name}"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    out: list[str] = []
    in_python = found_group = done = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            if in_python and not done:
                out.append(f"{key}=true")
                done = True
            in_python = stripped == "[python]"
            found_group = found_group or in_python
        elif in_python and stripped.split("=", 1)[0].strip() == key:
            if not done:
                out.append(f"{key}=true")
                done = True
            continue
        out.append(line)
    if in_python and not done:
        out.append(f"{key}=true")
        done = True
    if not found_group:
        if out and out[-1].strip():
            out.append("")
        out += ["[python]", f"{key}=true"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def disable_in_kritarc(path: Path, name: str = NAME) -> bool:
    """Undo `enable_in_kritarc`: remove `enable_<name>=...` from the [python] group, and the
    group when nothing else is in it, touching no other line; a file left empty is deleted.
    True when something was removed."""
    if not path.is_file():
        return False
    key = f"enable_{name}"
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[str] = []
    group_start = -1  # index in `out` of the current [python] header
    for line in [*lines, "[end]"]:
        stripped = line.strip()
        if stripped.startswith("["):
            if group_start >= 0 and not any(x.strip() for x in out[group_start + 1:]):
                removed = out[group_start:]  # an empty [python] group goes
                del out[group_start:]
                if len(removed) == 1 and out and not out[-1].strip():
                    out.pop()  # the blank line enable_in_kritarc put before it
            group_start = len(out) if stripped == "[python]" else -1
        elif group_start >= 0 and stripped.split("=", 1)[0].strip() == key:
            continue
        out.append(line)
    out.pop()  # [end]
    if out == lines:
        return False
    if any(line.strip() for line in out):
        path.write_text("\n".join(out) + "\n", encoding="utf-8")
    else:
        path.unlink()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help=f"make {ZIP_NAME} for Krita's plug-in importer")
    b.add_argument("--out", type=Path, default=default_out(), help="folder (default: dist/)")
    t = sub.add_parser("tree", help="write the unpacked plug-in into a folder")
    t.add_argument("--out", type=Path, required=True)
    i = sub.add_parser("install", help="install into Krita's pykrita folder and enable it")
    i.add_argument("--pykrita", type=Path, default=None,
                   help=f"pykrita folder (default: {default_pykrita()})")
    i.add_argument("--kritarc", type=Path, default=None,
                   help=f"Krita's settings file (default: {default_kritarc()})")
    i.add_argument("--no-enable", action="store_true", help="do not touch kritarc")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build_zip(args.out))
    elif args.command == "tree":
        print(build_tree(args.out))
    else:
        target = install(args.pykrita or default_pykrita(),
                         None if args.no_enable else (args.kritarc or default_kritarc()))
        print(f"Installed {target}. Restart Krita; the actions are under Tools > Restora.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
