"""The README's own path, as a new user takes it: a fresh clone of HEAD, `python3
installer/setup.py` (a non-editable install), then every command the README shows.

The test command sets itself up with `--dev` (editable), which hides anything a non-editable
install lacks; this test does not. To stay affordable it does not download PyTorch again: the
clone's `.venv` is created first with one `.pth` line that makes the test environment's
site-packages visible to it, so pip finds every dependency satisfied, while Restora itself is
built from the clone and installed into the clone's `.venv` like any user's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # a fresh set-up: a minute or more

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 600):
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def readme_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(clone, environment): a fresh clone of HEAD set up by `python3 installer/setup.py`."""
    tmp = tmp_path_factory.mktemp("readme")
    clone, home = tmp / "restora", tmp / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RESTORA_", "XDG_", "VIRTUAL_ENV", "PYTHON"))
    }
    env.update(HOME=str(home), RESTORA_HOME=str(tmp / "restora-home"))
    # a clone of the committed HEAD: uncommitted files of the working tree are not used
    _run(["git", "clone", "-q", "--no-hardlinks", REPO, clone], tmp, env)
    venv = clone / ".venv"
    _run([sys.executable, "-m", "venv", venv], tmp, env)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    # appended after the venv's own site-packages, and its .pth files (the test environment's
    # editable Restora) are not processed: only the dependencies show through
    (site / "test-env-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "installer/setup.py"], clone, env, timeout=900)
    return clone, env


def test_setup_installs_restora_from_the_clone_not_editable(readme_setup) -> None:
    clone, env = readme_setup
    python = clone / ".venv" / "bin" / "python"
    probe = (
        "import json, backend, importlib.metadata as m; d = m.distribution('restora'); "
        "print(json.dumps([backend.__file__, d.read_text('direct_url.json')]))"
    )
    # not from the clone: there `import backend` would find the checkout itself
    where, direct_url = json.loads(_run([python, "-c", probe], Path(env["HOME"]), env).stdout)
    assert Path(where).is_relative_to(clone / ".venv"), where
    assert '"editable": true' not in (direct_url or "")
    # the installed package carries the face detector's C source and builds it from there
    doctor = _run([clone / ".venv" / "bin" / "restora", "doctor"], Path(env["HOME"]), env)
    assert "face detector kernels: compiled for this CPU" in doctor.stdout, doctor.stdout
    assert "element-wise kernels (PReLU): compiled for this CPU" in doctor.stdout


def test_quick_start_and_listing(readme_setup) -> None:
    clone, env = readme_setup
    restora = clone / ".venv" / "bin" / "restora"
    # the README's quick start, word for word
    _run([restora, "upscale", "docs/sample.png", "-o", "sample-x4.png"], clone, env)
    with (
        Image.open(clone / "docs" / "sample.png") as src,
        Image.open(clone / "sample-x4.png") as up,
    ):
        assert up.size == (src.width * 4, src.height * 4)
    assert "upscale" in _run([restora, "--help"], clone, env).stdout
    listing = _run([restora, "models", "list"], clone, env).stdout
    assert "realesrgan-x4plus " in listing and "unusable" not in listing


def test_plugin_commands(readme_setup, tmp_path: Path) -> None:
    clone, env = readme_setup
    restora = clone / ".venv" / "bin" / "restora"
    home = Path(env["HOME"])
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    # run outside the clone: the installed Restora must carry what the commands need
    _run([restora, "plugin", "krita", "build", "--out", tmp_path / "dist"], elsewhere, env)
    names = zipfile.ZipFile(tmp_path / "dist" / "restora-krita.zip").namelist()
    for name in ("restora.desktop", "restora/__init__.py", "restora/shared/protocol.py"):
        assert name in names
    assert "restora/krita/extension.py" in names and "restora/common/client.py" in names

    _run([restora, "plugin", "krita", "install"], elsewhere, env)
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    assert (pykrita / "restora.desktop").is_file()
    assert (pykrita / "restora" / "krita" / "extension.py").is_file()
    assert (pykrita / "restora" / "Manual.html").is_file()
    assert "enable_restora=true" in (home / ".config" / "kritarc").read_text()

    _run([restora, "plugin", "gimp", "install"], elsewhere, env)
    gimp = home / ".config" / "GIMP" / "3.0" / "plug-ins" / "restora"
    assert os.access(gimp / "restora.py", os.X_OK)
    assert (gimp / "restora_lib" / "shared" / "protocol.py").is_file()
    assert (gimp / "restora_lib" / "gimp" / "plugin.py").is_file()
