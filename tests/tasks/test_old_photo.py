"""The old-photo tools on real photographs with random-weight DDColor, LaMa and MAT loaded
through the real registry and model store: colorize keeps the luminance, inpaint changes
nothing outside the mask, the defect finder's mask, and the whole chain stage by stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend.executor import run_task
from backend.model_cache import ModelCache
from backend.models.registry import Registry
from backend.tasks import colorize, defects, inpaint, restore_old_photo
from backend.tasks.context import TaskContext
from backend.tasks.spec import Limits, TaskInputs, TaskResult, TaskSpec
from tests.defect_samples import draw_defects
from tests.model_zoo import save_tiny


@dataclass
class Zoo:
    registry: Registry
    store: ModelCache


@pytest.fixture(scope="module")
def zoo(old_photo_models: Path, face_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    """DDColor, LaMa and MAT, a face model, and tiny denoise and upscale networks."""
    import shutil

    root = tmp_path_factory.mktemp("old-photo-zoo")
    for folder in ("colorization", "inpaint"):
        shutil.copytree(old_photo_models / folder, root / folder)
    (root / "facerestore_models").mkdir()
    face = face_models / "facerestore_models" / "random-restoreformer.safetensors"
    shutil.copy(face, root / "facerestore_models" / face.name)
    save_tiny("dncnn", root)
    save_tiny("compact", root)
    return Zoo(Registry([root]), ModelCache(device="cpu", precision="fp32", max_models=8))


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.camera()[::4, ::4, None])  # 128x128 gray


def job(
    zoo: Zoo,
    spec: TaskSpec,
    pixels: np.ndarray,
    model: str | None = None,
    mask: np.ndarray | None = None,
    **raw: Any,
) -> TaskResult:
    """One job as the CLI and the server run it: parse, prepare, the executor, the registry."""
    params = spec.parse_params(raw)
    inputs = TaskInputs(pixels, mask)
    entries = {"model": zoo.registry.find(model)} if model else {}
    if spec.prepare is not None:
        spec.prepare(params, inputs, entries.get("model"), Limits(10**8))
    ctx = TaskContext()
    ctx.registry = zoo.registry
    return run_task(spec, inputs, params, entries, zoo.store, ctx)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ np.array(colorize.LUMA)


# --- colorize --------------------------------------------------------------------------------


def test_colorize_adds_colour_and_keeps_the_luminance_within_one_level(
    zoo: Zoo, camera: np.ndarray
) -> None:
    result = job(zoo, colorize.SPEC, camera, "random-ddcolor", saturation=2.0)
    (out,) = result.outputs
    assert out.pixels.shape == (*camera.shape[:2], 3) and out.pixels.dtype == np.uint8
    assert result.details["input"] == "gray" and result.details["working_size"] == [256, 256]
    chroma = out.pixels.astype(int).max(axis=2) - out.pixels.astype(int).min(axis=2)
    assert chroma.mean() > 2  # the random network paints something
    assert np.abs(_luma(out.pixels) - camera[..., 0]).max() <= 1.0


def test_colorize_recognises_black_and_white_stored_as_rgb_in_16_bit(
    zoo: Zoo, camera: np.ndarray
) -> None:
    rgb16 = np.repeat(camera, 3, axis=2).astype(np.uint16) * 257
    result = job(zoo, colorize.SPEC, rgb16, "random-ddcolor")
    (out,) = result.outputs
    assert result.details["input"] == "monochrome" and out.pixels.dtype == np.uint16
    assert np.abs(_luma(out.pixels) - camera[..., 0].astype(np.float64) * 257).max() <= 1.0
    grey = job(zoo, colorize.SPEC, rgb16, "random-ddcolor", saturation=0.0).outputs[0].pixels
    assert np.array_equal(grey, rgb16)  # no colour asked: the photo itself


def test_colorize_in_lab_takes_the_models_colours_over_the_photos_lightness(
    zoo: Zoo, camera: np.ndarray
) -> None:
    lab = job(zoo, colorize.SPEC, camera, "random-ddcolor", keep_luminance=False).outputs[0]
    ycc = job(zoo, colorize.SPEC, camera, "random-ddcolor").outputs[0]
    assert lab.pixels.shape == ycc.pixels.shape and not np.array_equal(lab.pixels, ycc.pixels)
    flat = job(
        zoo, colorize.SPEC, camera, "random-ddcolor", keep_luminance=False, saturation=0.0
    ).outputs[0]
    assert np.abs(flat.pixels.astype(int) - camera.astype(int)).max() <= 1  # lightness alone


# --- inpaint ---------------------------------------------------------------------------------


def _holes(shape: tuple[int, ...]) -> np.ndarray:
    """Two specks, a thin scratch and a blob, as a gray mask."""
    import cv2

    mask = np.zeros(shape[:2], np.uint8)
    cv2.circle(mask, (20, 24), 3, 255, -1)
    cv2.circle(mask, (100, 30), 2, 255, -1)
    cv2.line(mask, (10, 110), (118, 70), 255, 2)
    mask[60:72, 40:56] = 255
    return mask[..., None]


@pytest.mark.parametrize("model", ["random-lama", "random-mat"])
def test_inpaint_fills_the_holes_and_changes_nothing_else(
    zoo: Zoo, camera: np.ndarray, model: str
) -> None:
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut()[::4, ::4])  # 128x128 RGB
    mask = _holes(photo.shape)
    result = job(zoo, inpaint.SPEC, photo, model, mask=mask)
    (out,) = result.outputs
    assert out.overlay and out.pixels.shape == (128, 128, 4)
    holes = mask[..., 0] > 0
    assert np.array_equal(out.pixels[..., 3], mask[..., 0])  # the mask itself: no soft edge
    from backend.cli.tasks import over

    filled = over(photo, out.pixels)
    assert np.array_equal(filled[~holes], photo[~holes])  # bit-identical outside the mask
    assert np.any(filled[holes] != photo[holes])
    assert result.details["filled_pixels"] == int(holes.sum())


def test_a_hole_larger_than_the_working_size_is_filled_window_by_window(zoo: Zoo) -> None:
    from skimage import data

    photo = np.ascontiguousarray(data.coffee()[:200, :300])
    mask = np.zeros((200, 300, 1), np.uint8)
    mask[90:96, 5:295] = 255  # a scratch across the whole photo
    crops = inpaint.plan_crops(mask[..., 0] > 0, side=96, context=16)
    assert len(crops) > 1 and all(inpaint._side(c.box) <= 96 for c in crops)
    covered = np.zeros((200, 300), int)
    for c in crops:
        x0, y0, x1, y1 = c.box
        covered[y0:y1, x0:x1] += c.holes
    assert np.array_equal(covered, (mask[..., 0] > 0).astype(int))  # each hole pixel once
    out = job(zoo, inpaint.SPEC, photo, "random-lama", mask=mask, working_size=96, context=16)
    (layer,) = out.outputs
    assert out.details["regions"] == len(crops)
    assert not layer.pixels[..., 3][mask[..., 0] == 0].any()


# --- defects ---------------------------------------------------------------------------------


def test_defects_marks_drawn_damage_as_an_8_bit_mask(zoo: Zoo) -> None:
    from skimage import data

    damaged, truth = draw_defects(data.camera()[:256, :256], seed=3)
    result = job(zoo, defects.SPEC, damaged[..., None])
    (out,) = result.outputs
    assert out.name == "defects" and out.pixels.dtype == np.uint8 and out.pixels.shape[2] == 1
    assert set(np.unique(out.pixels)) <= {0, 255} and result.details["flagged"] > 0
    found = out.pixels[..., 0] > 0
    assert (found & truth).sum() > 0.3 * truth.sum()
    strict = job(zoo, defects.SPEC, damaged[..., None], sensitivity=0.0).outputs[0].pixels
    assert (strict > 0).sum() < found.sum()  # sensitivity: less is found at 0


def test_defects_proposes_only_inside_a_selection(zoo: Zoo) -> None:
    from skimage import data

    damaged, _ = draw_defects(data.camera()[:256, :256], seed=3)
    selection = np.zeros((256, 256, 1), np.uint8)
    selection[:128] = 255
    out = job(zoo, defects.SPEC, damaged[..., None], mask=selection).outputs[0].pixels
    assert out[128:].max() == 0 and out[:128].max() == 255


# --- the chain -------------------------------------------------------------------------------


def test_the_chain_runs_every_stage_and_returns_each_stages_image_in_order(
    zoo: Zoo, camera: np.ndarray
) -> None:
    damaged, _ = draw_defects(camera[..., 0], seed=5)
    result = job(zoo, restore_old_photo.SPEC, damaged[..., None], scale=2.0)
    names = [o.name for o in result.outputs]
    assert names == ["defects", "inpainted", "denoised", "faces", "colorized", "upscaled"]
    assert result.details["notes"].get("inpaint") is None, result.details
    assert set(result.details["models"]) == {"inpaint", "denoise", "faces", "colorize", "upscale"}
    by_name = {o.name: o.pixels for o in result.outputs}
    holes = by_name["defects"][..., 0] > 0
    inpainted = by_name["inpainted"]
    assert np.array_equal(inpainted[~holes], damaged[..., None][~holes])
    assert np.any(inpainted[holes] != damaged[..., None][holes])
    assert by_name["colorized"].shape == (128, 128, 3)
    assert by_name["upscaled"].shape == (256, 256, 3)
    assert result.outputs[-1].name == "upscaled"  # the final photo is the last output


def test_a_stage_without_a_model_is_skipped_with_a_note(camera: np.ndarray, tmp_path: Path) -> None:
    save_tiny("dncnn", tmp_path)
    zoo = Zoo(Registry([tmp_path]), ModelCache(device="cpu", precision="fp32"))
    result = job(zoo, restore_old_photo.SPEC, camera, defects=False, faces=False)
    assert [o.name for o in result.outputs] == ["denoised"]
    notes = result.details["notes"]
    assert "no model installed" in notes["colorize"] and "no model installed" in notes["upscale"]
    assert notes["faces"] == "turned off" and "no model installed" in notes["inpaint"]
