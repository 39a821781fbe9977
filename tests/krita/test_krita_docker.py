"""The docker, the menu and the controller outside Krita, under Qt 5 (the system Python's
PyQt5, as Krita 5 embeds it) and, when a Python with PyQt6 is named by RESTORA_PYQT6_PYTHON,
under Qt 6 as in Krita 6: the adapter must need no rewrite for Krita 6."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from installer import krita_plugin
from tests import server_fixtures as fx
from tests.plugin_fixtures import clean_environment

server, tiny_models = fx.server, fx.tiny_models

CHECK = Path(__file__).with_name("docker_check.py")


def pythons() -> list:
    return [pytest.param("/usr/bin/python3", id="qt5"),
            pytest.param(os.environ.get("RESTORA_PYQT6_PYTHON", ""), id="qt6")]


@pytest.mark.parametrize("python", pythons())
def test_docker_builds_its_form_from_the_backend_and_saves_options(
        python: str, server: fx.LiveServer, tmp_path: Path) -> None:
    if not python:
        pytest.fail("RESTORA_PYQT6_PYTHON must name a Python with PyQt6 (Krita 6's Qt); "
                    "tests/run.sh makes one and sets it", pytrace=False)
    if not Path(python).exists():
        pytest.fail(f"{python} is missing: install Krita's Python with tests/editors/krita.sh",
                    pytrace=False)
    tree = krita_plugin.build_tree(tmp_path / "plugin")
    env = {**clean_environment(), "QT_QPA_PLATFORM": "offscreen",
           "XDG_RUNTIME_DIR": str(tmp_path)}
    done = subprocess.run([python, str(CHECK), str(tree), server.url], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["qt6"] == (r["binding"] == "PyQt6")
    assert r["docker_id"] == "restora_docker" and r["connected"]
    assert {"restora_upscale_image", "restora_restore_selection", "restora_menu",
            "restora_task_upscale", "restora_task_test_split"} <= set(r["actions"])
    # one entry per task the backend offers, in its order, with its titles; face-restore and
    # denoise have no model here: offered, to say what to get
    assert "restora_task_denoise" in r["actions"]
    offered = fx.offered_titles(server.url)
    assert offered[:3] == ["Upscale", "Restore faces", "Denoise"] and "Split (test)" in offered
    assert r["menu"] == [*fx.grouped_titles(server.url), "Restore selection", "Whole image",
                         "Cancel Restora job"]  # by group: make bigger, restore, enhance
    # the docker groups them: make bigger, restore (keeps the original), enhance (redraws)
    groups = fx.offered_groups(server.url)
    assert r["tasks"] == [title for _, titles in groups for title in titles]
    assert r["separators"] == len(groups) - 1
    assert r["cached_tasks"][:3] == ["upscale", "face-restore", "denoise"]  # for the next start
    # friendly names that never contradict the scale; "Recommended" is the backend's default
    assert r["models"] == ["Recommended: tiny-x2", "tiny-x2", "tiny-x4"]
    assert not r["split_model_shown"]
    # the form is the spec's: ranges, steps, units, none labels, choices, help
    form = r["upscale_form"]
    assert set(form) == {"Scale", "Width", "Tile size", "Tile overlap", "Transparency"}
    scale = form["Scale"]
    assert scale["type"] == "QDoubleSpinBox" and scale["maximum"] == 16.0
    assert scale["step"] == 0.5 and scale["suffix"] == " x"
    assert scale["special"] == "the model's own"  # what null means, at one step below 0.05
    assert abs(scale["minimum"] - (0.05 - 0.5)) < 1e-9
    tile = form["Tile size"]
    assert (tile["minimum"], tile["maximum"], tile["step"]) == (-32, 8192, 32)
    assert tile["special"] == "automatic (from free memory)" and tile["suffix"] == " px"
    assert form["Tile overlap"]["special"] == "" and form["Tile overlap"]["minimum"] == 0
    assert form["Transparency"]["items"] == ["through the model", "resized only"]
    assert "tiles" in tile["tooltip"]
    assert r["advanced_folded"]  # width, tile, overlap and alpha are advanced
    facts = r["layout"]
    assert facts["status"] == "Ready on cpu" or facts["status"].startswith("Ready on ")
    assert facts["status_detail"].startswith("Restora ") and "models installed" in facts[
        "status_detail"]
    assert not facts["run_in_scroll"] and not facts["progress_in_scroll"]
    assert not facts["cancel_in_scroll"]
    assert facts["options_in_scroll"] and facts["task_in_scroll"]
    assert facts["address_fields"] == []  # the docker has none: the settings dialog has them
    assert facts["settings_url"].startswith("http://127.0.0.1:")
    assert facts["run_text"] == "Run on the whole image"  # upscale takes the whole image
    assert facts["task_help"] == fx.task_help(server.url, "upscale")  # the spec's own words
    assert r["stored_overlap"] == 24  # an edited option is saved in Krita's settings
    switched = r["switched"]
    assert set(switched["upscale"]) == {"scale", "width", "tile", "overlap", "alpha"}
    assert switched["upscale"]["overlap"] == 24
    assert switched["test-split"] == {"gain": 1.0, "hold": 0.0}  # its own form only
    # the edit's reference images: right after the instruction, the other paint layers top
    # to bottom (one in a group), a choice saved at once, the lists following the layers
    refs = r["references"]
    first, second = "Reference image 1 (Picture 2)", "Reference image 2 (Picture 3)"
    assert refs["rows"][:3] == ["Instruction", first, second]
    assert refs["listed"] == ["(none)", "Scarf", "Hat"] and "Picture 2" in refs["tooltip"]
    assert refs["stored"] == {"edit": {"reference_1": "Hat"}}
    assert refs["new_layer_listed"]
    assert refs["after_delete"] == ["(none)", "Sky", "Scarf", "Hat (not in this image)"]
    assert refs["still_chosen"] == "Hat (not in this image)"
    assert refs["active_changed"] == ["(none)", "Sky", "Background"]


@pytest.fixture
def download_backend(tmp_path_factory: pytest.TempPathFactory):
    """A backend with no upscale model, fresh for each binding (each downloads one)."""
    from tests.model_mirror import download_server
    from tests.service.test_server_downloads import catalog_models

    with download_server(tmp_path_factory, catalog_models) as server:
        yield server


@pytest.mark.parametrize("python", pythons())
def test_a_missing_model_is_a_download_button(python: str, download_backend,
                                              tmp_path: Path) -> None:
    if not python or not Path(python).exists():
        pytest.fail(f"no Python with Qt for Krita at {python!r} (tests/run.sh sets one up)",
                    pytrace=False)
    tree = krita_plugin.build_tree(tmp_path / "plugin")
    env = {**clean_environment(), "QT_QPA_PLATFORM": "offscreen",
           "XDG_RUNTIME_DIR": str(tmp_path)}
    done = subprocess.run([python, str(CHECK.with_name("docker_download_check.py")), str(tree),
                           download_backend.live.url], env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    # before: plain words, the recommended model with its size and licence, no dead Run
    assert r["missing"].startswith("No model for Upscale is installed yet.")
    assert "Tiny Photo" in r["missing"] and "MIT" in r["missing"] and " kB" in r["missing"]
    assert r["button_shown"] and r["button"] == "Download..."
    assert not r["run_enabled_before"] and not r["model_shown_before"]
    # the download, with its progress bar, then the model is in the list and Run works
    assert r["started"] and r["progress_shown_while_running"]
    assert r["download_status"] == "finished"
    assert any(m.startswith("Tiny Photo") and "(x2)" in m for m in r["models_after"])
    assert r["run_enabled_after"] and r["missing_after"] == ""
    # presets from the spec; Fast picks the model with the "fast" trait
    assert r["presets"][0] == "Choose a preset..." and "Fast" in r["presets"]
    fast = r["after_fast"]
    assert fast["model"] == "tiny-photo-x2" and fast["preset_list_back"]
    # a non-commercial licence is asked about; declining starts nothing
    assert len(r["questions"]) == 2 and "non-commercial" in r["questions"][0]
    assert r["declined_started"] is False and r["accepted_started"] is True
    assert r["accepted_status"] == "finished"
