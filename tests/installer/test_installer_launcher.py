"""Starting a local backend from the plug-ins (plugin/common/launcher.py): the installer's
record, a real `restora serve` started detached on a free loopback port until /v1/health
answers, the Krita docker's "Start backend" button (Qt 5 and Qt 6, outside Krita), and GIMP's
flow starting the backend by itself when a command runs (on the fake editor)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend import paths
from installer import krita_plugin
from plugin.common import launcher
from plugin.common.errors import BackendUnavailable
from plugin.common.launcher import BackendCommand, BackendNotInstalled, BackendStartFailed
from plugin.common.settings import Settings
from plugin.gimp.flow import autostart_available, run_action
from plugin.gimp.procedures import Action
from tests.plugin_fixtures import FakeEditor, checker, clean_environment
from tests.server_fixtures import free_port, make_tiny_model

REPO = Path(__file__).resolve().parents[2]
RESTORA = Path(sys.executable).with_name("restora")  # the venv's console script
FAKE_KRITA = REPO / "tests" / "krita" / "fake_krita"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("launcher-models")
    make_tiny_model(root / "upscale_models" / "tiny-x2.safetensors", 2, seed=1)
    return root


def write_record(config: Path, models: Path, home: Path, extra: list[str] | None = None) -> Path:
    """backend.json as the installer writes it, for a backend on the tiny model, on the CPU."""
    config.mkdir(parents=True, exist_ok=True)
    record = {
        "command": [str(RESTORA), "serve", "--device", "cpu", *(extra or [])],
        "env": {
            "RESTORA_HOME": str(home),
            "RESTORA_MODELS": str(models),
            "RESTORA_KEEPALIVE_SECONDS": "1",
        },
        "log": str(home / "logs" / "backend.log"),
    }
    path = config / launcher.BACKEND_FILE
    path.write_text(json.dumps(record))
    return path


def stop(pid: int) -> None:
    """End a backend started in its own session (the launcher's detachment), and wait."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def stopped_at_end() -> Iterator[list[int]]:
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            stop(pid)


# --- the record and the pure parts ---


def test_config_folders_are_the_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.delenv("RESTORA_HOME", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert launcher.config_dirs(None, "linux", Path.home())[0] == paths.config_dir()
    # inside Flatpak XDG_CONFIG_HOME is the sandbox's: the real home's folder comes next
    flatpak = {"XDG_CONFIG_HOME": str(home / ".var/app/org.kde.krita/config")}
    assert launcher.config_dirs(flatpak, "linux", home) == [
        home / ".var/app/org.kde.krita/config/restora",
        home / ".config/restora",
    ]
    assert launcher.config_dirs({"APPDATA": r"C:\Users\me\AppData\Roaming"}, "win32", home) == [
        Path(r"C:\Users\me\AppData\Roaming") / "restora"
    ]
    assert launcher.config_dirs({}, "darwin", home) == [
        home / "Library/Application Support/restora"
    ]
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "r"))
    assert launcher.config_dirs(None, "win32", home) == [paths.config_dir()]


def test_the_installers_record_is_read_and_a_broken_one_ignored(tmp_path: Path) -> None:
    env = {"RESTORA_HOME": str(tmp_path)}
    assert launcher.find_backend(env) is None
    path = write_record(tmp_path / "config", tmp_path / "m", tmp_path)
    found = launcher.find_backend(env)
    assert found is not None and found.argv[:2] == (str(RESTORA), "serve")
    assert found.env["RESTORA_MODELS"] == str(tmp_path / "m") and found.source == str(path)
    for broken in ("{not json", '{"command": []}', '{"command": "restora serve"}', "[1]"):
        path.write_text(broken)
        assert launcher.find_backend(env) is None
        with pytest.raises(BackendNotInstalled, match="backend record"):
            launcher.load_backend_file(path)


