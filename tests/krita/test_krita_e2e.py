"""The Krita plug-in end to end inside real Krita (kritarunner, no display) against the real
backend on loopback with tiny random-weight models.

The plug-in is built and installed into a fresh Krita home by installer/krita_plugin.py;
krita_scenarios.py then paints documents, selects, and runs Restore selection and Upscale
image through the plug-in's own code path; this side checks the new layers' names, places,
sizes and pixels (against the engine's own output, byte for byte), that pixels outside the
selection are transparent and that the source layer is unchanged. Also: 16-bit, float and gray
documents, the composite as source, no selection, backend down, cancel, and the backend
killed in the middle of a job; a task with two outputs placed as one layer group; Denoise
from its task list entry, with its form from the spec; reference images picked in the
docker's lists reaching the backend.

Krita missing is a failure, not a skip: CI installs it with tests/editors/krita.sh.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend.masking import apply_selection
from installer import krita_plugin
from tests import server_fixtures as fx
from tests.model_zoo import save_tiny
from tests.plugin_fixtures import BackendProcess, clean_environment
from tests.server_fixtures import (
    Client,
    ModelsSetup,
    free_port,
    live_server,
    make_tiny_model,
    reference_upscale,
    test_settings,
)

server, tiny_models, face_server = fx.server, fx.tiny_models, fx.face_server

REPO = Path(__file__).resolve().parents[2]
KRITA_RUN = REPO / "tests" / "editors" / "krita_run.sh"
SCENARIOS = Path(__file__).with_name("krita_scenarios.py")
W, H = 128, 96
SEL = (40, 30, 36, 24)
PADDING, FEATHER = 8, 4.0
UPSCALE_PARAMS = {"scale", "width", "tile", "overlap", "alpha"}
FACE_PARAMS = {"fidelity", "strength", "colour_match", "min_face", "threshold", "upscale_model",
               "scale"}
#: kritarc's options as the docker wrote them when a task switch saved the old task's form
#: under the new task (Upscale -> Restore faces -> Upscale)
POISONED = {"upscale": {"fidelity": 0.5, "strength": 1.0, "colour_match": True, "min_face": 20,
                        "threshold": 0.5, "upscale_model": None, "scale": None},
            "face-restore": {"scale": None, "width": None, "tile": None, "overlap": 32,
                             "alpha": "model"}}


def require_krita() -> None:
    if shutil.which("kritarunner") is None:
        pytest.fail("Krita is not installed (no kritarunner on PATH). Install it with "
                    "`tests/editors/krita.sh` (as root: apt-get install krita python3-pyqt5), "
                    "then run the tests again.", pytrace=False)


@pytest.fixture(scope="module")
def killable(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("kill-models")
    make_tiny_model(root / "upscale_models" / "tiny-x2.safetensors", 2, seed=1)
    proc = BackendProcess(root, tmp_path_factory.mktemp("kill-home")).start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def denoise_server(tiny_models: fx.ModelsSetup,
                   tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A backend with one tiny restoration model (DnCNN), so Denoise is available."""
    root = tmp_path_factory.mktemp("denoise-models")
    save_tiny("dncnn", root)
    with live_server(test_settings(ModelsSetup(root, tiny_models.home))) as live:
        yield live


