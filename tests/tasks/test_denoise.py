"""The denoise task: every restoration family through the real registry, model cache and
executor; strength, depth, alpha, selection, FBCNN's quality, the noise level, tiles, refusals,
cancel and progress."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from backend import masking
from backend.errors import CancelledError, InvalidParameterError
from backend.executor import run_task
from backend.model_cache import ModelCache
from backend.models.registry import Registry
from backend.tasks.context import Progress, TaskContext
from backend.tasks.denoise import SPEC
from backend.tasks.registry import discover
from backend.tasks.spec import Limits, TaskInputs
from tests.conftest import REPO
from tests.model_zoo import save_tiny

FAMILIES = ["scunet", "nafnet", "drunet", "dncnn", "fbcnn"]


@dataclass
class Zoo:
    registry: Registry
    cache: ModelCache


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    """Random-weight restoration models (and one x2 upscaler) saved once, loaded once."""
    root = tmp_path_factory.mktemp("denoise-models")
    for key in [*FAMILIES, "dncnn-gray", "fdncnn", "rcan"]:
        save_tiny(key, root)
    return Zoo(Registry([root]), ModelCache(device="cpu", precision="fp32", max_models=16))


@pytest.fixture(scope="module")
def image(face_crop: np.ndarray) -> np.ndarray:
    """A 64x56 photo crop: real texture, quick through every tiny network."""
    return np.ascontiguousarray(face_crop[16:80, 12:68])


def denoise(
    zoo: Zoo,
    key: str,
    pixels: np.ndarray,
    mask: np.ndarray | None = None,
    feather: float | None = None,
    ctx: TaskContext | None = None,
    **raw: object,
) -> np.ndarray:
    """One job as the CLI and the server run it: parse, prepare, run through the executor."""
    params = SPEC.parse_params(raw)
    entry = zoo.registry.find(f"tiny-{key}")
    inputs = TaskInputs(pixels, mask)
    SPEC.prepare(params, inputs, entry, Limits(max_output_pixels=10**8))
    result = run_task(
        SPEC, inputs, params, {"model": entry}, zoo.cache, ctx or TaskContext(), feather
    )
    (out,) = result.outputs
    assert out.name == "result" and out.title == "Denoised"
    return out.pixels


@pytest.mark.parametrize("key", FAMILIES)
def test_each_family_denoises_and_blends_by_strength(zoo: Zoo, image: np.ndarray, key: str) -> None:
    full = denoise(zoo, key, image)
    assert full.shape == image.shape and full.dtype == image.dtype
    assert not np.array_equal(full, image)  # the network did run

    untouched = denoise(zoo, key, image, strength=0.0)
    assert untouched.dtype == image.dtype and np.array_equal(untouched, image)

    half = denoise(zoo, key, image, strength=0.5)
    low, high = np.minimum(image, full), np.maximum(image, full)
    assert np.all(low <= half) and np.all(half <= high)
    expected = np.rint((image.astype(np.float64) + full) / 2)
    assert np.abs(half - expected).max() <= 1  # float32 arithmetic may round a half the other way


def test_16_bit_rgba_keeps_depth_and_alpha(zoo: Zoo, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    colour = image.astype(np.uint16) * 257
    alpha = np.linspace(0, 65535, w, dtype=np.float64)[None, :, None].repeat(h, 0)
    rgba = np.concatenate([colour, alpha.astype(np.uint16)], axis=2)
    out = denoise(zoo, "nafnet", rgba, strength=0.7)
    assert out.shape == (h, w, 4) and out.dtype == np.uint16
    assert np.array_equal(out[:, :, 3], rgba[:, :, 3])
    assert not np.array_equal(out[:, :, :3], colour)
    assert np.any(out[:, :, :3] % 257 != 0)  # results in 16-bit steps, not 8-bit ones


@pytest.mark.parametrize("alpha", [False, True], ids=["gray", "gray+alpha"])
def test_8_bit_gray_keeps_its_channels(zoo: Zoo, image: np.ndarray, alpha: bool) -> None:
    gray = image.mean(axis=2, keepdims=True).astype(np.uint8)
    pixels = np.concatenate([gray, 255 - gray], axis=2) if alpha else gray
    out = denoise(zoo, "dncnn", pixels)
    assert out.shape == pixels.shape and out.dtype == np.uint8
    assert not np.array_equal(out[:, :, :1], gray)
    if alpha:
        assert np.array_equal(out[:, :, 1], pixels[:, :, 1])


def test_gray_model_denoises_each_colour_channel(zoo: Zoo, image: np.ndarray) -> None:
    out = denoise(zoo, "dncnn-gray", image)
    assert out.shape == image.shape and not np.array_equal(out, image)
    for c in range(3):
        alone = denoise(zoo, "dncnn-gray", np.ascontiguousarray(image[:, :, c : c + 1]))
        diff = np.abs(out[:, :, c].astype(int) - alone[:, :, 0])
        assert diff.max() <= 1, c


def test_selection_is_composited_through_the_feathered_mask(zoo: Zoo, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    mask = np.zeros((h, w, 1), np.uint8)
    mask[16:48, 12:44] = 255
    whole = denoise(zoo, "dncnn", image)
    out = denoise(zoo, "dncnn", image, mask=mask, feather=4.0)
    assert out.shape == (h, w, 4) and out.dtype == np.uint8
    assert np.array_equal(out, masking.apply_selection(whole, mask, 4.0))
    assert out[:, :, 3][mask[:, :, 0] == 0].max() == 0
    assert np.all(out[22:42, 18:38, 3] == 255)
    assert np.array_equal(out[22:42, 18:38, :3], whole[22:42, 18:38])


def test_fbcnn_jpeg_quality(zoo: Zoo, image: np.ndarray) -> None:
    estimated = denoise(zoo, "fbcnn", image)
    low = denoise(zoo, "fbcnn", image, jpeg_quality=10)
    assert not np.array_equal(low, estimated)
    assert np.array_equal(low, denoise(zoo, "fbcnn", image, jpeg_quality=10))
    assert not np.array_equal(low, denoise(zoo, "fbcnn", image, jpeg_quality=90))


@pytest.mark.parametrize("key", ["drunet", "fdncnn"])
def test_noise_level_reaches_the_network(zoo: Zoo, image: np.ndarray, key: str) -> None:
    from backend.tasks import upscale
    from backend.tasks.upscale import UpscaleParams

    weak = denoise(zoo, key, image, noise_level=5.0, tile=0)
    strong = denoise(zoo, key, image, noise_level=50.0, tile=0)
    assert not np.array_equal(weak, strong)
    # at 15, its default, the hook gives what spandrel's own call gives
    default = denoise(zoo, key, image, tile=0)
    loaded = zoo.cache.get(zoo.registry.find(f"tiny-{key}"))
    own = upscale.run(image, loaded, UpscaleParams(scale=1.0, tile=0))
    assert np.array_equal(default, own)


def test_tiled_matches_the_whole_image(zoo: Zoo, image: np.ndarray) -> None:
    whole = denoise(zoo, "dncnn", image, tile=0)
    steps: list[int] = []

    def seen(p: Progress) -> None:
        if p.steps:
            steps.append(p.steps)

    tiled = denoise(zoo, "dncnn", image, ctx=TaskContext(seen), tile=32, overlap=8)
    assert max(steps) > 1  # it really ran in tiles
    diff = np.abs(tiled.astype(np.float64) - whole)
    assert diff.mean() < 1.0, diff.mean()


def test_scunet_runs_whole_unless_a_tile_is_given(zoo: Zoo, image: np.ndarray) -> None:
    def tiles(**raw: object) -> int:
        counts: list[int] = []
        ctx = TaskContext(lambda p: counts.append(p.steps) if p.steps else None)
        denoise(zoo, "scunet", image, ctx=ctx, **raw)
        return max(counts)

    assert tiles() == 1
    assert tiles(tile=48, overlap=8) > 1


def test_an_upscaler_is_refused(zoo: Zoo, image: np.ndarray) -> None:
    entry = zoo.registry.find("tiny-rcan")
    params = SPEC.parse_params({})
    with pytest.raises(InvalidParameterError, match=r"'tiny-rcan' enlarges the image x2") as e:
        SPEC.prepare(params, TaskInputs(image), entry, Limits(10**8))
    assert "Upscale" in e.value.hint
    # the run refuses it too, for a caller that skips prepare
    with pytest.raises(InvalidParameterError, match=r"'tiny-rcan'.*x1") as e:
        run_task(SPEC, TaskInputs(image), params, {"model": entry}, zoo.cache, TaskContext())
    assert "restora upscale -m tiny-rcan" in e.value.hint


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ({"strength": 2}, "strength"),
        ({"strength": -0.1}, "strength"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"jpeg_quality": 101}, "jpeg_quality"),
        ({"jpeg_quality": 50.5}, "jpeg_quality"),
        ({"noise_level": 300}, "noise_level"),
        ({"tile": 8}, "tile"),
        ({"max_output_pixels": 1}, "max_output_pixels"),
    ],
)
def test_bad_parameters_are_named(raw: dict, name: str) -> None:
    with pytest.raises(InvalidParameterError, match=rf"'?{name}'?"):
        SPEC.parse_params(raw)


def test_cancel_before_and_during_the_run(zoo: Zoo, image: np.ndarray) -> None:
    ctx = TaskContext()
    ctx.cancel.cancel()
    with pytest.raises(CancelledError):
        denoise(zoo, "dncnn", image, ctx=ctx)

    def cancel_once_denoising(p: Progress) -> None:
        if p.stage == "denoising" and p.step:
            late.cancel.cancel()

    late = TaskContext(cancel_once_denoising)
    with pytest.raises(CancelledError):
        denoise(zoo, "dncnn", image, ctx=late, tile=32, overlap=8)


def test_progress_never_goes_backwards(zoo: Zoo, image: np.ndarray) -> None:
    events: list[Progress] = []
    denoise(zoo, "dncnn", image, ctx=TaskContext(events.append), tile=32, overlap=8, strength=0.6)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    stages = {e.stage for e in events}
    assert "denoising" in stages and "upscaling" not in stages
    assert any(e.step and e.steps and e.steps > 1 for e in events)  # "tile 2 of 4"


def test_the_task_is_discovered_and_describes_itself() -> None:
    assert "denoise" in discover().ids()
    spec = discover().get("denoise")
    assert spec.model is not None and spec.model.purposes == ("Restoration",)
    assert spec.model.catalog_task == "denoise" and not spec.resizes
    fields = {f.name: f for f in spec.fields()}
    assert set(fields) == {"strength", "jpeg_quality", "noise_level", "tile", "overlap"}
    assert fields["strength"].widget == "slider" and fields["strength"].default == 1.0
    assert fields["jpeg_quality"].info.applies_to == ("FBCNN",)
    assert fields["jpeg_quality"].optional and fields["jpeg_quality"].default is None
    assert "DRUNet" in fields["noise_level"].info.applies_to
    assert fields["noise_level"].default == 15.0
    assert fields["tile"].info.advanced and fields["overlap"].info.advanced


def test_importing_the_task_imports_no_torch() -> None:
    code = "import backend.tasks.denoise, sys; assert 'torch' not in sys.modules"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(REPO), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