def test_address_environment_and_sandbox_rules() -> None:
    command = BackendCommand(("/v/bin/restora", "serve"))
    assert launcher.serve_argv(command, "http://127.0.0.1:9123") == [
        "/v/bin/restora",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "9123",
    ]
    assert launcher.is_local("http://localhost:1") and launcher.is_local("127.0.0.2:80")
    assert not launcher.is_local("http://192.168.1.5:8765")
    editor = {
        "PATH": "/usr/bin",
        "PYTHONHOME": "/opt/krita/usr",
        "PYTHONPATH": "/opt/krita/lib",
        "QT_PLUGIN_PATH": "/x",
        "LD_LIBRARY_PATH": "/opt/krita/usr/lib",
        "HOME": "/h",
    }
    assert launcher.child_environment(editor, {"RESTORA_HOME": "/r"}) == {
        "PATH": "/usr/bin",
        "LD_LIBRARY_PATH": "/opt/krita/usr/lib",
        "HOME": "/h",
        "RESTORA_HOME": "/r",
    }
    appimage = launcher.child_environment({**editor, "APPIMAGE": "/k.AppImage"}, {})
    assert "LD_LIBRARY_PATH" not in appimage  # the AppImage's own libraries stay with Krita
    assert launcher.in_sandbox({"FLATPAK_ID": "org.kde.krita"}) == "flatpak"
    assert launcher.in_sandbox({"SNAP": "/snap/krita/9"}) == "snap"
    assert launcher.sandboxed_argv(["r", "serve"], {"A": "1"}, "flatpak") == [
        "flatpak-spawn",
        "--host",
        "--env=A=1",
        "r",
        "serve",
    ]
    assert launcher.sandboxed_argv(["r"], {"A": "1"}, None) == ["r"]


# --- a real backend ---


def test_start_a_real_backend_then_find_it_running(tmp_path: Path, models: Path) -> None:
    home = tmp_path / "home"
    command = launcher.load_backend_file(write_record(tmp_path / "config", models, home))
    url = f"http://127.0.0.1:{free_port()}"
    with stopped_at_end() as pids:
        started = launcher.start_backend(url, command=command, timeout=90)
        assert started.process is not None
        pids.append(started.process.pid)
        assert started.started and started.health.ready and started.health.device == "cpu"
        assert os.getsid(started.process.pid) == started.process.pid  # its own session
        models_seen = httpx.get(f"{url}/v1/models", timeout=10).json()
        assert [m["name"] for m in models_seen] == ["tiny-x2"]
        again = launcher.start_backend(url, command=command)
        assert not again.started and again.health.instance == started.health.instance
        assert "serve --device cpu --host 127.0.0.1 --port" in Path(started.log).read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/v1/health", timeout=2)


def test_a_backend_that_stops_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    failing = BackendCommand(
        (sys.executable, "-c", "import sys; print('no GPU driver here'); sys.exit(3)"),
        log=str(tmp_path / "backend.log"),
    )
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BackendStartFailed) as info:
        launcher.start_backend(url, command=failing, timeout=30)
    assert "exit code 3" in info.value.message and "no GPU driver here" in info.value.message


def test_nothing_installed_or_a_remote_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path))
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BackendNotInstalled, match="not installed") as info:
        launcher.start_backend(url)
    assert "installer" in info.value.hint and "Start backend" in info.value.hint
    gone = BackendCommand((str(tmp_path / "deleted" / "restora"), "serve"))
    with pytest.raises(BackendNotInstalled, match="is gone"):
        launcher.start_backend(url, command=gone)
    with pytest.raises(BackendUnavailable, match="another computer"):
        launcher.start_backend("http://192.0.2.1:8765", command=gone)  # TEST-NET: no answer
    assert not autostart_available(url)


