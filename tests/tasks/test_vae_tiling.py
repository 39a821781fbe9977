"""The VAE works in tiles when the memory left cannot hold a whole encode/decode, or when the
model streams layer by layer (sequential offload), and whole otherwise: the plan's numbers for
real SD VAEs, and the tiny model's pipeline forced into each case through the model manager's
reported memory and tier, with the result's size and the tile borders checked."""

from __future__ import annotations

import numpy as np
import pytest

from backend.diffusion import vae_plan
from backend.diffusion.img2img import Sampling, denoise
from backend.model_cache import ModelCache
from backend.models.registry import Registry
from backend.tasks.context import TaskContext
from tests import diffusion_zoo
from tests.tasks.test_tiled_refine import border_steps

GB = 1 << 30
#: SD 1.5/2.1/SDXL's VAE: 128 channels at full resolution
SD_TOP = 128


def test_the_plan_for_real_sizes() -> None:
    # 4096x4096 in fp16 needs about 24 GiB: on a 12 GB GPU it is tiled, with tiles that fit
    big = vae_plan.plan(4096, 4096, SD_TOP, 2, 12 * GB)
    assert big.need_bytes >= 24 * GB and big.tiled
    assert vae_plan.decode_bytes(big.tile, big.tile, SD_TOP, 2) <= big.budget_bytes
    assert 1024 <= big.tile < 4096 and big.tile % vae_plan.TILE_STEP == 0
    # a native 1024 SDXL tile fits whole on that GPU, and not on a nearly full one
    assert not vae_plan.plan(1024, 1024, SD_TOP, 2, 12 * GB).tiled
    assert vae_plan.plan(1024, 1024, SD_TOP, 2, GB).tiled
    # sequential offload: the device is short, so anything above 512 px goes in tiles
    streaming = vae_plan.plan(1024, 1024, SD_TOP, 2, 12 * GB, streaming=True)
    assert streaming.tiled and streaming.tile == 512
    # never tiles smaller than MIN_TILE, and an image that small is decoded whole
    assert vae_plan.plan(2048, 2048, SD_TOP, 2, 0).tile == vae_plan.MIN_TILE
    assert not vae_plan.plan(256, 200, SD_TOP, 4, 0).tiled


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("vae-tiling")
    diffusion_zoo.sd15_checkpoint(root)
    registry = Registry([root], index_file=root / "index.json")
    cache = ModelCache(device="cpu", precision="fp32", max_models=None)
    loaded = cache.get(registry.find("tiny-sd15"))
    loaded.place("resident")
    yield loaded
    loaded.place("resident")


def _photo(h: int, w: int) -> np.ndarray:
    from skimage import data

    tiled = np.tile(data.astronaut()[::2, ::2], (2, 3, 1))  # 512 x 768
    return np.ascontiguousarray(tiled[:h, :w]).astype(np.float32) / 255


def _ctx(free_bytes: int) -> TaskContext:
    """A job context whose model manager reports `free_bytes` free (a forced small budget)."""
    ctx = TaskContext()
    ctx.models = ModelCache(device="cpu", precision="fp32", free_memory=lambda _d: free_bytes)
    return ctx


SAMPLING = Sampling("", "", 0.1, 1, 0.0, "euler", 3)


def test_low_memory_tiles_the_vae_and_plenty_runs_it_whole(model) -> None:
    image = _photo(384, 576)
    vae = model.pipeline().vae
    report: dict = {}
    low = denoise(model, image, SAMPLING, _ctx(300 << 20), report=report)
    assert report["vae"] == "tiled (256 px)" and vae.use_tiling
    assert (vae.tile_sample_min_size, vae.tile_latent_min_size) == (256, 32)
    assert low.shape == image.shape and np.isfinite(low).all()
    whole = denoise(model, image, SAMPLING, _ctx(64 * GB), report=report)
    assert report["vae"] == "whole" and not vae.use_tiling  # decided again for each call
    # diffusers blends tiles over a quarter tile, composing them every 192 px: at those rows
    # and columns the tiled result steps no more than the whole decode does at the same
    # places (the image's own edges), by the tiled refine's seam measure
    tiled_steps = border_steps(np.rint(low * 255), 192)
    whole_steps = border_steps(np.rint(whole * 255), 192)
    # (measured: mean step 19.3 tiled vs 19.6 whole, gradient 16.9 vs 18.0 levels)
    assert tiled_steps[0] < 1.25 * whole_steps[0] + 1.0, (tiled_steps, whole_steps)
    assert tiled_steps[1] < 1.25 * whole_steps[1] + 1.0, (tiled_steps, whole_steps)


def test_the_sequential_tier_slices_and_tiles_the_vae(model) -> None:
    model.place("sequential_offload")
    try:
        pipe = model.pipeline()
        assert pipe.vae.use_slicing  # the offload tiers slice (one image: no effect)
        image = _photo(320, 576)
        report: dict = {}
        out = denoise(model, image, SAMPLING, _ctx(64 * GB), report=report)
        assert report["vae"] == "tiled (512 px)" and pipe.vae.use_tiling
        assert out.shape == image.shape
    finally:
        model.place("resident")
