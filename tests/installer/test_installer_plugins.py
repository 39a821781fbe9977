"""The installer's plug-in step in a temporary home: every Krita and GIMP 3 layout it knows
(Linux, Flatpak, Snap; Windows and macOS by naming the platform), a second run that changes
nothing, and an uninstall that removes exactly what the manifest lists."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "installer"))
import editor_targets  # noqa: E402
import install  # noqa: E402
from editor_targets import PluginTarget  # noqa: E402


def nothing_on_path(_name: str) -> str | None:
    return None


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (links followed, as the editors do)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def linux_home(home: Path) -> Path:
    """A home where Krita and GIMP are installed natively, as Flatpaks and as Snaps."""
    (home / ".config" / "GIMP" / "3.0").mkdir(parents=True)
    (home / ".config" / "GIMP" / "3.2").mkdir()
    (home / ".config" / "GIMP" / "2.10" / "plug-ins").mkdir(parents=True)  # GIMP 2: not ours
    (home / ".var" / "app" / "org.kde.krita").mkdir(parents=True)
    (home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.0").mkdir(parents=True)
    for snap in ("krita", "gimp"):  # snapd's layout: `current` links to the revision
        (home / "snap" / snap / "42").mkdir(parents=True)
        (home / "snap" / snap / "current").symlink_to("42")
    (home / "snap" / "gimp" / "42" / ".config" / "GIMP" / "3.0").mkdir(parents=True)
    return home


def test_linux_native_flatpak_and_snap_layouts(tmp_path: Path) -> None:
    home = linux_home(tmp_path / "home")
    targets, notices = editor_targets.find_targets("linux", {}, home, nothing_on_path)
    assert notices == []
    var, snap = home / ".var" / "app", home / "snap"
    assert targets == [
        PluginTarget(
            "krita",
            "native",
            home / ".local/share/krita/pykrita",
            home / ".config/kritarc",
            detected=False,
        ),
        PluginTarget(
            "krita",
            "flatpak",
            var / "org.kde.krita/data/krita/pykrita",
            var / "org.kde.krita/config/kritarc",
        ),
        PluginTarget(
            "krita",
            "snap",
            snap / "krita/current/.local/share/krita/pykrita",
            snap / "krita/current/.config/kritarc",
        ),
        PluginTarget("gimp", "native", home / ".config/GIMP/3.0/plug-ins"),
        PluginTarget("gimp", "native", home / ".config/GIMP/3.2/plug-ins"),
        PluginTarget("gimp", "flatpak", var / "org.gimp.GIMP/config/GIMP/3.0/plug-ins"),
        PluginTarget("gimp", "snap", snap / "gimp/current/.config/GIMP/3.0/plug-ins"),
    ]
    assert [t.label for t in targets][:3] == ["Krita", "Krita (Flatpak)", "Krita (Snap)"]
    # XDG variables move the native folders; only one editor when asked
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(home / ".config")}
    (krita,), _ = editor_targets.find_targets(
        "linux", env, tmp_path / "empty", nothing_on_path, editors=("krita",)
    )
    assert krita.folder == tmp_path / "data/krita/pykrita" and not krita.detected


def test_a_gimp_never_started_is_reported_and_its_folder_not_made(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    targets, notices = editor_targets.find_targets(
        "linux", {}, home, lambda name: f"/usr/bin/{name}" if name == "gimp" else None
    )
    assert [t.editor for t in targets] == ["krita"] and targets[0].detected is False
    (notice,) = notices
    assert "has not been started yet" in notice.text and "Start it once" in notice.text
    assert not (home / ".config" / "GIMP").exists()
    # no GIMP at all: nothing to say
    assert editor_targets.find_targets("linux", {}, home, nothing_on_path)[1] == []
    # GIMP's own override of its folder is used as it is
    (gimp,) = editor_targets.find_targets(
        "linux", {"GIMP3_DIRECTORY": str(tmp_path / "g")}, home, nothing_on_path, editors=("gimp",)
    )[0]
    assert gimp.folder == tmp_path / "g" / "plug-ins"


def test_windows_and_macos_layouts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    appdata, local = tmp_path / "Roaming", tmp_path / "Local"
    (appdata / "GIMP" / "3.0").mkdir(parents=True)
    env = {"APPDATA": str(appdata), "LOCALAPPDATA": str(local)}
    targets, _ = editor_targets.find_targets("win32", env, home, nothing_on_path)
    assert targets == [
        PluginTarget(
            "krita", "native", appdata / "krita" / "pykrita", local / "kritarc", detected=False
        ),
        PluginTarget("gimp", "native", appdata / "GIMP" / "3.0" / "plug-ins"),
    ]
    support = home / "Library" / "Application Support"
    (support / "GIMP" / "3.0").mkdir(parents=True)
    (support / "krita").mkdir()
    targets, _ = editor_targets.find_targets("darwin", {}, home, nothing_on_path)
    assert targets == [
        PluginTarget(
            "krita",
            "native",
            support / "krita" / "pykrita",
            home / "Library" / "Preferences" / "kritarc",
            detected=True,
        ),
        PluginTarget("gimp", "native", support / "GIMP" / "3.0" / "plug-ins"),
    ]


@pytest.fixture
def restora_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Restora's own folders (manifest, models, settings) in the temporary home."""
    home = tmp_path / "restora"
    monkeypatch.setenv("RESTORA_HOME", str(home))
    return home


