"""Every Krita and GIMP 3 on this computer, and putting Restora's plug-ins into them.

`find_targets()` is pure apart from looking at folders: it takes the platform, environment and
home folder, so tests lay out a temporary home as Linux (native, Flatpak, Snap), Windows or
macOS would. Installing reuses krita_plugin.py and gimp_plugin.py. Standard library only.

Layouts (the plug-in folder; Krita also has a settings file, kritarc, to enable it in):
- Linux: ~/.local/share/krita/pykrita ($XDG_DATA_HOME), ~/.config/kritarc;
  ~/.config/GIMP/3.x/plug-ins ($XDG_CONFIG_HOME)
- Flatpak: ~/.var/app/org.kde.krita/data/krita/pykrita, .../config/kritarc;
  ~/.var/app/org.gimp.GIMP/config/GIMP/3.x/plug-ins
- Snap: ~/snap/krita/current/.local/share/krita/pykrita, .../.config/kritarc;
  ~/snap/gimp/current/.config/GIMP/3.x/plug-ins
- Windows: %APPDATA%\\krita\\pykrita, %LOCALAPPDATA%\\kritarc; %APPDATA%\\GIMP\\3.x\\plug-ins
- macOS: ~/Library/Application Support/krita/pykrita, ~/Library/Preferences/kritarc;
  ~/Library/Application Support/GIMP/3.x/plug-ins

Krita's own folder is always used (Krita creates nothing there that Restora's files would
disturb, and an AppImage Krita cannot be detected before its first start). A Flatpak or Snap
editor is used when its folder or installation is there. GIMP's profile folder (GIMP/3.0) is
never created here: GIMP copies its defaults and a 2.10 user's settings into it on the first
start only when it does not exist yet, so a GIMP 3 that was never started is reported instead.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import gimp_plugin
import krita_plugin

KRITA_FLATPAK = "org.kde.krita"
GIMP_FLATPAK = "org.gimp.GIMP"
#: what marks a folder as Restora's own, so uninstalling never removes anything else
KRITA_MARKER = "Restora for Krita"


@dataclass(frozen=True)
class PluginTarget:
    editor: str  # "krita" or "gimp"
    layout: str  # "native", "flatpak" or "snap"
    folder: Path  # Krita's pykrita folder, or a GIMP 3 plug-ins folder
    kritarc: Path | None = None
    detected: bool = True  # False: the editor's usual place, the editor itself not seen

    @property
    def label(self) -> str:
        name = "Krita" if self.editor == "krita" else "GIMP"
        return name if self.layout == "native" else f"{name} ({self.layout.capitalize()})"

    def paths(self) -> list[Path]:
        """What installing creates (and uninstalling removes)."""
        if self.editor == "krita":
            return [self.folder / krita_plugin.NAME, self.folder / f"{krita_plugin.NAME}.desktop"]
        return [self.folder / gimp_plugin.PLUGIN_NAME]


@dataclass(frozen=True)
class Notice:
    """An editor that was seen but cannot get the plug-in yet, and what to do."""

    editor: str
    text: str


def find_targets(
    platform: str | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    which: Callable[[str], str | None] = shutil.which,
    editors: tuple[str, ...] = ("krita", "gimp"),
) -> tuple[list[PluginTarget], list[Notice]]:
    """The plug-in folders to install into, and editors that cannot be served yet."""
    platform = platform or sys.platform
    env = os.environ if env is None else env
    home = home or Path.home()
    targets: list[PluginTarget] = []
    notices: list[Notice] = []
    if "krita" in editors:
        targets += krita_targets(platform, env, home, which)
    if "gimp" in editors:
        found, waiting = gimp_targets(platform, env, home, which)
        targets += found
        notices += waiting
    return targets, notices


def krita_targets(
    platform: str, env: Mapping[str, str], home: Path, which: Callable[[str], str | None]
) -> list[PluginTarget]:
    if platform.startswith("win"):
        appdata = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
        local = Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local")
        folder = appdata / "krita" / "pykrita"
        return [
            PluginTarget(
                "krita", "native", folder, local / "kritarc", detected=folder.parent.is_dir()
            )
        ]
    if platform == "darwin":
        support = home / "Library" / "Application Support"
        folder = support / "krita" / "pykrita"
        detected = folder.parent.is_dir() or Path("/Applications/krita.app").is_dir()
        return [
            PluginTarget(
                "krita", "native", folder, home / "Library" / "Preferences" / "kritarc", detected
            )
        ]
    data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    native = data / "krita" / "pykrita"
    targets = [
        PluginTarget(
            "krita",
            "native",
            native,
            config / "kritarc",
            detected=bool(which("krita")) or native.parent.is_dir(),
        )
    ]
    if flatpak_present(KRITA_FLATPAK, home):
        app = home / ".var" / "app" / KRITA_FLATPAK
        targets.append(
            PluginTarget(
                "krita", "flatpak", app / "data" / "krita" / "pykrita", app / "config" / "kritarc"
            )
        )
    snap = home / "snap" / "krita" / "current"
    if snap.is_dir():  # made by snapd at the first start; never create it (it is a link)
        targets.append(
            PluginTarget(
                "krita",
                "snap",
                snap / ".local" / "share" / "krita" / "pykrita",
                snap / ".config" / "kritarc",
            )
        )
    return targets


def gimp_targets(
    platform: str,
    env: Mapping[str, str],
    home: Path,
    which: Callable[[str], str | None],
) -> tuple[list[PluginTarget], list[Notice]]:
    if env.get("GIMP3_DIRECTORY"):  # GIMP's own override of its profile folder
        return [PluginTarget("gimp", "native", Path(env["GIMP3_DIRECTORY"]) / "plug-ins")], []
    if platform.startswith("win"):
        base = Path(env.get("APPDATA") or home / "AppData" / "Roaming") / "GIMP"
        installed = any(Path(p).is_dir() for p in _windows_program_dirs(env, "GIMP 3"))
        return _gimp_layout("native", base, installed)
    if platform == "darwin":
        base = home / "Library" / "Application Support" / "GIMP"
        return _gimp_layout("native", base, Path("/Applications/GIMP.app").is_dir())
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    installed = any(which(n) for n in ("gimp-3.0", "gimp-3", "gimp"))
    targets, notices = _gimp_layout("native", config / "GIMP", installed)
    if flatpak_present(GIMP_FLATPAK, home):
        base = home / ".var" / "app" / GIMP_FLATPAK / "config" / "GIMP"
        found, waiting = _gimp_layout("flatpak", base, True)
        targets += found
        notices += waiting
    snap = home / "snap" / "gimp" / "current"
    if snap.is_dir():
        found, waiting = _gimp_layout("snap", snap / ".config" / "GIMP", True)
        targets += found
        notices += waiting
    return targets, notices


def _gimp_layout(
    layout: str,
    base: Path,
    installed: bool,
) -> tuple[list[PluginTarget], list[Notice]]:
    """One plug-ins folder per GIMP 3.x profile (3.0, 3.2, ...) under `base`."""
    profiles = gimp_profiles(base)
    if profiles:
        return [PluginTarget("gimp", layout, p / "plug-ins") for p in profiles], []
    if not installed:
        return [], []
    label = "GIMP" if layout == "native" else f"GIMP ({layout.capitalize()})"
    return [], [
        Notice(
            "gimp",
            f"{label} 3 has not been started yet, so it has no settings "
            f"folder ({base / '3.0'}). Start it once, close it, and run the "
            "installer again.",
        )
    ]


def gimp_profiles(base: Path) -> list[Path]:
    """GIMP 3 profile folders (3.0, 3.2, ...) in version order."""
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if p.is_dir() and re.fullmatch(r"3\.\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split(".")[1]))


def flatpak_present(app_id: str, home: Path) -> bool:
    """The Flatpak app has run (its ~/.var/app folder) or is installed (user or system)."""
    return any(
        p.is_dir()
        for p in (
            home / ".var" / "app" / app_id,
            home / ".local" / "share" / "flatpak" / "app" / app_id,
            Path("/var/lib/flatpak/app") / app_id,
        )
    )


def _windows_program_dirs(env: Mapping[str, str], name: str) -> list[str]:
    return [
        str(Path(env[k]) / name)
        for k in ("ProgramFiles", "ProgramW6432", "LOCALAPPDATA")
        if env.get(k)
    ]


# --- installing and removing ------------------------------------------------------------------


@dataclass(frozen=True)
class InstalledPlugin:
    target: PluginTarget
    paths: tuple[Path, ...]
    #: the kritarc line `enable_restora=true` was added by the installer (removed on uninstall)
    enabled_in_kritarc: bool = False


def install_plugin(target: PluginTarget) -> InstalledPlugin:
    """Put the plug-in into the target's folder (replacing an older copy)."""
    if target.editor == "krita":
        added = target.kritarc is not None and not kritarc_enables(target.kritarc)
        # kritarc is Krita's whole settings file: written only when the line is missing
        krita_plugin.install(target.folder, target.kritarc if added else None)
        return InstalledPlugin(target, tuple(target.paths()), added)
    gimp_plugin.build(target.folder)
    return InstalledPlugin(target, tuple(target.paths()))


def kritarc_enables(path: Path, name: str = krita_plugin.NAME) -> bool:
    """kritarc already has `enable_<name>=true` in its [python] group."""
    if not path.is_file():
        return False
    group = ""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        text = line.strip()
        if text.startswith("["):
            group = text
        elif group == "[python]" and text.replace(" ", "") == f"enable_{name}=true":
            return True
    return False


def is_ours(path: Path) -> bool:
    """The file or folder is one of Restora's plug-in files (checked before removing)."""
    if path.name == f"{krita_plugin.NAME}.desktop":
        return path.is_file() and "restora" in path.read_text(errors="replace").lower()
    if (path / gimp_plugin.ENTRY).is_file() and (path / gimp_plugin.LIBRARY).is_dir():
        return True
    init = path / "__init__.py"
    return init.is_file() and KRITA_MARKER in init.read_text(errors="replace")


def remove_plugin_path(path: Path) -> bool:
    """Remove one of Restora's plug-in files or folders; False when absent or not ours."""
    if not path.exists() or not is_ours(path):
        return False
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    return True
