"""Faces keep their identity in refine and tiled refine: "lower" refines faces at a share of
the strength through the soft denoise mask (checked in the latents: at share 0 a face's latents
are the input's exactly), "restore" runs the face task afterwards with a face model from the
registry (and says so when none is installed), and a detector that cannot run is a note."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.diffusion.face_guard import Faces
from backend.errors import ModelNotFoundError
from backend.executor import run_task
from backend.model_cache import ModelCache
from backend.models.registry import Registry
from backend.tasks import refine, tiled_refine
from backend.tasks.context import TaskContext
from backend.tasks.refine import _float_rgb, resize_float
from backend.tasks.spec import Limits, TaskInputs
from tests import diffusion_zoo
from tests.model_zoo import save_tiny


@dataclass
class Zoo:
    registry: Registry
    cache: ModelCache
    bare: Registry  # the same checkpoint, no face model


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    root = tmp_path_factory.mktemp("face-protection")
    diffusion_zoo.sd15_checkpoint(root)
    bare = Registry([root], index_file=root / "bare-index.json")
    bare.entries()
    save_tiny("restoreformer", root, file_name="tiny-restoreformer")
    registry = Registry([root], index_file=root / "index.json")
    return Zoo(registry, ModelCache(device="cpu", precision="fp32", max_models=None), bare)


@pytest.fixture(scope="module")
def portrait(astronaut: np.ndarray) -> np.ndarray:
    """128x128 with the astronaut's face about 50 px across, near the middle."""
    return np.ascontiguousarray(astronaut[::2, ::2][:128, 40:168])


def run(zoo: Zoo, spec, pixels: np.ndarray, registry: Registry | None = None, **raw):
    registry = registry or zoo.registry
    params = spec.parse_params({"steps": 2, "seed": 9, **raw})
    entries = {"model": registry.find("tiny-sd15")}
    for key, (name, _slot) in spec.helper_models(params).items():
        entries[key] = registry.find(name)
    inputs = TaskInputs(pixels)
    spec.prepare(params, inputs, entries["model"], Limits(10**8))
    ctx = TaskContext()
    ctx.registry = registry
    return run_task(spec, inputs, params, entries, zoo.cache, ctx)


def test_a_face_is_a_soft_ellipse_over_its_box() -> None:
    faces = Faces([(40.0, 40.0, 80.0, 80.0)])
    weight = faces.weight((0, 120, 0, 120))
    assert weight.shape == (120, 120) and weight.dtype == np.float32
    assert weight[58, 60] == 1.0 and weight[0, 0] == 0.0 and weight[60, 119] == 0.0
    row = weight[58, 60:120]
    assert np.all(np.diff(row) <= 0) and 0 < row[25] < 1  # falls off smoothly, no edge
    scale = faces.strength_scale((0, 120, 0, 120), 0.25)
    assert scale[58, 60] == pytest.approx(0.25) and scale[0, 0] == 1.0
    assert faces.weight((100, 120, 100, 120)) is None  # a rectangle no face reaches
    assert faces.scaled(2, 2).boxes == [(80.0, 80.0, 160.0, 160.0)]


def test_lower_keeps_a_face_s_latents_at_share_zero(zoo: Zoo, portrait: np.ndarray) -> None:
    model = zoo.cache.get(zoo.registry.find("tiny-sd15"))
    vae = model.pipeline().vae
    decoded: list[torch.Tensor] = []
    hook = vae.post_quant_conv.register_forward_pre_hook(
        lambda _m, args: decoded.append(args[0].detach().clone())
    )
    try:
        result = run(zoo, refine.SPEC, portrait, face_strength=0.0, strength=0.6)
    finally:
        hook.remove()
    assert result.details["faces"] == {"mode": "lower", "found": 1, "strength": 0.0}
    work = resize_float(_float_rgb(portrait, 255.0), 64, 64)
    with torch.no_grad():
        pixels = torch.from_numpy(work.transpose(2, 0, 1).copy())[None] * 2 - 1
        init = vae.encode(pixels).latent_dist.mean
    # the task's denoise mask at latent size: the face's strength scale, as the task builds it
    from backend.diffusion.face_guard import find_faces

    faces = find_faces(TaskContext(), portrait)
    scale = faces.strength_scale((0, 128, 0, 128), 0.0)
    latent_mask = torch.nn.functional.interpolate(
        torch.from_numpy(resize_float(scale[:, :, None], 64, 64)[:, :, 0])[None, None],
        size=(8, 8), mode="area",
    )[0, 0]  # fmt: skip
    kept, free = latent_mask == 0, latent_mask == 1
    assert kept.sum() >= 2 and free.sum() >= 20
    final = decoded[-1][0]
    torch.testing.assert_close(final[:, kept], init[0][:, kept], atol=1e-5, rtol=0)
    assert (final[:, free] - init[0][:, free]).abs().mean() > 0.05  # the rest was redrawn