def test_install_twice_then_uninstall_leaves_everything_else(
    tmp_path: Path, restora_home: Path
) -> None:
    home = linux_home(tmp_path / "home")
    # what was there before: another Krita and GIMP plug-in, Krita settings, a model, settings
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    (pykrita / "other").mkdir(parents=True)
    (pykrita / "other" / "__init__.py").write_text("# someone else's plug-in\n")
    (pykrita / "other.desktop").write_text("[Desktop Entry]\nName=Other\n")
    kritarc = home / ".config" / "kritarc"
    kritarc.write_text("[General]\nShowRootLayer=false\n\n[python]\nenable_other=true\n")
    (home / ".config" / "GIMP" / "3.0" / "plug-ins" / "other").mkdir(parents=True)
    (home / ".config" / "GIMP" / "3.0" / "plug-ins" / "other" / "other.py").write_text("x\n")
    model = restora_home / "models" / "upscale_models" / "mine.safetensors"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights")
    (restora_home / "config").mkdir()
    (restora_home / "config" / "server.toml").write_text("port = 9000\n")
    before = snapshot(home)

    manifest = install.Manifest.load(restora_home / install.MANIFEST_NAME)
    installed, notices = install.install_plugins(manifest, platform="linux", env={}, home=home)
    assert len(installed) == 7 and notices == []
    first = snapshot(home)
    assert (pykrita / "restora" / "common" / "launcher.py").is_file()
    assert (pykrita / "restora.desktop").is_file()
    assert "enable_restora=true" in kritarc.read_text()
    assert "enable_other=true" in kritarc.read_text()
    flatpak_rc = home / ".var/app/org.kde.krita/config/kritarc"
    assert flatpak_rc.read_text() == "[python]\nenable_restora=true\n"
    snap_revision = home / "snap" / "krita" / "42"
    assert (snap_revision / ".local/share/krita/pykrita/restora/__init__.py").is_file()
    for profile in (
        ".config/GIMP/3.0",
        ".config/GIMP/3.2",
        ".var/app/org.gimp.GIMP/config/GIMP/3.0",
        "snap/gimp/current/.config/GIMP/3.0",
    ):
        entry = home / profile / "plug-ins" / "restora" / "restora.py"
        assert entry.is_file() and entry.stat().st_mode & 0o111
    assert not (home / ".config/GIMP/2.10/plug-ins/restora").exists()
    recorded = json.loads(manifest.path.read_text())
    assert {p["folder"] for p in recorded["plugins"]} == {str(t.target.folder) for t in installed}
    assert all(p["kritarc_added"] for p in recorded["plugins"] if p["editor"] == "krita")

    # again: the same files, byte for byte, and the same manifest entries
    manifest = install.Manifest.load(restora_home / install.MANIFEST_NAME)
    install.install_plugins(manifest, platform="linux", env={}, home=home)
    assert snapshot(home) == first
    again = json.loads(manifest.path.read_text())
    assert again["plugins"] == recorded["plugins"]

    # uninstall: exactly what the manifest lists; models and settings stay
    assert install.main(["--uninstall"]) == 0
    assert snapshot(home) == before
    assert model.read_bytes() == b"weights"
    assert (restora_home / "config" / "server.toml").is_file()
    assert not manifest.path.exists()
    assert install.main(["--uninstall"]) == 0  # nothing left: says so, changes nothing


def test_uninstall_keeps_a_folder_that_is_not_restoras(tmp_path: Path, restora_home: Path) -> None:
    """A manifest entry pointing at something that is not Restora's is left alone."""
    stranger = tmp_path / "pykrita" / "restora"
    stranger.mkdir(parents=True)
    (stranger / "__init__.py").write_text("# a different plug-in called restora\n")
    manifest = install.Manifest.load(restora_home / install.MANIFEST_NAME)
    manifest.data["plugins"] = [
        {
            "editor": "krita",
            "folder": str(stranger.parent),
            "paths": [str(stranger)],
            "kritarc": None,
        }
    ]
    manifest.save()
    assert install.main(["--uninstall"]) == 0
    assert (stranger / "__init__.py").is_file()


def test_purge_also_removes_models_and_settings(tmp_path: Path, restora_home: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "GIMP" / "3.0").mkdir(parents=True)
    (home / ".config" / "GIMP" / "3.0" / "restora-settings.json").write_text("{}")
    (home / ".config" / "GIMP" / "3.0" / "gimprc").write_text("(x)")
    (restora_home / "models").mkdir(parents=True)
    manifest = install.Manifest.load(restora_home / install.MANIFEST_NAME)
    install.install_plugins(manifest, editors=("gimp",), platform="linux", env={}, home=home)
    assert install.main(["--uninstall", "--purge"]) == 0
    assert not restora_home.exists()
    assert not (home / ".config/GIMP/3.0/restora-settings.json").exists()
    assert (home / ".config/GIMP/3.0/gimprc").read_text() == "(x)"
    assert [p.name for p in (home / ".config/GIMP/3.0/plug-ins").iterdir()] == []