@pytest.fixture(scope="module")
def diffusion_server(tiny_models: fx.ModelsSetup,
                     tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A backend with a tiny single-file SD 1.5 checkpoint (and a tiny upscaler for
    tiled-refine) and a tiny HYPIR LoRA on its SD 2.1 base, so the diffusion tasks run."""
    from tests import diffusion_zoo

    root = tmp_path_factory.mktemp("diffusion-models")
    diffusion_zoo.sd15_checkpoint(root)
    diffusion_zoo.hypir_models(root)
    make_tiny_model(root / "upscale_models" / "tiny-x2.pth", 2)
    with live_server(test_settings(ModelsSetup(root, tiny_models.home))) as live:
        yield live


@pytest.fixture(scope="module")
def edit_server(tiny_models: fx.ModelsSetup, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A backend with a tiny InstructPix2Pix diffusers folder, so Edit by instruction runs."""
    from tests import edit_zoo

    root = tmp_path_factory.mktemp("edit-models")
    edit_zoo.ip2p_folder(root)
    with live_server(test_settings(ModelsSetup(root, tiny_models.home))) as live:
        yield live


@pytest.fixture(scope="module")
def edit_plus_server(tiny_models: fx.ModelsSetup,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[fx.RecordingServer]:
    """A tiny Qwen-Image-Edit-2509, which reads reference images; its edit task records
    the shape of each one it receives."""
    root = tmp_path_factory.mktemp("edit-plus-models")
    with fx.edit_plus_server(root, tiny_models.home) as recording:
        yield recording


@pytest.fixture(scope="module")
def old_photo_server(tiny_models: fx.ModelsSetup, old_photo_models: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Random-weight LaMa, DnCNN and DDColor: the old-photo chain runs every stage but faces
    (no face model: skipped with a note)."""
    root = tmp_path_factory.mktemp("chain-models")
    for folder, name in (("colorization", "random-ddcolor"), ("inpaint", "random-lama")):
        (root / folder).mkdir()
        shutil.copy(old_photo_models / folder / f"{name}.safetensors", root / folder)
    save_tiny("dncnn", root)
    with live_server(test_settings(ModelsSetup(root, tiny_models.home))) as live:
        yield live


@pytest.fixture(scope="module")
def download_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A backend with no upscale model whose catalog is served by a local mirror."""
    from tests.model_mirror import download_server
    from tests.service.test_server_downloads import catalog_models

    with download_server(tmp_path_factory, catalog_models) as backend:
        yield backend


@pytest.fixture(scope="module")
def krita_run(server: fx.LiveServer, killable: BackendProcess, face_server: fx.LiveServer,
              denoise_server: fx.LiveServer, astronaut: np.ndarray, download_backend: Any,
              diffusion_server: fx.LiveServer, edit_server: fx.LiveServer,
              edit_plus_server: fx.RecordingServer, old_photo_server: fx.LiveServer,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Install the plug-in into a fresh Krita home and run every scenario once."""
    require_krita()
    home = tmp_path_factory.mktemp("krita-home")
    out = tmp_path_factory.mktemp("krita-out")
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    krita_plugin.install(pykrita, home / ".config" / "kritarc")
    # kritarunner keeps Krita's settings in kritarunnerrc (its own name), Krita in kritarc
    poison_kritarc(home / ".config" / "kritarunnerrc", server.url)
    config = {"pykrita": str(pykrita), "url": server.url, "out_dir": str(out),
              "dead_url": f"http://127.0.0.1:{free_port()}", "kill_url": killable.url,
              "kill_pid": killable.proc.pid if killable.proc else None,
              "face_url": face_server.url, "face_model": fx.FACE_MODEL,
              "denoise_url": denoise_server.url, "download_url": download_backend.live.url,
              "diffusion_url": diffusion_server.url, "edit_url": edit_server.url,
              "edit_plus_url": edit_plus_server.live.url,
              "old_photo_url": old_photo_server.url,
              "photo": "astronaut.rgba", "photo_size": astronaut.shape[0]}
    (out / "astronaut.rgba").write_bytes(fx.opaque_rgba(astronaut).tobytes())
    (out / "config.json").write_text(json.dumps(config))
    env = {**clean_environment(), "KRITA_HOME": str(home), "KRITA_RUN_TIMEOUT": "400"}
    t0 = time.monotonic()
    proc = subprocess.run([str(KRITA_RUN), str(SCENARIOS), "main", str(out / "config.json")],
                          env=env, capture_output=True, text=True, timeout=460)
    seconds = time.monotonic() - t0
    results_file = out / "results.json"
    assert proc.returncode == 0 and results_file.exists(), (
        f"Krita run failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    results = json.loads(results_file.read_text())
    results["_out"] = out
    results["_seconds"] = seconds
    print(f"\nKrita scenarios took {seconds:.1f} s (Krita {results['krita']})")
    return results


def poison_kritarc(kritarc: Path, url: str) -> None:
    """The plug-in's settings group as a Krita that ran the task-switch bug left it (the
    file is new: kritarunner has not written it yet)."""
    values = {"backend_url": url, "task": "upscale", "options": POISONED,
              "models": {"upscale": "tiny-x2", "face-restore": "tiny-x2"}}
    lines = ["[Restora]"] + [f"{k}={json.dumps(v)}" for k, v in sorted(values.items())]
    kritarc.write_text("\n".join(lines) + "\n", encoding="utf-8")


def scenario(results: dict[str, Any], name: str) -> dict[str, Any]:
    r = results[name]
    assert "exception" not in r, r["exception"]
    return r


def raw(results: dict[str, Any], name: str, width: int, height: int, channels: int,
        depth: int = 8) -> np.ndarray:
    data = (results["_out"] / name).read_bytes()
    dtype = np.dtype("<u2") if depth == 16 else np.uint8
    return np.frombuffer(data, dtype).reshape(height, width, channels)


def expected_restore(models: fx.ModelsSetup, source: np.ndarray) -> tuple[np.ndarray, tuple]:
    """What the new layer must hold: the engine's restore of the padded selection box,
    feathered by the selection, transparent (all zero) elsewhere."""
    x, y, w, h = SEL
    x0, y0 = max(0, x - PADDING), max(0, y - PADDING)
    x1, y1 = min(W, x + w + PADDING), min(H, y + h + PADDING)
    crop = np.ascontiguousarray(source[y0:y1, x0:x1])
    mask = np.zeros((y1 - y0, x1 - x0, 1), np.uint8)
    mask[y - y0:y - y0 + h, x - x0:x - x0 + w] = 255
    patch = apply_selection(reference_upscale(models, crop, "tiny-x2", scale=1.0, tile=0), mask,
                            FEATHER)
    patch[patch[:, :, -1] == 0] = 0
    full = np.zeros((H, W, source.shape[2]), source.dtype)
    full[y0:y1, x0:x1] = patch
    return full, (x0, y0, x1 - x0, y1 - y0)


def test_the_installed_package_loads_in_krita_without_heavy_modules(krita_run) -> None:
    r = scenario(krita_run, "package")
    assert "/pykrita/restora/" in r["file"] and "/pykrita/restora/shared/" in r["shared"]
    assert r["heavy"] == [] and r["version"]


def test_restore_selection_8bit(krita_run, tiny_models) -> None:
    r = scenario(krita_run, "restore_u8")
    assert r["status"] == "finished", r["error"]
    assert r["layer_name"] == "Upscale selection - tiny-x2"
    assert r["layers"] == ["Background", "Upscale selection - tiny-x2"]  # above the source
    assert r["doc_size"] == [W, H] and r["depth"] == "U8"
    assert r["bounds"] == list(SEL)  # what shows is exactly the selection
    assert r["source_unchanged"] and r["outside_nonzero"] == 0
    assert r["core_alpha_min"] == 255 and 0 < r["edge_alpha"] < 255  # feathered edge
    source = raw(krita_run, r["source_file"], W, H, 4)
    layer = raw(krita_run, r["layer_file"], W, H, 4)
    expected, _box = expected_restore(tiny_models, source)
    np.testing.assert_array_equal(layer, expected)


def test_restore_selection_16bit(krita_run, tiny_models) -> None:
    r = scenario(krita_run, "restore_u16")
    assert r["status"] == "finished", r["error"]
    assert r["depth"] == "U16" and r["source_unchanged"] and r["outside_nonzero"] == 0
    assert r["bounds"] == list(SEL)
    source = raw(krita_run, r["source_file"], W, H, 4, 16)
    layer = raw(krita_run, r["layer_file"], W, H, 4, 16)
    expected, _box = expected_restore(tiny_models, source.astype(np.uint16))
    np.testing.assert_array_equal(layer, expected)


def test_restore_selection_16bit_linear_is_converted_and_back(krita_run) -> None:
    r = scenario(krita_run, "restore_u16_linear")
    assert r["status"] == "finished", r["error"]
    assert r["profile"] == "sRGB-elle-V2-g10.icc" and r["document_profile_unchanged"]
    assert r["depth"] == "U16" and r["layer_profile"] == r["profile"]
    assert r["source_unchanged"] and r["outside_nonzero"] == 0 and r["bounds"] == list(SEL)
    assert r["core_alpha_min"] == 65535


def test_upscale_float_document(krita_run) -> None:
    r = scenario(krita_run, "upscale_f32")
    assert r["status"] == "finished", r["error"]
    assert r["doc_size"] == [64, 48] and r["doc_depth"] == "F32" and r["depth"] == "F32"
    assert r["bounds"] == [0, 0, 64, 48]
    assert all(0.0 <= v <= 1.0 for v in r["centre"]) and r["centre"][3] == 1.0


def test_restore_selection_gray(krita_run, tiny_models) -> None:
    r = scenario(krita_run, "restore_gray")
    assert r["status"] == "finished", r["error"]
    assert r["model"] == "GRAYA" and r["bytes_per_pixel"] == 2
    assert r["source_unchanged"] and r["outside_nonzero"] == 0
    source = raw(krita_run, r["source_file"], W, H, 2)
    layer = raw(krita_run, r["layer_file"], W, H, 2)
    expected, _box = expected_restore(tiny_models, source)
    np.testing.assert_array_equal(layer, expected)


def test_restore_selection_of_the_image_as_shown(krita_run, tiny_models) -> None:
    r = scenario(krita_run, "restore_projection")
    assert r["status"] == "finished", r["error"]
    assert r["layers"] == ["Background", r["layer_name"], "Red veil"]
    source = raw(krita_run, r["source_file"], W, H, 4)
    layer = raw(krita_run, r["layer_file"], W, H, 4)
    expected, _box = expected_restore(tiny_models, source)
    np.testing.assert_array_equal(layer, expected)


def test_upscale_image(krita_run, tiny_models) -> None:
    r = scenario(krita_run, "upscale_u8")
    assert r["status"] == "finished", r["error"]
    assert r["layer_name"] == "Upscale x2 - tiny-x2"
    assert r["doc_size"] == [2 * W, 2 * H] and r["bounds"] == [0, 0, 2 * W, 2 * H]
    assert r["layers"] == ["Background", "Upscale x2 - tiny-x2", "Above"]
    assert r["source_scaled_by_krita"]  # the document was scaled by Krita's own command
    source = raw(krita_run, "restore_u8_source.rgba", W, H, 4)  # the same painted pattern
    layer = raw(krita_run, r["layer_file"], 2 * W, 2 * H, 4)
    np.testing.assert_array_equal(layer, reference_upscale(tiny_models, source, "tiny-x2",
                                                           tile=0))


def test_upscale_into_a_new_document(krita_run) -> None:
    r = scenario(krita_run, "upscale_new_document")
    assert r["status"] == "finished", r["error"]
    assert r["doc_size"] == [32, 24] and r["layers"] == ["Background"]  # unchanged
    assert r["documents_added"] == 1 and r["new_size"] == [64, 48]
    assert r["new_layers"] == [r["layer_name"]]


def test_no_selection_is_explained(krita_run) -> None:
    r = scenario(krita_run, "no_selection")
    assert r["status"] == "failed" and r["error_type"] == "NothingSelected"
    assert "Nothing is selected" in r["error"] and r["layers"] == ["Background"]


def test_backend_down_says_how_to_start_it(krita_run) -> None:
    r = scenario(krita_run, "backend_down")
    assert r["status"] == "failed" and r["error_type"] == "BackendUnavailable"
    assert "not running" in r["error"] and "Start backend" in r["error"]
    assert r["layers"] == ["Background"] and r["elapsed"] < 5


def test_cancel(krita_run) -> None:
    r = scenario(krita_run, "cancel")
    assert r["started"] and r["stage_before_cancel"].startswith("upscaling: step ")
    assert r["status"] == "cancelled" and r["cancel_seconds"] < 10
    assert r["doc_size"] == [320, 320] and r["layers"] == ["Background"]
    # a second action queues behind the first, and starts once the first is cancelled
    assert r["queued"] == [True] and r["second_started"]
    assert r["second_waiting"].startswith("waiting"), r["second_waiting"]
    assert r["second"]["status"] == "cancelled" and r["history"] == ["cancelled", "cancelled"]


def test_backend_killed_mid_job(krita_run) -> None:
    r = scenario(krita_run, "killed")
    assert r["started"] and r["status"] == "failed" and r["error_type"] == "BackendLost"
    assert "stopped while it worked" in r["error"] and "Start backend" in r["error"]
    assert "not changed" in r["error"] and r["seconds_to_report"] < 15
    assert r["doc_size"] == [320, 320] and r["layers"] == ["Background"]
    assert r["connection"] == "disconnected"


def test_restore_faces_adds_one_layer_of_the_face(krita_run, face_server: fx.LiveServer,
                                                   astronaut: np.ndarray) -> None:
    r = scenario(krita_run, "faces_photo")
    assert r["status"] == "finished", r
    assert r["layer_name"] == f"Restore faces - {fx.FACE_MODEL}"
    assert r["layers"] == ["Background", r["layer_name"]] and r["source_unchanged"]
    assert r["stage"] == f"Added '{r['layer_name']}'."
    size = astronaut.shape[0]
    layer = raw(krita_run, r["layer_file"], size, size, 4)
    expected = fx.expected_face_layer(face_server, fx.opaque_rgba(astronaut))
    assert np.array_equal(layer[..., 3], expected[..., 3])
    assert np.abs(layer.astype(int) - expected).max() <= 1
    alpha = layer[..., 3]
    assert 0.02 < (alpha > 0).mean() < 0.25  # the face only; transparent elsewhere


def test_no_face_adds_nothing_and_says_so(krita_run) -> None:
    r = scenario(krita_run, "faces_none")
    assert r["status"] == "finished" and r["error"] is None
    assert r["layers"] == ["Background"]
    assert r["stage"].startswith("No face found in the image.")


def test_a_kritarc_poisoned_by_a_task_switch_loads_with_a_note_and_upscales(krita_run) -> None:
    r = scenario(krita_run, "docker_poisoned_kritarc")
    assert r["stored_before"] == POISONED  # Krita read the bug's keys from kritarc
    assert r["connected"]
    u = r["upscale"]
    assert u["status"] == "finished", u["error"]
    assert u["layers"] == ["Background", "Upscale x2 - tiny-x2"] and u["doc_size"] == [64, 48]
    shown = [line for text in r["labels"] for line in text.splitlines()]
    assert ("Dropped the saved options 'fidelity', 'strength', 'colour_match', 'min_face', "
            "'threshold', 'upscale_model' that Upscale does not have.") in shown
    assert ("Dropped the saved options 'width', 'tile', 'overlap', 'alpha' that Restore faces "
            "does not have.") in shown
    # kritarc is healed: each task keeps only its own options (Restore faces is described
    # by this backend, though it has no face model to run it with)
    assert r["stored_after"] == {"upscale": {"scale": None}, "face-restore": {"scale": None}}


def test_switching_the_docker_task_keeps_each_tasks_options_apart(
        krita_run, server: fx.LiveServer) -> None:
    r = scenario(krita_run, "docker_task_switch")
    # grouped as the editors group them (separators have no task), in the backend's order
    assert [t for t in r["tasks"] if t] == fx.grouped_ids(server.url)
    assert "test-split" in r["tasks"]  # offered: no model needed
    upscale_form = sorted(["Scale", "Width", "Tile size", "Tile overlap", "Transparency"])
    assert r["upscale_form"] == r["back_form"] == upscale_form
    assert r["split_form"] == ["Gain", "Hold"]
    u = r["upscale"]
    assert u["status"] == "finished", u["error"]
    assert u["layers"] == ["Background", "Upscale x2 - tiny-x2"] and u["doc_size"] == [64, 48]
    options = r["stored_options"]
    assert set(options["upscale"]) == UPSCALE_PARAMS, options
    assert options["test-split"] == {"gain": 1.7, "hold": 0.0}  # the edit went to the split task
    assert r["stored_models"]["upscale"] == "tiny-x2"


def test_two_outputs_arrive_as_one_group_of_two_layers(krita_run) -> None:
    r = scenario(krita_run, "split")
    assert r["status"] == "finished", r["error"]
    assert r["layer_name"] == "Split (test)"  # the task's title; it runs no model
    assert r["top_level"] == [["Background", "paintlayer"], ["Split (test)", "grouplayer"]]
    assert r["children"] == ["Brighter", "Inverse"]  # top to bottom, in the backend's order
    source = raw(krita_run, r["source_file"], 32, 24, 4)
    bright, inverse = (raw(krita_run, f, 32, 24, 4) for f in r["child_files"])
    colour = source[..., :3].astype(np.float32)
    np.testing.assert_array_equal(bright[..., :3], np.clip(colour * 2.0, 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(inverse[..., :3], 255 - source[..., :3])


def test_denoise_runs_from_its_task_action(krita_run, denoise_server: fx.LiveServer) -> None:
    r = scenario(krita_run, "denoise")
    assert r["status"] == "finished", r["error"]
    assert r["layer_name"] == "Denoise - tiny-dncnn"
    assert r["layers"] == ["Background", r["layer_name"]] and r["doc_size"] == [40, 32]
    assert r["bounds"] == [0, 0, 40, 32]
    source = raw(krita_run, r["source_file"], 40, 32, 4)
    layer = raw(krita_run, r["layer_file"], 40, 32, 4)
    client = Client(denoise_server.url)  # the same job straight to the backend
    try:
        job = client.submit(source, task="denoise", model="tiny-dncnn")
        assert client.wait(job["id"])["state"] == "finished"
        np.testing.assert_array_equal(layer, client.result(job["id"]))
    finally:
        client.close()


def test_denoise_in_the_docker_and_menu_with_its_spec(krita_run) -> None:
    r = scenario(krita_run, "docker_denoise")
    assert r["connected"]
    assert "Denoise" in r["tasks"]
    assert r["strength"]["type"] == "ParamSlider"  # widget "slider" in the spec
    assert (r["strength"]["minimum"], r["strength"]["maximum"]) == (0.0, 1.0)
    assert r["strength"]["step"] == 0.05 and "original" in r["strength"]["tooltip"]
    assert r["noise"] == {"minimum": 0.0, "maximum": 255.0, "suffix": " levels",
                          "hidden": False}  # DnCNN's noise level applies to tiny-dncnn
    assert r["jpeg_hidden"]  # FBCNN's JPEG quality does not
    assert r["tile"] == {"special": "automatic (from free memory)", "advanced": True}
    menu = r["menu"]  # grouped: Upscale first, then what restores, in the backend's order
    assert menu[0] == "Upscale" and menu.index("Restore faces") < menu.index("Denoise")
    assert r["menu"][-3:] == ["Restore selection", "Whole image", "Cancel Restora job"]


def test_a_missing_model_is_downloaded_then_used(krita_run) -> None:
    """In Krita: the backend has no upscale model; the plug-in offers the catalog's
    recommended one, has the backend download it from the (local) mirror with progress, and
    the upscale then runs with it."""
    r = scenario(krita_run, "download_then_upscale")
    assert r["needs_model"] and r["offered"] == "tiny-photo"
    assert r["download"] == "finished" and r["progress_seen"]
    assert r["models_after"] == ["tiny-photo-x2"]
    assert r["upscale"]["status"] == "finished", r["upscale"]["error"]
    assert r["upscale"]["layer_name"] == "Upscale x2 - tiny-photo-x2"


def test_refine_on_a_selection_in_krita(
        krita_run, diffusion_server: fx.LiveServer) -> None:
    """Diffusion refine from its task action on a selection: one layer over the selection,
    redrawn inside, transparent outside; the seed and how far it moved in the message."""
    r = scenario(krita_run, "refine_selection")
    assert r["status"] == "finished", r["error"]
    title = fx.task_title(diffusion_server.url, "refine")
    assert r["layer_name"] == f"{title} selection - tiny-sd15"
    assert r["layers"] == ["Background", r["layer_name"]] and r["doc_size"] == [64, 64]
    assert "Seed " in r["stage"] and "Moved from the input: PSNR" in r["stage"]
    layer = raw(krita_run, r["layer_file"], 64, 64, 4)
    x, y, w, h = r["selection"]
    outside = np.ones((64, 64), bool)
    outside[y:y + h, x:x + w] = False
    assert (layer[..., 3][outside] == 0).all()  # transparent outside the selection
    inside = layer[y + 4:y + h - 4, x + 4:x + w - 4]
    assert (inside[..., 3] == 255).all()
    source = raw(krita_run, r["source_file"], 64, 64, 4)
    assert not np.array_equal(inside[..., :3], source[y + 4:y + h - 4, x + 4:x + w - 4, :3])
    assert r["step_seen"]  # progress said "step n of m"


def test_tiled_refine_upscales_the_image_in_krita(krita_run,
                                                 diffusion_server: fx.LiveServer) -> None:
    r = scenario(krita_run, "tiled_refine_whole")
    assert r["status"] == "finished", r["error"]
    title = fx.task_title(diffusion_server.url, "tiled-refine")
    assert r["doc_size"] == [96, 96] and r["layer_name"] == f"{title} x2 - tiny-sd15"


def test_hypir_restores_a_selection_in_krita(krita_run,
                                           diffusion_server: fx.LiveServer) -> None:
    """HYPIR from its task action on a selection: one layer over the selection, redrawn
    inside, transparent outside, how far it moved in the message, the source untouched."""
    r = scenario(krita_run, "hypir_selection")
    assert r["status"] == "finished", r["error"]
    title = fx.task_title(diffusion_server.url, "hypir")
    assert r["layer_name"] == f"{title} selection - HYPIR_sd2"
    assert r["layers"] == ["Background", r["layer_name"]] and r["doc_size"] == [64, 64]
    assert "Moved from the input: PSNR" in r["stage"] and r["source_unchanged"]
    layer = raw(krita_run, r["layer_file"], 64, 64, 4)
    x, y, w, h = r["selection"]
    outside = np.ones((64, 64), bool)
    outside[y:y + h, x:x + w] = False
    assert (layer[..., 3][outside] == 0).all()
    inside = layer[y + 4:y + h - 4, x + 4:x + w - 4]
    assert (inside[..., 3] == 255).all()
    source = raw(krita_run, r["source_file"], 64, 64, 4)
    assert not np.array_equal(inside[..., :3], source[y + 4:y + h - 4, x + 4:x + w - 4, :3])


def test_hypir_enlarges_the_whole_image_in_krita(krita_run,
                                               diffusion_server: fx.LiveServer) -> None:
    """HYPIR at scale 2 on the whole image: the document is scaled by Krita and the result
    is one new layer of the new size on top."""
    r = scenario(krita_run, "hypir_whole")
    assert r["status"] == "finished", r["error"]
    title = fx.task_title(diffusion_server.url, "hypir")
    assert r["doc_size"] == [96, 80] and r["layer_name"] == f"{title} x2 - HYPIR_sd2"
    assert r["layers"][-1] == r["layer_name"] and r["layer_rect"] == [0, 0, 96, 80]


def test_colorize_by_instruction_on_a_selection_and_a_layer(krita_run) -> None:
    """Edit by instruction with the Colorize preset chosen as the docker's preset list does:
    on a selection, a layer named after the instruction over the selection only; on the
    whole layer, a layer of the layer's size; in both, the luminance is the photo's."""
    r = scenario(krita_run, "edit_colorize")
    assert r["preset_instruction"].startswith("Colorize this black-and-white photo")
    for key, box in (("selection", [12, 10, 24, 20]), ("layer", [0, 0, 48, 40])):
        run = r[key]
        assert run["status"] == "finished", run["error"]
        assert run["layer_name"].startswith("Colorize this black-and-white photo")
        layer = raw(krita_run, run["layer_file"], 48, 40, 4)
        source = raw(krita_run, r["source_file"], 48, 40, 4)
        x, y, w, h = box
        inside = layer[y + 3:y + h - 3, x + 3:x + w - 3].astype(np.float64)
        assert (inside[..., 3] == 255).all()
        src = source[y + 3:y + h - 3, x + 3:x + w - 3].astype(np.float64)
        luma = [0.299, 0.587, 0.114]
        assert np.abs(inside[..., :3] @ luma - src[..., :3] @ luma).max() <= 1.5
        if key == "selection":
            outside = np.ones((40, 48), bool)
            outside[y:y + h, x:x + w] = False
            assert (layer[..., 3][outside] == 0).all()


def test_reference_layers_picked_in_the_docker_reach_the_model(
        krita_run, edit_plus_server: fx.RecordingServer) -> None:
    """The edit's reference lists in the docker offer the document's other paint layers (one
    in a group, never the active one); the picked layers reach the backend whole, at their
    content's size, also for a selection, and Qwen-Image-Edit-2509 uses them; a deleted one
    is left out with a note; InstructPix2Pix says it takes one picture."""
    r = scenario(krita_run, "edit_references")
    assert r["connected"]
    assert r["listed"] == ["(none)", "Scarf", "Hat", "Background"]
    assert r["stored"]["edit"] == {"reference_1": "Hat", "reference_2": "Scarf"}
    both, one_gone, one_picture = r["both"], r["one_gone"], r["one_picture"]
    for run in (both, one_gone, one_picture):
        assert run["status"] == "finished", run["error"]
    assert both["references"] == 2 and "2 reference images used." in both["stage"]
    assert r["noticed"]  # the docker's list marks the deleted layer at the next tick
    assert one_gone["references"] == 1 and "1 reference image used." in one_gone["stage"]
    assert "Reference image 2 (Picture 3): this image has no layer 'Scarf'" in one_gone["stage"]
    hat, scarf = [12, 16, 4], [30, 24, 4]  # (h, w, channels) of the boxes painted
    assert edit_plus_server.received == [{"reference_1": hat, "reference_2": scarf},
                                         {"reference_1": hat}]
    assert one_picture["references"] == 0 and "takes one picture" in one_picture["note"]
    assert one_picture["note"] in one_picture["stage"]


def test_the_old_photo_chain_is_one_group_with_a_layer_per_stage(krita_run) -> None:
    """Restore old photo on a scratched black-and-white scan: one layer group named after
    the task, one layer per stage that ran, in the chain's order (the first stage at the
    bottom, the finished photo on top), the source untouched, a note for the skipped stage."""
    r = scenario(krita_run, "old_photo_chain")
    assert r["status"] == "finished", r["error"]
    assert r["group"] is not None and r["group"].startswith("Restore old photo")
    assert r["children_top_first"] == ["Colorized", "Denoised", "Scratches filled",
                                       "Scratches and dust"]
    assert r["source_unchanged"] and r["doc_size"] == [64, 64]
    assert "face" in r["stage"].lower()  # the faces stage was skipped, and it says so
