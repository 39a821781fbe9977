"""Restora's GIMP dialogs in real GIMP 3 on a virtual X display (Xvfb on the host; the chroot
reaches its abstract socket because a chroot shares the host's network namespace).

The dialogs are built for the real procedures and driven as a person would; the tests check
what they show (backend state, models from the backend, the task's options, a hidden token)
and what they write into the procedure's config, which GIMP then remembers.
"""

from __future__ import annotations

import ctypes.util
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.gimp.harness import HERE, GimpHome, gimp_home_with_plugin, gimp_root
from tests.gimp.xkeys import answer
from tests.model_zoo import save_tiny
from tests.server_fixtures import ModelsSetup, free_port, live_server, test_settings

MODEL = "tiny-compact"


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    xvfb = shutil.which("Xvfb")
    if xvfb is None or ctypes.util.find_library("Xtst") is None:
        pytest.fail("Xvfb or libXtst is missing (apt-get install xvfb libxtst6; tests/run.sh "
                    "installs them): the dialogs need a display, and the test presses keys "
                    "through XTEST", pytrace=False)
    number = next(n for n in range(90, 200)
                  if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock")
                  .exists())
    server = subprocess.Popen([xvfb, f":{number}", "-screen", "0", "1024x768x24",
                               "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Xvfb did not start")
            time.sleep(0.05)
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)


@dataclass
class Session:
    home: GimpHome
    env: dict[str, str]
    display: str


