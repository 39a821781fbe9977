"""Tiled refine (Ultimate SD Upscale) with a tiny random-weight SD 1.5 checkpoint: every seam
fix on an image several tiles wide, measured for steps along the tile borders; the SR model
from the registry; strength 0; the output-size refusal."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from backend.diffusion import usdu
from backend.errors import ImageTooLargeError
from backend.executor import run_task
from backend.imaging import resize
from backend.model_cache import ModelCache
from backend.models.registry import Registry
from backend.tasks import tiled_refine
from backend.tasks.context import Progress, TaskContext
from backend.tasks.spec import Limits, TaskInputs
from tests import diffusion_zoo
from tests.model_zoo import save_tiny

TILE = diffusion_zoo.NATIVE


@dataclass
class Zoo:
    registry: Registry
    cache: ModelCache


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    root = tmp_path_factory.mktemp("tiled-refine-models")
    diffusion_zoo.sd15_checkpoint(root)
    save_tiny("compact", root, file_name="tiny-x4")
    registry = Registry([root], index_file=root / "index.json")
    return Zoo(registry, ModelCache(device="cpu", precision="fp32", max_models=None))


@pytest.fixture(scope="module")
def photo(astronaut: np.ndarray) -> np.ndarray:
    """96x144 of a real photo: x2 makes 3x4.5 tiles of 64 px."""
    return np.ascontiguousarray(astronaut[::3, ::3][20:116, 10:154])


def run(zoo: Zoo, pixels: np.ndarray, ctx: TaskContext | None = None, **raw: object):
    params = tiled_refine.SPEC.parse_params({"steps": 2, "seed": 7, **raw})
    entries = {"model": zoo.registry.find("tiny-sd15")}
    for key, (name, _slot) in tiled_refine.SPEC.helper_models(params).items():
        entries[key] = zoo.registry.find(name)
    inputs = TaskInputs(pixels)
    tiled_refine.SPEC.prepare(params, inputs, entries["model"], Limits(10**8))
    return run_task(tiled_refine.SPEC, inputs, params, entries, zoo.cache, ctx or TaskContext())


def border_steps(image: np.ndarray, tile: int) -> tuple[float, float, float, float]:
    """(mean step, gradient) at the tile borders and (their medians) inside the tiles.

    The mean step at column x: the mean of the 4 columns after x minus the 4 before, per
    row, absolute, averaged; the gradient: |I[:, x] - I[:, x-1]| averaged. Rows likewise."""
    x = image.astype(np.float64).mean(axis=2)

    def along(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cs = np.cumsum(np.pad(a, ((0, 0), (1, 0))), axis=1)
        pos = np.arange(4, a.shape[1] - 4)
        before = (cs[:, pos] - cs[:, pos - 4]) / 4
        after = (cs[:, pos + 4] - cs[:, pos]) / 4
        step = np.abs(after - before).mean(axis=0)
        grad = np.abs(a[:, pos] - a[:, pos - 1]).mean(axis=0)
        return pos, np.stack([step, grad])

    out = []
    for a in (x, x.T):
        pos, (step, grad) = along(a)
        border = pos % tile == 0
        out.append((step[border].mean(), grad[border].mean(), np.median(step[~border]),
                    np.median(grad[~border])))  # fmt: skip
    return tuple(np.mean(out, axis=0))


@pytest.mark.parametrize("seam_fix", usdu.SEAM_FIXES)
def test_no_step_along_the_tile_borders_in_any_seam_fix_mode(
    zoo: Zoo, photo: np.ndarray, seam_fix: str
) -> None:
    result = run(zoo, photo, seam_fix=seam_fix, strength=0.5, padding=16)
    out = result.outputs[0].pixels
    assert out.shape == (192, 288, 3) and out.dtype == np.uint8
    assert result.details["tiles"] == 3 * 5
    assert (result.details["seam_jobs"] > 0) == (seam_fix != "none")
    step, grad, step_inside, grad_inside = border_steps(out, TILE)
    assert step < 1.5 * step_inside + 1.0, (step, step_inside)
    assert grad < 1.5 * grad_inside + 1.0, (grad, grad_inside)
    lanczos = resize(photo, 288, 192)
    assert np.abs(out.astype(float) - lanczos).mean() > 1.0  # the tiles were redrawn


def test_chess_order_sr_model_and_progress_by_tile(zoo: Zoo, photo: np.ndarray) -> None:
    seen: list[Progress] = []
    result = run(zoo, photo[:64, :64], TaskContext(seen.append), order="chess",
                 upscale_model="tiny-x4", scale=2.0)  # fmt: skip
    assert result.outputs[0].pixels.shape == (128, 128, 3)
    stages = [p.stage for p in seen if p.step is not None and p.stage.startswith("tile")]
    assert stages[0] == "tile 1 of 4" and "tile 4 of 4" in stages
    assert any(p.stage == "upscaling" for p in seen)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert 0 < result.details["fidelity"]["psnr_db"] < 100


def test_strength_zero_gives_the_upscaled_input(zoo: Zoo, photo: np.ndarray) -> None:
    result = run(zoo, photo[:32, :48], strength=0.0)
    np.testing.assert_array_equal(result.outputs[0].pixels, resize(photo[:32, :48], 96, 64))


def test_a_result_too_large_is_refused_before_queueing(zoo: Zoo, photo: np.ndarray) -> None:
    params = tiled_refine.SPEC.parse_params({"scale": 8.0})
    with pytest.raises(ImageTooLargeError) as refused:
        tiled_refine.SPEC.prepare(params, TaskInputs(photo), None, Limits(100_000))
    assert "megapixels" in refused.value.message


def test_every_job_mask_covers_the_image_once_tiles_are_done() -> None:
    jobs = usdu.main_jobs(150, 200, 64, "chess")
    cover = np.zeros((150, 200))
    for job in jobs:
        t, b, left, r = job.rect
        cover[t:b, left:r] += 1
    assert (cover == 1).all()
    seams = usdu.seam_jobs(150, 200, 64, "half_tile_intersections", 32)
    assert sum(j.kind == "corner" for j in seams) == 2 * 3
