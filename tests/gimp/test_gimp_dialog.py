"""Restora's GIMP dialogs in real GIMP 3 on a virtual X display (Xvfb on the host; the chroot
reaches its abstract socket because a chroot shares the host's network namespace).

The dialogs are built for the real procedures and driven as a person would; the tests check
what they show, read back from the live widgets (backend state in words, models from the
backend, the task's options with their ranges, steps and units, no address or token in a task
dialog), what they write into the procedure's config, which GIMP then remembers, and that
each dialog fits a 1366 x 768 screen with nothing cut off. Screenshots land in a temporary
folder; to refresh the ones in docs/images, run (as root, like every GIMP test):

    RESTORA_GIMP_SCREENSHOTS=docs/images .venv/bin/python -m pytest \
        tests/gimp/test_gimp_dialog.py -k screenshots
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gimp.harness import (
    HERE,
    GimpHome,
    gimp_home_with_plugin,
    gimp_root,
    virtual_display,
)
from tests.gimp.xkeys import answer
from tests.model_mirror import download_server
from tests.model_zoo import save_tiny
from tests.server_fixtures import ModelsSetup, free_port, live_server, test_settings
from tests.service.test_server_downloads import catalog_models

MODEL = "tiny-compact"
SCREEN = (1366, 768)
#: the screenshots docs/images keeps
DOC_SCREENSHOTS = ("gimp-upscale-dialog.png", "gimp-settings.png")


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    with virtual_display(SCREEN) as name:
        yield name


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
    # two face models of two architectures: CodeFormer's fidelity shows for one of them
    save_tiny("restoreformer", root, file_name="random-restoreformer")
    save_tiny("codeformer", root, file_name="random-codeformer")
    setup = ModelsSetup(root, tmp_path_factory.mktemp("gimp-dialog-home"))
    with live_server(test_settings(setup)) as backend, \
            download_server(tmp_path_factory, catalog_models) as downloads, \
            gimp_home_with_plugin(gimp_root()) as home:
        # a backend "installed" on this computer that stops at once: Start backend shows
        launcher = home.on_host / "launcher"
        (launcher / "config").mkdir(parents=True)
        (launcher / "config" / "backend.json").write_text(json.dumps({
            "command": ["/bin/sh", "-c", "echo no device here; exit 3"],
            "log": f"{home.inside}/launcher/backend.log"}))
        # RESTORA_URL: GIMP's first start asks this backend for its tasks (no cache yet); it
        # answers at once after its first look at the models
        httpx.get(f"{backend.url}/v1/tasks", timeout=60).raise_for_status()
        env = {"RESTORA_URL": backend.url, "RESTORA_E2E_URL": backend.url,
               "RESTORA_E2E_MODEL": MODEL,
               "RESTORA_E2E_DOWN_URL": f"http://127.0.0.1:{free_port()}",
               "RESTORA_E2E_LAUNCHER_HOME": f"{home.inside}/launcher",
               "RESTORA_E2E_DOWNLOAD_URL": downloads.live.url}
        yield Session(home, env, display)


@pytest.fixture(scope="module")
def results(session: Session, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    found = session.home.batch(HERE / "gimp_dialog_batch.py", session.env, "dialog.json",
                               display=session.display)
    shots = tmp_path_factory.mktemp("gimp-screenshots")
    for picture in session.home.on_host.glob("*.png"):
        shutil.copy(picture, shots / picture.name)
    found["_screenshots"] = str(shots)
    return found


def case(results: dict[str, Any], name: str) -> dict[str, Any]:
    found = results.get(name)
    assert found is not None, f"the batch did not run case {name}:\n{results['_log'][-4000:]}"
    assert "crashed" not in found, found["crashed"]
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
                ("Restora settings", 1.5, "Return"),  # Settings, OK as it is
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


def no_connection_fields(seen: dict[str, Any]) -> None:
    """A task dialog has no text field at all: the address and token live in Settings."""
    assert seen["entries"] == [], seen["entries"]


def test_restore_dialog_lists_models_and_stores_choices(results: dict[str, Any]) -> None:
    seen = case(results, "restore")
    assert seen["status"].startswith("Connected to Restora on ")
    # the upscale task takes restoration models too (its purposes), so tiny-dncnn is listed
    # the backend's choice first, then every model by its friendly name (and scale)
    assert seen["model_ids"] == ["", MODEL, "tiny-dncnn"]
    assert seen["models"][0].startswith(f"Recommended: {MODEL}")
    assert seen["models"][1].startswith(MODEL)
    # the backend's tasks in its order; one that only lacks a model is offered too
    assert seen["tasks"][:4] == ["Upscale", "Restore faces", "Denoise",
                                 "Find scratches and dust"]
    assert "Colorize" in seen["tasks"]
    # the task's options from the backend, less those a selection restore never sends
    assert seen["form"] == ["tile", "overlap", "alpha"]
    assert seen["feather_auto"] and seen["feather_text"] == ""  # no magic number shown
    no_connection_fields(seen)
    assert seen["ok"] is True
    assert seen["model"] == MODEL
    assert seen["options"] == '{"overlap": 16}'
    assert seen["feather"] == 6.5 and seen["padding"] == -1  # the toggle, not a label's -1
    assert (seen["backend-url"], seen["token"]) == ("", "")


def test_upscale_dialog_form_has_the_specs_ranges_steps_and_units(
        results: dict[str, Any]) -> None:
    seen = case(results, "upscale")
    assert seen["title"] == "Restora: Upscale"
    assert seen["form"] == ["scale", "width", "tile", "overlap", "alpha"]
    scale = seen["scale"]
    assert scale["widget"] == "SpinButton" and (scale["lower"], scale["upper"]) == (0.05, 16.0)
    assert scale["step"] == 0.5 and scale["digits"] == 2 and scale["unit"] == "x"
    assert scale["default_toggle"] == ["the model's own", True]
    assert scale["text"] == ""  # while the model's own scale applies, no number stands there
    assert scale["label"] == "Scale" and "larger" in scale["tooltip"] and not scale["advanced"]
    tile = seen["tile"]
    assert (tile["lower"], tile["upper"], tile["step"], tile["digits"]) == (0.0, 8192.0, 32.0, 0)
    assert tile["unit"] == "px" and tile["advanced"]
    assert tile["default_toggle"] == ["automatic (from free memory)", True]
    overlap = seen["overlap"]
    assert (overlap["lower"], overlap["upper"], overlap["step"]) == (0.0, 256.0, 8.0)
    assert overlap["text"] == "32" and "default_toggle" not in overlap
    assert seen["width"]["default_toggle"] == ["from the scale", True]
    assert seen["alpha"]["widget"] == "ComboBoxText"
    assert seen["alpha"]["items"] == ["through the model", "resized only"]
    assert seen["new_image_shown"]  # upscaling resizes: a new image is an option
    assert seen["edge_shown"]  # the selection's edge, under Advanced
    no_connection_fields(seen)
    assert not any("address" in t.lower() or "token" in t.lower() for t in seen["texts"])
    assert seen["ok"] is False


def test_denoise_dialog_uses_gimps_slider(results: dict[str, Any]) -> None:
    seen = case(results, "denoise")
    assert seen["title"] == "Restora: Denoise"
    assert seen["models"] == ["Recommended: tiny-dncnn", "tiny-dncnn"]
    strength = seen["strength"]
    assert strength["widget"] == "SpinScale"  # widget "slider" in the spec: GIMP's own
    assert (strength["lower"], strength["upper"], strength["step"]) == (0.0, 1.0, 0.05)
    assert strength["digits"] == 2 and "default_toggle" not in strength
    assert seen["noise_level"]["shown"] and seen["noise_level"]["upper"] == 255.0
    assert seen["noise_level"]["unit"] == "levels"
    assert not seen["jpeg_quality"]["shown"]  # FBCNN's, hidden for a DnCNN model
    assert seen["tile"]["advanced"]
    assert not seen["new_image_shown"]  # denoising keeps the size
    assert seen["ok"] is True and seen["options"] == '{"strength": 0.25}'


def test_faces_dialog_upscale_model_is_a_dropdown_and_fidelity_is_codeformers(
        results: dict[str, Any]) -> None:
    seen = case(results, "faces")
    assert seen["models"][1:] == ["random-codeformer", "random-restoreformer"]
    upscale_model = seen["upscale_model"]
    assert upscale_model["widget"] == "ComboBoxText" and upscale_model["advanced"]
    # the option's purposes (SR, Restoration): the upscalers, not the face models
    assert upscale_model["items"] == ["none (faces only)", MODEL, "tiny-dncnn"]
    assert seen["fidelity_restoreformer"] is False  # CodeFormer's weight: not for others
    assert seen["fidelity_codeformer"] is True
    assert seen["strength"]["widget"] == "SpinScale"
    assert seen["ok"] is True and seen["model"] == "random-codeformer"
    assert json.loads(seen["options"]) == {"upscale_model": MODEL}


def test_edit_dialog_picks_reference_images_among_the_layers(results: dict[str, Any]) -> None:
    """One dropdown per reference image right after the instruction: "(none)" and the image's
    other layers; a remembered layer the image lacks is kept, marked; OK stores the choice in
    the `references` argument, which scripts set directly; the dialog fits the screen."""
    seen = case(results, "edit_references")
    first, second = "Reference image 1 (Picture 2)", "Reference image 2 (Picture 3)"
    assert seen["rows"][:3] == ["Instruction", first, second]
    assert seen["items"] == {"reference_1": ["(none)", "Hat", "Scarf"],
                             "reference_2": ["(none)", "Hat", "Scarf", "Gone (not in this image)"]}
    assert seen["chosen"] == {"reference_1": "", "reference_2": "Gone"}
    assert "Picture 2" in seen["tooltip"]
    assert seen["ok"] is True
    assert json.loads(seen["references"]) == {"reference_1": "Hat", "reference_2": "Gone"}
    assert seen["layout"]["problems"] == [], seen["layout"]["problems"]


def test_task_that_lacks_a_model_says_so(results: dict[str, Any]) -> None:
    seen = case(results, "needs_model")
    assert seen["missing_shown"]
    assert "Colorize needs a model, and none is installed yet." in seen["missing"]
    assert not seen["model_row_shown"] and not seen["ok_sensitive"]


def test_backend_down_in_plain_words(results: dict[str, Any]) -> None:
    seen = case(results, "backend_down")
    assert seen["status"].startswith("Restora's backend is not running")
    assert "restora serve" not in seen["status"] and "terminal" not in seen["status"]
    assert "Filters > Restora > Settings" in seen["status"]
    assert not seen["start_shown"]  # no backend installed on this computer
    assert seen["models"] == ["Recommended"]
    # the form from the cached task list while no backend answers
    assert seen["form_before_backend"] == ["scale", "width", "tile", "overlap", "alpha"]


def test_start_backend_when_one_is_installed(results: dict[str, Any]) -> None:
    seen = case(results, "start_backend")
    assert seen["status"] == "Restora's backend is not running."
    assert seen["start_shown"]
    assert seen["after"] == "Restora's backend could not start."


def test_settings_dialog_edits_the_address_and_token(results: dict[str, Any]) -> None:
    seen = case(results, "settings")
    assert seen["title"] == "Restora settings"
    assert seen["status"].startswith("Connected to Restora on ")
    assert seen["check_shown"] and seen["token_hidden"] and seen["token"] == "secret"
    assert seen["status_down"].startswith("Restora's backend is not running")
    assert "not an address" in seen["error"] and seen["error_shown"]
    assert seen["saved"] == ["http://127.0.0.1:9999", "new-token"]


def test_settings_procedure_stores_for_every_procedure(results: dict[str, Any],
                                                       session: Session) -> None:
    seen = case(results, "settings_procedure")
    assert seen["status"] == "success" and seen["url"] == session.env["RESTORA_E2E_URL"]
    assert seen["line"].startswith("Connected to Restora on ")
    assert seen["menu_label"] == "Se_ttings..." and seen["image_types"] is None
    stored = {k: json.loads(v) for k, v in seen["file"].items()}
    assert stored == {"backend_url": session.env["RESTORA_E2E_URL"], "token": "from-a-script"}
    assert seen["file_after"] == seen["file"]  # an empty token keeps the stored one


def test_dialogs_fit_the_screen_and_nothing_is_cut_off(results: dict[str, Any]) -> None:
    for name, key in (("upscale", "layout"), ("upscale", "layout_advanced"),
                      ("settings", "layout")):
        found = case(results, name)[key]
        assert found["screen"] == [0, 0, *SCREEN]
        assert found["checked"] > 10, found
        assert found["problems"] == [], f"{name} {key}: {found['problems']}"
    # and the check finds what it should
    check = case(results, "layout_check")
    problems = " | ".join(check["problems"])
    assert "is not inside the screen" in problems
    assert "Button(Far away)" in problems and "outside the window" in problems
    assert "Label(A label much wider than its pa)" in problems  # cut off by its pane


def test_screenshots(results: dict[str, Any]) -> None:
    """The dialogs as a person sees them; RESTORA_GIMP_SCREENSHOTS=docs/images keeps the
    documentation's copies up to date."""
    shots = Path(results["_screenshots"])
    for name in DOC_SCREENSHOTS:
        picture = shots / name
        assert picture.stat().st_size > 1000, name
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("RESTORA_GIMP_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for name in DOC_SCREENSHOTS:
            shutil.copy(shots / name, Path(target) / name)


def test_error_box_in_plain_words(results: dict[str, Any]) -> None:
    seen = case(results, "error_box")
    assert seen["shown"] is True
    assert seen["title"] == "Restora"
    assert "backend is not running" in seen["text"]
    assert "restora serve" not in seen["secondary"] and "Settings" in seen["secondary"]


def test_interactive_run_from_the_dialog(interactive: dict[str, Any], session: Session) -> None:
    assert interactive["answered"] == {"done": True}, interactive["_log"][-3000:]
    assert interactive["ok"]["status"] == "success"
    assert interactive["ok"]["layers"] == [f"Upscale selection - {MODEL}", "Source"]
    # GIMP's own memory of this procedure's last values: the model, but no address (a
    # person's runs use Settings)
    last = (session.home.on_host / ".config" / "GIMP" / "3.0" / "plug-in-settings"
            / "GimpProcedureConfigRun-restora-restore-selection.last").read_text()
    assert f'(model "{MODEL}")' in last
    assert '(backend-url "")' in last and session.env["RESTORA_E2E_URL"] not in last


def test_interactive_error_shows_a_message_box(interactive: dict[str, Any]) -> None:
    # the person read the message box; CANCEL keeps GIMP from showing it again
    assert interactive["error"] == {"status": "cancel", "layers": ["Source"]}


def test_settings_opens_from_the_menu_with_no_image(interactive: dict[str, Any]) -> None:
    assert interactive["settings"]["status"] == "success"
    assert interactive["settings"]["url"] == interactive["settings"]["stored"]


def test_a_missing_model_is_downloaded_from_the_dialog(results: dict[str, Any]) -> None:
    """Against a backend whose catalog is served by a local mirror: plain words with the
    model's size and licence, a Download button, progress, then the model is offered and OK
    works; a preset sets its options and picks the model with its traits."""
    seen = case(results, "download")
    assert any("Upscale" in t and "no" in t.lower() for t in seen["missing"]), seen
    assert any("Tiny Photo" in t and "MIT" in t and "kB" in t for t in seen["missing"])
    assert seen["buttons"] == ["_Download..."] and not seen["ok_before"]
    assert seen["started"] and seen["status"] == "finished"
    assert any(m.startswith("Tiny Photo") for m in seen["models"]), seen["models"]
    assert seen["ok_after"] and not seen["missing_after"]
    assert seen["presets"][0] == "Choose a preset..." and "Fast" in seen["presets"]
    assert seen["preset_back"] and seen["model_after_preset"] == "tiny-photo-x2"
    assert seen["alpha_after_preset"] == "resize"