@pytest.fixture(scope="module")
def session(display: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    root = tmp_path_factory.mktemp("gimp-dialog-models")
    save_tiny("compact", root)
    save_tiny("dncnn", root)  # Denoise available: GIMP registers restora-denoise
    setup = ModelsSetup(root, tmp_path_factory.mktemp("gimp-dialog-home"))
    with live_server(test_settings(setup)) as backend, \
            gimp_home_with_plugin(gimp_root()) as home:
        # RESTORA_URL: GIMP's first start asks this backend for its tasks (no cache yet)
        env = {"RESTORA_URL": backend.url, "RESTORA_E2E_URL": backend.url,
               "RESTORA_E2E_MODEL": MODEL,
               "RESTORA_E2E_DOWN_URL": f"http://127.0.0.1:{free_port()}"}
        yield Session(home, env, display)


@pytest.fixture(scope="module")
def results(session: Session) -> dict[str, Any]:
    found = session.home.batch(HERE / "gimp_dialog_batch.py", session.env, "dialog.json",
                               display=session.display)
    for name, value in found.items():
        if isinstance(value, dict):
            assert "crashed" not in value, f"{name}: {value['crashed']}"
    return found


@pytest.fixture(scope="module")
def interactive(session: Session) -> dict[str, Any]:
    """The procedures run INTERACTIVE; a person (key presses from the host) answers."""
    answered: dict[str, Any] = {}

    def person() -> None:
        try:
            answer(session.display, [
                ("Restora: Restore selection", 1.5, "Return"),  # OK, once it has connected
                ("Restora: Restore selection", 1.0, "Return"),  # OK, with nothing selected
                ("Restora", 0.5, "Return"),  # close the message box
            ])
            answered["done"] = True
        except (OSError, TimeoutError) as exc:
            answered["error"] = repr(exc)

    thread = threading.Thread(target=person, daemon=True)
    thread.start()
    found = session.home.batch(HERE / "gimp_interactive_batch.py", session.env,
                               "interactive.json", display=session.display, timeout=120)
    thread.join(10)
    found["answered"] = answered
    return found


def test_restore_dialog_lists_models_and_stores_choices(results: dict[str, Any]) -> None:
    seen = results["restore"]
    assert seen["status"].startswith("Connected: Restora")
    # the upscale task takes restoration models too (its purposes), so tiny-dncnn is listed
    assert seen["models"] == [f"Default ({MODEL})", MODEL, "tiny-dncnn"]
    assert seen["tasks"][:2] == ["Upscale", "Denoise"]  # the backend's tasks, in its order
    # the task's options from the backend, less those a selection restore never sends
    assert seen["form"] == ["tile", "overlap", "alpha"]
    assert seen["token_hidden"] and seen["feather_auto"]
    assert seen["ok"] is True
    assert seen["model"] == MODEL
    assert seen["options"] == '{"overlap": 16}'
    assert seen["feather"] == 6.5 and seen["padding"] == -1  # the toggle, not a label's -1


def test_upscale_dialog_form(results: dict[str, Any]) -> None:
    seen = results["upscale"]
    assert seen["form"] == ["scale", "width", "tile", "overlap", "alpha"]
    scale = seen["scale"]
    assert scale["widget"] == "SpinButton" and (scale["lower"], scale["upper"]) == (0.05, 16.0)
    assert scale["step"] == 0.5 and scale["default_toggle"] == ["the model's own", True]
    assert scale["label"] == "Scale" and "larger" in scale["tooltip"]
    tile = seen["tile"]
    assert (tile["lower"], tile["upper"], tile["step"], tile["digits"]) == (0.0, 8192.0, 32.0, 0)
    assert tile["default_toggle"] == ["automatic (from free memory)", True] and tile["advanced"]
    assert seen["alpha"] == ["through the model", "resized only"]
    assert seen["ok"] is False


def test_denoise_dialog_has_the_specs_ranges(results: dict[str, Any]) -> None:
    seen = results["denoise"]
    assert seen["title"] == "Restora: Denoise"
    assert seen["models"] == ["Default (tiny-dncnn)", "tiny-dncnn"]
    strength = seen["strength"]
    assert strength["widget"] == "Scale"  # widget "slider" in the spec
    assert (strength["lower"], strength["upper"], strength["step"]) == (0.0, 1.0, 0.05)
    assert strength["digits"] == 2 and "default_toggle" not in strength
    assert seen["noise_level"]["shown"] and seen["noise_level"]["upper"] == 255.0
    assert not seen["jpeg_quality"]["shown"]  # FBCNN's, hidden for a DnCNN model
    assert seen["tile"]["advanced"]
    assert seen["ok"] is True and seen["options"] == '{"strength": 0.25}'


def test_dialog_with_the_backend_down_says_how_to_start_it(results: dict[str, Any]) -> None:
    seen = results["backend_down"]
    assert "not running" in seen["status"] and "restora serve" in seen["status"]
    assert seen["models"] == ["Default"]
    # the form from the cached task list while no backend answers
    assert seen["form_before_backend"] == ["scale", "width", "tile", "overlap", "alpha"]


def test_error_box_in_plain_words(results: dict[str, Any]) -> None:
    seen = results["error_box"]
    assert seen["shown"] is True
    assert seen["title"] == "Restora"
    assert "backend is not running" in seen["text"]
    assert "restora serve" in seen["secondary"]


def test_interactive_run_from_the_dialog(interactive: dict[str, Any], session: Session) -> None:
    assert interactive["answered"] == {"done": True}, interactive["_log"][-3000:]
    assert interactive["ok"]["status"] == "success"
    assert interactive["ok"]["layers"] == [f"Upscale selection - {MODEL}", "Source"]
    # what every procedure shares, and GIMP's own memory of this procedure's last values
    assert json.loads(interactive["settings_file"]["backend_url"]) == session.env[
        "RESTORA_E2E_URL"]
    last = (session.home.on_host / ".config" / "GIMP" / "3.0" / "plug-in-settings"
            / "GimpProcedureConfigRun-restora-restore-selection.last").read_text()
    assert f'(model "{MODEL}")' in last


def test_interactive_error_shows_a_message_box(interactive: dict[str, Any]) -> None:
    # the person read the message box; CANCEL keeps GIMP from showing it again
    assert interactive["error"] == {"status": "cancel", "layers": ["Source"]}
