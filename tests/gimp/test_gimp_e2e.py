"""Restora's GIMP 3 plug-in inside real GIMP 3.0.4, end to end.

The plug-in is installed by installer/gimp_plugin.py into a GIMP home inside the Debian 13
root; the real backend runs on the host's loopback with a tiny random-weight model; GIMP's
batch mode calls the procedures non-interactively with arguments (tests/gimp/*_batch.py) and
writes what it finds as JSON, which these tests check: a selection restored as a feathered,
aligned layer transparent outside the selection, an upscale that scales the image with GIMP
and adds the layer on top, 16-bit and grayscale images, a new image, errors in plain words,
a job cancelled on the backend when GIMP kills the plug-in (its progress-bar Cancel), the
procedures registered from the backend's task list, a task with two outputs placed as one
layer group, Denoise as a procedure of its own, and reference images named by layer reaching
the backend.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from shared.geometry import Bounds, Extent, selection_crop
from tests import server_fixtures as fx
from tests.gimp.harness import HERE, GimpHome, gimp_home_with_plugin, gimp_root, plugin_processes
from tests.model_zoo import save_tiny
from tests.server_fixtures import LiveServer, ModelsSetup, free_port, live_server, test_settings

MODEL = "tiny-compact"
tiny_models, face_server = fx.tiny_models, fx.face_server  # a second backend, with a face model


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, face_models: Path) -> Iterator[LiveServer]:
    """Every product task available: an upscaler, a restoration model, a face model."""
    root = tmp_path_factory.mktemp("gimp-models")
    save_tiny("compact", root)  # x4, adds the nearest-upscaled input: results resemble it
    save_tiny("dncnn", root)
    (root / "facerestore_models").mkdir()
    face = face_models / "facerestore_models" / f"{fx.FACE_MODEL}.safetensors"
    shutil.copy(face, root / "facerestore_models" / face.name)
    setup = ModelsSetup(root, tmp_path_factory.mktemp("gimp-home"))
    with live_server(test_settings(setup, precision="fp32")) as live:
        yield live


@pytest.fixture(scope="module")
def diffusion_backend(tiny_models: fx.ModelsSetup,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A tiny single-file SD 1.5 checkpoint, a tiny x2 upscaler and a tiny HYPIR LoRA on its
    SD 2.1 base: refine, tiled-refine and HYPIR run."""
    from tests import diffusion_zoo

    root = tmp_path_factory.mktemp("gimp-diffusion-models")
    diffusion_zoo.sd15_checkpoint(root)
    diffusion_zoo.hypir_models(root)
    fx.make_tiny_model(root / "upscale_models" / "tiny-x2.pth", 2)
    with live_server(test_settings(ModelsSetup(root, tiny_models.home))) as live:
        yield live


