"""The Krita plug-in in the full Krita application (on a virtual X display): loaded by Krita's
plug-in manager, its Tools > Restora menu and docker, actions triggered as a click would, and
what Krita's Undo does with the results.

A test-only plug-in (gui_check/) does the clicking inside Krita and writes JSON. Needs Krita
(tests/editors/krita.sh) and Xvfb (tests/krita/xvfb.sh, run by this test when missing);
Krita missing is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from installer import krita_plugin
from tests import server_fixtures as fx
from tests.plugin_fixtures import clean_environment
from tests.server_fixtures import free_port
from tests.x_display import virtual_display

server, tiny_models = fx.server, fx.tiny_models

HERE = Path(__file__).resolve().parent
W, H = 128, 96
SEL = [40, 30, 36, 24]
#: a common laptop screen: the docker must fit it beside Krita's own dockers
SCREEN = (1366, 768)


@pytest.fixture(scope="module")
def gui(server: fx.LiveServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("krita") is None:
        pytest.fail("Krita is not installed. Install it with `tests/editors/krita.sh` (as "
                    "root), then run the tests again.", pytrace=False)
    xvfb = subprocess.run([str(HERE / "xvfb.sh")], capture_output=True, text=True)
    if xvfb.returncode != 0:
        pytest.fail(f"Xvfb is missing and could not be installed: {xvfb.stderr[-1000:]}",
                    pytrace=False)
    home = tmp_path_factory.mktemp("krita-gui-home")
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    kritarc = home / ".config" / "kritarc"
    krita_plugin.install(pykrita, kritarc)
    shutil.copytree(HERE / "gui_check" / "restora_gui_check", pykrita / "restora_gui_check")
    shutil.copy(HERE / "gui_check" / "restora_gui_check.desktop", pykrita)
    krita_plugin.enable_in_kritarc(kritarc, "restora_gui_check")
    out = home / "gui-check.json"
    config = home / "gui-check-config.json"
    shots = home / "screenshots"
    shots.mkdir()
    config.write_text(json.dumps({"url": server.url, "out": str(out), "shots": str(shots),
                                  "dead_url": f"http://127.0.0.1:{free_port()}"}))
    runtime = home / ".runtime"
    runtime.mkdir(mode=0o700)
    env = {**clean_environment(), "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime),
           "RESTORA_GUI_CHECK": str(config), "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.monotonic()
    proc, seen = run_krita(env)
    seconds = time.monotonic() - t0
    shown = {k: v for k, v in env.items() if k.startswith(("QT", "DISPLAY", "XDG", "KRITA"))}
    assert out.exists(), (f"Krita ended (rc {proc.returncode}) without the check's results:\n"
                          f"{proc.stderr[-5000:]}\nenv: {shown}\n{seen}")
    results = json.loads(out.read_text())
    assert "exception" not in results, results["exception"]
    results["_seconds"] = seconds

    results["_shots"] = str(shots)
    keep = os.environ.get("RESTORA_SCREENSHOTS")  # where `make screenshots` wants them
    if keep:
        for png in shots.glob("*.png"):
            shutil.copy(png, Path(keep) / png.name)
    print(f"\nKrita GUI check took {seconds:.1f} s")
    return results


def run_krita(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], str]:
    """Krita on a fresh virtual display; once more on another one if Krita could not reach
    the first (a CI run once saw Xvfb report a display Krita then could not connect to).
    Returns Krita's run and what the display's server said."""
    proc, seen = krita_on_a_new_display(env)
    if "could not connect to display" in proc.stderr:
        print(f"\nKrita could not connect to {env['DISPLAY']}; trying a new display.\n{seen}")
        proc, seen = krita_on_a_new_display(env)
    return proc, seen


def krita_on_a_new_display(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], str]:
    with virtual_display(SCREEN) as display:
        env["DISPLAY"] = display.name
        proc = subprocess.run(["krita", "--nosplash"], env=env, capture_output=True, text=True,
                              timeout=400)
        return proc, display.describe()


def test_menu_actions_and_docker(gui: dict[str, Any], server: fx.LiveServer) -> None:
    assert gui["menu"] is not None, "no Tools > Restora menu"
    visible = [text for text, shown in gui["menu"] if shown]
    # one entry per task the backend offers, in its order (extra_tasks.py's test tasks too);
    # Restore faces has no model on this backend: offered, to say what to get
    offered = fx.offered_titles(server.url)
    assert offered[:3] == ["Upscale", "Restore faces", "Denoise"] and "Split (test)" in offered
    assert visible == [*fx.grouped_titles(server.url), "Restore selection", "Whole image",
                       "Cancel Restora job"]
    assert all(gui["actions"].values())  # registered with Krita: shortcuts can be assigned
    assert gui["connected"] and gui["docker"]
    assert any(t.startswith("Ready on ") for t in gui["docker_labels_connected"])
    assert gui["stored_url"].strip('"').startswith("http://127.0.0.1:")


def test_restore_selection_from_the_menu_undoes_in_one_step(gui: dict[str, Any]) -> None:
    r = gui["restore"]
    assert r["ended"] and r["status"] == "finished", r["error"]
    assert r["layers"] == ["Background", "Upscale selection - tiny-x2"]
    assert r["size"] == [W, H]
    assert r["docker_progress"] == [1000, 1000]
    assert any("Added 'Upscale selection - tiny-x2'" in t for t in r["docker_labels"])
    undo = gui["restore_undo"]
    assert undo["layers"] == ["Background"] and undo["source_unchanged"]


def test_upscale_from_the_menu_undoes_in_two_steps(gui: dict[str, Any]) -> None:
    r = gui["upscale"]
    assert r["ended"] and r["status"] == "finished", r["error"]
    assert r["layers"] == ["Background", "Upscale x2 - tiny-x2"] and r["size"] == [2 * W, 2 * H]
    # Krita 5.1's scripting API has no undo macro: the layer, then the scaling
    assert gui["upscale_undo1"] == {"layers": ["Background"], "size": [2 * W, 2 * H]}
    assert gui["upscale_undo2"] == {"layers": ["Background"], "size": [W, H]}


def test_upscale_into_a_new_document_stays_open(gui: dict[str, Any]) -> None:
    r = gui["new_document"]
    assert r["status"] == "finished", r["error"]
    assert r["documents_added"] == 1 and r["views"] == 2
    assert r["size"] == [W, H]  # the original document is unchanged


def test_the_docker_explains_a_backend_that_is_down(gui: dict[str, Any]) -> None:
    r = gui["down"]
    assert r["status"] == "failed" and "Start backend" in r["error"]
    assert any("Start backend" in t for t in r["docker_labels"])
    assert r["layers"] == ["Background"]


def test_the_docker_fits_a_laptop_screen(gui: dict[str, Any]) -> None:
    """At 1366x768 beside Krita's default dockers: the status line, Run, the progress,
    Cancel and the compare controls are on the screen and not cut; the form scrolls rather
    than growing the window or squeezing its fields."""
    for key in ("layout_connected", "layout_result"):
        r = gui[key]
        assert r["screen"][0] <= SCREEN[0] and r["screen"][1] <= SCREEN[1]
        assert r["hidden"] == [] and r["off_screen"] == [] and r["clipped"] == [], r
        assert r["scroll_fits_width"], r
        _x, _y, width, height = r["window"]
        assert height <= SCREEN[1] and width <= SCREEN[0], r  # the window did not grow
    dialog = gui["settings_dialog"]
    assert dialog["off_screen"] == [] and dialog["clipped"] == [] and dialog["hidden"] == []
    shots = Path(gui["_shots"])
    for name in ("krita-docker.png", "krita-settings.png"):
        assert (shots / name).stat().st_size > 10_000, name  # a real picture, not a blank


def test_a_long_result_note_wraps_in_the_docker(gui: dict[str, Any]) -> None:
    """The speed note's "Faster: <model> ... choose it in the model list." is read to its end:
    at the docked width of a laptop screen the stage line wraps, is given the height all its
    lines need, and the controls below it still fit."""
    r = gui["long_note"]
    assert "choose it in the model list." in r["text"]
    assert r["needed"] <= r["height"], r  # no line is cut off at the bottom
    assert r["height"] >= 2 * r["line"], r  # wider than the docker: wrapped, not cut
    layout = r["layout"]
    assert layout["hidden"] == [] and layout["off_screen"] == [] and layout["clipped"] == []
    assert (Path(gui["_shots"]) / "krita-docker-note.png").stat().st_size > 10_000


def test_the_reference_lists_follow_the_active_documents_layers(gui: dict[str, Any]) -> None:
    """Edit by instruction in the docker of the real Krita: the first reference list offers
    the active document's other paint layers and lists a new one at the next tick, and the
    docker with the edit's form (its reference lists too) still fits the laptop screen."""
    r = gui["references"]
    assert r["active_document"]
    assert r["listed"] == ["(none)", "Hat"]  # the active layer (Background) is not offered
    assert r["new_layer"] and r["after"] == ["(none)", "Scarf", "Hat"]
    layout = r["layout"]
    assert layout["hidden"] == [] and layout["off_screen"] == [] and layout["clipped"] == []
    assert layout["scroll_fits_width"], layout


def test_compare_history_and_zoom(gui: dict[str, Any]) -> None:
    c = gui["compare"]
    assert c["before_hides"] and c["after_shows"]
    assert c["opacity"] == round(0.4 * 255) and c["label"] == "40%"
    assert gui["history"] == ["Upscale selection - tiny-x2"]
    before, after = gui["upscale"]["zoom"]
    assert abs(after - before / 2) < 0.02 * before  # x2 upscale: half the zoom, same view