def test_without_faces_lower_is_the_same_as_off(zoo: Zoo, astronaut: np.ndarray) -> None:
    sky = np.ascontiguousarray(astronaut[::4, ::4][80:128, 0:48])
    lower = run(zoo, tiled_refine.SPEC, sky)
    off = run(zoo, tiled_refine.SPEC, sky, face_protection="off")
    assert lower.details["faces"]["found"] == 0
    np.testing.assert_array_equal(lower.outputs[0].pixels, off.outputs[0].pixels)


def test_lower_in_tiled_refine_changes_faces_less(zoo: Zoo, portrait: np.ndarray) -> None:
    image = np.ascontiguousarray(portrait[::2, ::2])  # 64x64, the face about 26 px
    lower = run(zoo, tiled_refine.SPEC, image, strength=0.6, face_strength=0.0)
    off = run(zoo, tiled_refine.SPEC, image, strength=0.6, face_protection="off")
    again = run(zoo, tiled_refine.SPEC, image, strength=0.6, face_strength=0.0, seed=10)
    assert lower.details["faces"]["found"] == 1
    # the face's core hardly depends on the seed (nothing is sampled there; only the tiny
    # VAE's global attention carries the rest in), while off redraws it (measured: 17 levels
    # between two seeds against 32)
    core = (slice(48, 72), slice(56, 88))  # the upscaled face's middle, 128x128 result
    off_again = run(zoo, tiled_refine.SPEC, image, strength=0.6, face_protection="off", seed=10)

    def spread(x, y) -> float:
        return float(
            np.abs(x.outputs[0].pixels[core].astype(float) - y.outputs[0].pixels[core]).mean()
        )

    assert spread(lower, again) < 0.7 * spread(off, off_again), (
        spread(lower, again), spread(off, off_again)
    )  # fmt: skip


def test_restore_runs_the_face_model_after_refining(zoo: Zoo, portrait: np.ndarray) -> None:
    off = run(zoo, refine.SPEC, portrait, face_protection="off")
    restored = run(zoo, refine.SPEC, portrait, face_protection="restore")
    assert restored.details["faces_restored"] == 1
    assert restored.details["face_model"] == "tiny-restoreformer"
    changed = np.any(restored.outputs[0].pixels != off.outputs[0].pixels, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.any() and 30 < xs.mean() < 100 and 20 < ys.mean() < 100  # the face only
    assert not changed[:10].any() and not changed[:, :20].any()
    named = run(zoo, refine.SPEC, portrait, face_protection="restore",
                face_model="tiny-restoreformer")  # fmt: skip
    np.testing.assert_array_equal(named.outputs[0].pixels, restored.outputs[0].pixels)


def test_restore_without_a_face_model_is_a_note(zoo: Zoo, portrait: np.ndarray) -> None:
    result = run(zoo, refine.SPEC, portrait, registry=zoo.bare, face_protection="restore")
    assert result.outputs[0].pixels.shape == portrait.shape
    assert "no face model is installed" in result.message
    assert "faces_restored" not in result.details


def test_a_detector_that_cannot_run_is_a_note(
    zoo: Zoo, portrait: np.ndarray, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def missing(*_a, **_k):
        raise ModelNotFoundError("The face detection model x.tflite was not found.", "")

    monkeypatch.setattr(zoo.cache, "detector", missing)
    result = run(zoo, refine.SPEC, portrait)
    assert result.details["faces"]["found"] == 0
    assert "could not run" in result.details["faces"]["note"]
    assert result.outputs[0].pixels.shape == portrait.shape