@pytest.fixture(scope="module")
def edit_backend(tiny_models: fx.ModelsSetup,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A tiny InstructPix2Pix diffusers folder: Edit by instruction runs."""
    from tests import edit_zoo

    root = tmp_path_factory.mktemp("gimp-edit-models")
    edit_zoo.ip2p_folder(root)
    with live_server(test_settings(ModelsSetup(root, tiny_models.home))) as live:
        yield live


@pytest.fixture(scope="module")
def edit_plus_backend(tiny_models: fx.ModelsSetup,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[fx.RecordingServer]:
    """A tiny Qwen-Image-Edit-2509, which reads reference images; its edit task records
    the shape of each one it receives."""
    root = tmp_path_factory.mktemp("gimp-edit-plus-models")
    with fx.edit_plus_server(root, tiny_models.home) as recording:
        yield recording


@pytest.fixture(scope="module")
def old_photo_backend(tiny_models: fx.ModelsSetup, old_photo_models: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Random-weight LaMa, DnCNN and DDColor: the chain runs all but faces and upscale."""
    root = tmp_path_factory.mktemp("gimp-chain-models")
    for folder, name in (("colorization", "random-ddcolor"), ("inpaint", "random-lama")):
        (root / folder).mkdir()
        shutil.copy(old_photo_models / folder / f"{name}.safetensors", root / folder)
    save_tiny("dncnn", root)
    with live_server(test_settings(ModelsSetup(root, tiny_models.home))) as live:
        yield live


@pytest.fixture(scope="module")
def gimp_home(backend: LiveServer) -> Iterator[GimpHome]:
    with gimp_home_with_plugin(gimp_root()) as home:
        yield home


@pytest.fixture(scope="module")
def env(backend: LiveServer, face_server: LiveServer, gimp_home: GimpHome,
        astronaut: np.ndarray, diffusion_backend: LiveServer,
        edit_backend: LiveServer, edit_plus_backend: fx.RecordingServer,
        old_photo_backend: LiveServer) -> dict[str, str]:
    (gimp_home.on_host / "astronaut.rgba").write_bytes(fx.opaque_rgba(astronaut).tobytes())
    # RESTORA_URL: GIMP's first start asks this backend for its tasks (no cache yet)
    return {"RESTORA_URL": backend.url, "RESTORA_E2E_URL": backend.url,
            "RESTORA_E2E_MODEL": MODEL,
            "RESTORA_E2E_DOWN_URL": f"http://127.0.0.1:{free_port()}",
            "RESTORA_E2E_FACE_URL": face_server.url, "RESTORA_E2E_FACE_MODEL": fx.FACE_MODEL,
            "RESTORA_E2E_PHOTO": f"{gimp_home.inside}/astronaut.rgba",
            "RESTORA_E2E_DIFFUSION_URL": diffusion_backend.url,
            "RESTORA_E2E_EDIT_URL": edit_backend.url,
            "RESTORA_E2E_EDIT_PLUS_URL": edit_plus_backend.live.url,
            "RESTORA_E2E_OLD_PHOTO_URL": old_photo_backend.url}


@pytest.fixture(scope="module")
def results(gimp_home: GimpHome, env: dict[str, str]) -> dict[str, Any]:
    return gimp_home.batch(HERE / "gimp_e2e_batch.py", env, "e2e.json")


def case(results: dict[str, Any], name: str) -> dict[str, Any]:
    found = results.get(name)
    assert found is not None, f"the batch did not run case {name}:\n{results['_log'][-4000:]}"
    assert "crashed" not in found, found["crashed"]
    return found


def succeeded(found: dict[str, Any]) -> dict[str, Any]:
    call = found["call"]
    assert call["status"] == "success", call
    return call


def test_restore_selection_adds_a_feathered_aligned_layer(results: dict[str, Any]) -> None:
    found = case(results, "restore")
    call = succeeded(found)
    assert call["layer"] == f"Upscale selection - {MODEL}"
    # directly above the source, under the layer that was on top
    names = [layer["name"] for layer in found["layers"]]
    assert names == ["Top", call["layer"], "Source"]
    new = found["layers"][1]
    # exactly the region the plug-in sent: the selection plus context, clipped to the canvas
    region = selection_crop(Bounds(30, 20, 36, 28), Extent(96, 72), 4)
    assert (new["x"], new["y"], new["width"], new["height"]) == (
        region.x, region.y, region.width, region.height)
    assert new["format"] == "R'G'B'A u8"
    alpha = found["alpha"]
    assert alpha["outside_max"] == 0, "the layer shows outside the selection"
    assert alpha["colour_where_transparent_max"] == 0, "hidden colour where the layer is empty"
    assert alpha["inside_min"] > 0 and alpha["center"] == 255
    assert alpha["inside_min"] < 255, "no feather at the selection's edge"
    assert found["source_unchanged"]
    assert found["image_size"] == [96, 72]
    assert found["mean_abs_diff_inside"] < 40, "the result does not resemble the source"


def test_restore_follows_the_selection_not_its_box(results: dict[str, Any]) -> None:
    found = case(results, "restore_ellipse")
    succeeded(found)
    assert found["unselected_in_box"] > 0  # the ellipse's corners and the context
    assert found["alpha_where_unselected_max"] == 0
    assert found["alpha_where_selected_min"] == 255  # feather 0: a hard edge, fully opaque
    assert found["source_unchanged"]


def test_upscale_scales_the_image_and_adds_the_layer_on_top(results: dict[str, Any]) -> None:
    found = case(results, "upscale")
    call = succeeded(found)
    assert found["image_size"] == [80, 60]
    top, source = found["layers"]
    assert top["name"] == call["layer"] == f"Upscale x2 - {MODEL}"
    assert (top["x"], top["y"], top["width"], top["height"]) == (0, 0, 80, 60)
    assert source["name"] == "Source"
    assert (source["width"], source["height"]) == (80, 60), "GIMP did not scale the source"
    assert found["alpha_min"] == 255
    assert found["mean_abs_diff_to_gimp_scaled"] < 40


def test_16_bit_image_keeps_16_bits(results: dict[str, Any]) -> None:
    found = case(results, "upscale_16bit")
    succeeded(found)
    new, source = found["layers"]
    assert new["format"] == source["format"] == "R'G'B'A u16"
    region = selection_crop(Bounds(8, 6, 20, 14), Extent(36, 28), 3)
    assert (new["x"], new["y"], new["width"], new["height"]) == (
        region.x, region.y, region.width, region.height)
    assert found["alpha"]["outside_max"] == 0
    assert found["alpha"]["center"] == 65535
    assert found["source_unchanged"]
    # values 8-bit data could not hold: the pixels went both ways as 16-bit
    assert found["fraction_not_8bit"] > 0.5


def test_grayscale_image(results: dict[str, Any]) -> None:
    found = case(results, "gray")
    succeeded(found)
    assert found["image_size"] == [64, 48]
    assert [la["format"] for la in found["layers"]] == ["Y'A u8", "Y'A u8"]
    assert [(la["width"], la["height"]) for la in found["layers"]] == [(64, 48), (64, 48)]


def test_upscale_into_a_new_image(results: dict[str, Any]) -> None:
    found = case(results, "new_image")
    succeeded(found)
    assert found["image_size"] == [20, 16] and found["layer_count"] == 1
    assert found["new_image_size"] == [80, 64]  # the model's own x4
    assert [la["name"] for la in found["new_image_layers"]] == [f"Upscale x4 - {MODEL}"]


def test_backend_down_is_an_error_in_plain_words(results: dict[str, Any]) -> None:
    found = case(results, "backend_down")
    call = found["call"]
    assert call["status"] == "execution-error"
    assert "backend is not running" in call["error"]
    # GIMP's words: where to set the address, not a command line
    assert "Filters > Restora > Settings" in call["error"]
    assert "restora serve" not in call["error"]
    assert found["layer_count"] == 1 and found["source_unchanged"]


def test_nothing_selected_and_unknown_model(results: dict[str, Any]) -> None:
    nothing = case(results, "nothing_selected")
    assert nothing["call"]["status"] == "execution-error"
    assert "Nothing is selected" in nothing["call"]["error"]
    assert nothing["layer_count"] == 1
    unknown = case(results, "unknown_model")
    assert unknown["call"]["status"] == "execution-error"
    assert "no-such-model" in unknown["call"]["error"] and MODEL in unknown["call"]["error"]
    assert unknown["image_size"] == [16, 16]


def test_killed_plugin_cancels_the_job_on_the_backend(
        results: dict[str, Any], gimp_home: GimpHome, env: dict[str, str],
        backend: LiveServer) -> None:
    """GIMP's progress-bar Cancel kills the plug-in; the job must not run on for nobody."""
    watch: dict[str, Any] = {}

    def kill_when_running() -> None:
        deadline = time.monotonic() + 120
        job, since = None, 0.0
        with httpx.Client(base_url=backend.url, timeout=5) as http:
            while time.monotonic() < deadline:
                running = http.get("/v1/health").json().get("running")
                if running != job:
                    job, since = running, time.monotonic()
                if job and time.monotonic() - since > 1.0:  # the slow job, not a quick one
                    break
                time.sleep(0.05)
            else:
                watch["error"] = "the slow job never ran"
                return
            pids = plugin_processes(gimp_home)
            watch["pids"] = pids
            killed = time.monotonic()
            for pid in pids:
                os.kill(pid, signal.SIGKILL)  # what GIMP does on Cancel
            while time.monotonic() < deadline:
                if http.get("/v1/health").json().get("running") != job:
                    break
                time.sleep(0.05)
            watch["stopped_after"] = time.monotonic() - killed
            watch["state"] = http.get(f"/v1/jobs/{job}").json().get("state")

    watcher = threading.Thread(target=kill_when_running, daemon=True)
    watcher.start()
    found = gimp_home.batch(HERE / "gimp_cancel_batch.py", env, "cancel.json")
    watcher.join(30)
    assert "error" not in watch, watch
    assert len(watch["pids"]) == 1, watch
    assert watch["stopped_after"] < 5, watch
    assert watch["state"] == "cancelled", watch
    assert found["status"] != "success"
    assert found["seconds"] < 20, "the batch waited for the whole job"
    assert found["layers"] == ["Source"] and found["image_size"] == [256, 256]


def test_installed_files(gimp_home: GimpHome) -> None:
    entry = gimp_home.plugin_dir / "restora" / "restora.py"
    assert entry.stat().st_mode & 0o111 == 0o111
    library = gimp_home.plugin_dir / "restora" / "restora_lib"
    assert {p.name for p in library.iterdir()} >= {"__init__.py", "shared", "common", "gimp"}
    assert not list(Path(library).rglob("test*"))


def test_restore_faces_adds_one_layer_of_the_face(results: dict[str, Any], gimp_home: GimpHome,
                                                   face_server: LiveServer,
                                                   astronaut: np.ndarray) -> None:
    found = case(results, "faces")
    call = succeeded(found)
    assert call["layer"] == f"Restore faces - {fx.FACE_MODEL}"
    assert [la["name"] for la in found["layers"]] == [call["layer"], "Source"]
    new = found["layers"][0]
    assert (new["x"], new["y"], new["width"], new["height"]) == (0, 0, 512, 512)
    assert found["source_unchanged"]
    layer = np.frombuffer((gimp_home.on_host / found["layer_file"]).read_bytes(),
                          np.uint8).reshape(512, 512, 4)
    expected = fx.expected_face_layer(face_server, fx.opaque_rgba(astronaut))
    assert np.array_equal(layer[..., 3], expected[..., 3])
    assert np.abs(layer.astype(int) - expected).max() <= 1
    assert 0.02 < (layer[..., 3] > 0).mean() < 0.25


def test_no_face_adds_nothing_and_says_so(results: dict[str, Any]) -> None:
    found = case(results, "faces_none")
    call = succeeded(found)
    assert call["layer"] is None and found["layer_count"] == 1
    assert "No face found in the image." in results["_log"]


def test_procedures_come_from_the_backends_task_list(results: dict[str, Any],
                                                     gimp_home: GimpHome) -> None:
    found = case(results, "procedures")
    assert found["labels"] == {
        "restora-restore-selection": "Restore _selection...",
        "restora-upscale-image": "Upscale...",  # the name scripts know, the backend's title
        "restora-face-restore": "Restore faces...",
        "restora-denoise": "Denoise...",
        "restora-test-split": "Split (test)...",
        "restora-colorize": "Colorize...",  # lacks only a model: its dialog says so
        "restora-settings": "Se_ttings...",
    }
    assert found["missing"] == ["restora-upscale"]
    cached = (gimp_home.on_host / ".config" / "GIMP" / "3.0" / "restora-tasks.json")
    assert "test-split" in cached.read_text()  # beside the settings, for the next start


def test_two_outputs_arrive_as_one_group_of_two_layers(results: dict[str, Any],
                                                       gimp_home: GimpHome) -> None:
    found = case(results, "split")
    call = succeeded(found)
    assert call["layer"] == "Split (test)"  # the group, named after the task
    assert [la["name"] for la in found["layers"]] == ["Split (test)", "Source"]
    assert found["group"] and found["children"] == ["Brighter", "Inverse"]  # in that order
    source = np.frombuffer(bytes.fromhex(found["source"]), np.uint8).reshape(12, 16, 4)
    bright, inverse = (np.frombuffer(bytes.fromhex(h), np.uint8).reshape(12, 16, 4)
                       for h in found["child_pixels"])
    colour = source[..., :3].astype(np.float32)
    np.testing.assert_array_equal(bright[..., :3], np.clip(colour * 2.0, 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(inverse[..., :3], 255 - source[..., :3])


def test_denoise_procedure_adds_a_layer(results: dict[str, Any], backend: LiveServer) -> None:
    found = case(results, "denoise")
    call = succeeded(found)
    assert call["layer"] == "Denoise - tiny-dncnn"
    assert [la["name"] for la in found["layers"]] == [call["layer"], "Source"]
    new = found["layers"][0]
    assert (new["x"], new["y"], new["width"], new["height"]) == (0, 0, 24, 20)
    assert found["image_size"] == [24, 20] and found["source_unchanged"]
    source = np.frombuffer(bytes.fromhex(found["source"]), np.uint8).reshape(20, 24, 4)
    client = fx.Client(backend.url)  # the same job straight to the backend
    try:
        job = client.submit(source, task="denoise", model="tiny-dncnn")
        assert client.wait(job["id"])["state"] == "finished"
        expected = client.result(job["id"])
    finally:
        client.close()
    layer = np.frombuffer(bytes.fromhex(found["layer_pixels"]), np.uint8).reshape(20, 24, 4)
    np.testing.assert_array_equal(layer, expected)


def test_refine_on_a_selection(results: dict[str, Any],
                               diffusion_backend: LiveServer) -> None:
    """Diffusion refine from its procedure, on a selection: one new layer over the
    selection, opaque inside it and transparent outside; the source untouched."""
    found = case(results, "refine")
    call = succeeded(found)
    title = fx.task_title(diffusion_backend.url, "refine")
    assert call["layer"] == f"{title} selection - tiny-sd15"
    assert [la["name"] for la in found["layers"]] == [call["layer"], "Source"]
    assert found["source_unchanged"]
    alpha = found["alpha"]
    assert alpha["center"] == 255 and alpha["outside_max"] == 0, alpha


def test_tiled_refine_enlarges_the_image(results: dict[str, Any],
                                         diffusion_backend: LiveServer) -> None:
    """Tiled refine from its procedure: GIMP scales the image by the task's factor and the
    result is one layer of the new size on top of the (scaled) source."""
    found = case(results, "tiled_refine")
    call = succeeded(found)
    title = fx.task_title(diffusion_backend.url, "tiled-refine")
    assert found["image_size"] == [96, 80]
    top, source = found["layers"]
    assert top["name"] == call["layer"] == f"{title} x2 - tiny-sd15"
    assert (top["x"], top["y"], top["width"], top["height"]) == (0, 0, 96, 80)
    assert source["name"] == "Source" and (source["width"], source["height"]) == (96, 80)


def test_hypir_on_a_selection(results: dict[str, Any], diffusion_backend: LiveServer) -> None:
    """HYPIR at scale 1 with a selection: a layer over the selection only, redrawn inside,
    the source untouched."""
    found = case(results, "hypir_selection")
    call = succeeded(found)
    title = fx.task_title(diffusion_backend.url, "hypir")
    assert call["layer"] == f"{title} selection - HYPIR_sd2"
    assert [la["name"] for la in found["layers"]] == [call["layer"], "Source"]
    assert found["source_unchanged"] and found["inside_differs"]
    alpha = found["alpha"]
    assert alpha["center"] == 255 and alpha["outside_max"] == 0, alpha


def test_hypir_at_scale_2_enlarges_the_whole_image(results: dict[str, Any],
                                                  diffusion_backend: LiveServer) -> None:
    """HYPIR at scale 2 enlarges the image even with a selection there (a selection is
    restored in place only at scale 1)."""
    found = case(results, "hypir_x2")
    call = succeeded(found)
    title = fx.task_title(diffusion_backend.url, "hypir")
    assert found["image_size"] == [96, 80]
    top = found["layers"][0]
    assert top["name"] == call["layer"] == f"{title} x2 - HYPIR_sd2"
    assert (top["x"], top["y"], top["width"], top["height"]) == (0, 0, 96, 80)


def test_colorize_by_instruction_names_the_layer_after_it(results: dict[str, Any]) -> None:
    """Edit by instruction from its procedure: the layer is named after the instruction and
    keeps the photo's luminance within a level and a half."""
    found = case(results, "edit")
    call = succeeded(found)
    assert call["layer"] == "Colorize this black-and-white photo naturally - tiny-instruct-pix2pix"
    source = np.frombuffer(bytes.fromhex(found["source"]), np.uint8).reshape(40, 48, 4)
    layer = np.frombuffer(bytes.fromhex(found["layer_pixels"]), np.uint8).reshape(40, 48, 4)
    luma = np.array([0.299, 0.587, 0.114])
    diff = layer[..., :3].astype(np.float64) @ luma - source[..., :3].astype(np.float64) @ luma
    assert np.abs(diff).max() <= 1.5


def test_the_old_photo_chain_is_one_group_with_a_layer_per_stage(results: dict[str, Any]) -> None:
    """The chain from its procedure: one group named after the task, the stages that ran as
    its layers with the finished photo on top, the source untouched."""
    found = case(results, "old_photo")
    call = succeeded(found)
    assert found["group"] == call["layer"] and call["layer"].startswith("Restore old photo")
    assert found["children"] == ["Colorized", "Denoised", "Scratches filled",
                                 "Scratches and dust"]
    assert found["source_unchanged"]


def test_reference_images_named_by_layer_reach_the_model(
        results: dict[str, Any], edit_plus_backend: fx.RecordingServer) -> None:
    """`references` names layers of the image for the edit's reference images: each reaches
    the backend whole at its own size (past the canvas, in a group, for a selection too) and
    changes what Qwen-Image-Edit-2509 makes of the same seed; a layer the image lacks is left
    out and the edit still runs; broken JSON is refused in words."""
    found = case(results, "edit_references")
    both, none, one_gone = found["both"], found["none"], found["one_gone"]
    for run in (both, none, one_gone, found["selection"]):
        assert run["status"] == "success", run
    hat, scarf = [12, 16, 4], [18, 20, 4]  # (h, w, channels): each layer's own size
    assert edit_plus_backend.received == [{"reference_1": hat, "reference_2": scarf}, {},
                                          {"reference_2": hat}, {"reference_1": scarf}]
    assert both["pixels"] != none["pixels"]  # the same seed: the pictures made a difference
    assert found["broken"]["status"] != "success"
    assert "reference images are not valid JSON" in found["broken"]["error"]
    assert found["source_unchanged"]


def test_colorize_by_instruction_on_a_selection(results: dict[str, Any]) -> None:
    found = case(results, "edit_selection")
    call = succeeded(found)
    assert call["layer"] == "Colorize this black-and-white photo naturally - tiny-instruct-pix2pix"
    assert found["source_unchanged"]
    alpha = found["alpha"]
    assert alpha["center"] == 255 and alpha["outside_max"] == 0, alpha