def test_gimp_starts_the_backend_when_a_command_runs(
    tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    restora_home = tmp_path / "restora"
    write_record(restora_home / "config", models, restora_home)
    monkeypatch.setenv("RESTORA_HOME", str(restora_home))
    url = f"http://127.0.0.1:{free_port()}"
    assert autostart_available(url)
    settings = Settings(backend_url=url, models={"upscale": "tiny-x2"})
    editor = FakeEditor(checker(width=24, height=16))
    stages: list[str] = []

    class Sink:
        def progress(self, fraction: float, stage: str) -> None:
            stages.append(stage)

    with stopped_at_end() as pids:
        try:
            name = run_action(Action.TASK, editor, settings, "upscale", Sink())
        finally:
            pids += [p.pid for p in launcher._spawned]
        assert name.startswith("Upscale x2 - tiny-x2")
        assert editor.canvas().width == 48
        assert stages[:2] == [
            "connecting to the backend",
            "starting the backend (the first start can take a minute)",
        ]
        monkeypatch.setenv("RESTORA_AUTOSTART", "0")
        assert not autostart_available(url)


# --- the Krita docker's button, outside Krita ---

_DOCKER_CHECK = r"""
import json, os, sys, time
tree, fake, url, pid_file = sys.argv[1:5]
sys.path[:0] = [tree, fake]
from restora.krita.qt import QtCore, QtWidgets
app = QtWidgets.QApplication([])
import krita
krita.Krita.instance().writeSetting("Restora", "backend_url", json.dumps(url))
from restora.common import launcher
from restora.krita import actions
from restora.krita.docker import RestoraDocker

controller = actions.controller()
docker = RestoraDocker()

def pump(until, timeout):
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)
    app.processEvents()

def seen():
    return {"shown": not docker.start_button.isHidden(), "enabled": docker.start_button.isEnabled(),
            "text": docker.state.text(), "state": controller.connection.state.value}

controller.start()
pump(lambda: controller.can_start_backend, 30)
before = seen()
docker.start_button.click()
app.processEvents()
starting = seen()
pump(lambda: launcher._spawned, 10)
if launcher._spawned:
    with open(pid_file, "w") as f:
        f.write(str(launcher._spawned[-1].pid))
pump(lambda: controller.connection.connected, 120)
after = seen()
error = controller.launcher.error.text if controller.launcher.error else None
print(json.dumps({"before": before, "starting": starting, "after": after, "error": error}))
"""


def editor_pythons() -> list:
    found = [pytest.param("/usr/bin/python3", id="qt5")]
    qt6 = os.environ.get("RESTORA_PYQT6_PYTHON") or str(
        Path.home() / ".cache" / "restora" / "pyqt6-venv-1" / "bin" / "python"
    )
    if Path(qt6).is_file():
        found.append(pytest.param(qt6, id="qt6"))
    return found


@pytest.mark.parametrize("python", editor_pythons())
def test_krita_docker_starts_the_backend(python: str, tmp_path: Path, models: Path) -> None:
    tree = krita_plugin.build_tree(tmp_path / "plugin")
    restora_home = tmp_path / "restora"
    write_record(restora_home / "config", models, restora_home)
    url = f"http://127.0.0.1:{free_port()}"
    pid_file = tmp_path / "backend.pid"
    env = {
        **clean_environment(),
        "QT_QPA_PLATFORM": "offscreen",
        "XDG_RUNTIME_DIR": str(tmp_path),
        "RESTORA_HOME": str(restora_home),
    }
    try:
        done = subprocess.run(
            [python, "-c", _DOCKER_CHECK, str(tree), str(FAKE_KRITA), url, str(pid_file)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        if pid_file.is_file():
            stop(int(pid_file.read_text()))
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["error"] is None
    assert r["before"] == {
        "shown": True,
        "enabled": True,
        "state": "disconnected",
        "text": "The backend is not running",
    }
    # while it starts the status line says so and the button is gone (a second click would
    # start nothing)
    assert not r["starting"]["shown"]
    assert r["starting"]["text"].startswith("Starting the backend")
    assert r["after"]["state"] == "connected" and not r["after"]["shown"]
    assert r["after"]["text"].startswith("Ready on ")
