"""Refine and the diffusion model files: tiny random-weight Stable Diffusion models saved as
users have them (an SD 1.5 single-file checkpoint with the original key names, an SDXL
diffusers folder, a VAE, a LoRA), listed and loaded through the real registry and manager."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.diffusion.colour import fidelity, wavelet_fix
from backend.errors import CancelledError, OutOfMemoryError
from backend.executor import run_task
from backend.model_cache import ModelCache
from backend.models.registry import Registry
from backend.tasks import refine
from backend.tasks.context import Progress, TaskContext
from backend.tasks.spec import Limits, TaskInputs
from tests import diffusion_zoo


@dataclass
class Zoo:
    root: Path
    registry: Registry
    cache: ModelCache


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    root = tmp_path_factory.mktemp("diffusion-models")
    diffusion_zoo.sd15_checkpoint(root)
    diffusion_zoo.sdxl_folder(root)
    diffusion_zoo.vae_file(root)
    diffusion_zoo.lora_file(root)
    (root / "checkpoints" / "broken.safetensors").write_bytes(b"not a model at all")
    registry = Registry([root], index_file=root / "index.json")
    return Zoo(root, registry, ModelCache(device="cpu", precision="fp32", max_models=None))


@pytest.fixture(scope="module")
def photo(face_crop: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(face_crop[:64, :56])


def run(zoo: Zoo, pixels: np.ndarray, mask=None, ctx=None, model="tiny-sd15", **raw):
    params = refine.SPEC.parse_params({"steps": 2, **raw})
    entries = {"model": zoo.registry.find(model)}
    for key, (name, _slot) in refine.SPEC.helper_models(params).items():
        entries[key] = zoo.registry.find(name)
    inputs = TaskInputs(pixels, mask)
    refine.SPEC.prepare(params, inputs, entries["model"], Limits(10**8))
    return run_task(refine.SPEC, inputs, params, entries, zoo.cache, ctx or TaskContext())


def test_the_registry_lists_each_file_with_its_family_and_memory(zoo: Zoo) -> None:
    rows = {e.name: e for e in zoo.registry.entries(refresh=True)}
    assert (rows["tiny-sd15"].architecture, rows["tiny-sd15"].purpose) == ("SD1.5", "Diffusion")
    assert rows["tiny-sd15"].tags == ["single_file", "epsilon"] and rows["tiny-sd15"].usable
    assert (rows["tiny-sdxl"].architecture, rows["tiny-sdxl"].tags) == (
        "SDXL",
        ["diffusers_folder"],
    )
    assert rows["tiny-vae"].purpose == "VAE" and rows["tiny-lora"].purpose == "LoRA"
    for name in ("tiny-sd15", "tiny-sdxl"):
        assert rows[name].memory_bytes > 1 << 30  # weights plus a step's working memory
    assert not rows["broken"].usable and "safetensors" in rows["broken"].reason
    assert not any(e.path.endswith("config.json") for e in rows.values())  # a folder is one model


def test_a_single_file_checkpoint_loads_through_diffusers_conversion(zoo: Zoo) -> None:
    model = zoo.cache.get(zoo.registry.find("tiny-sd15"))
    assert model.family == "SD1.5" and model.native_size == diffusion_zoo.NATIVE
    reference = diffusion_zoo.sd15_parts()
    for name in ("unet", "vae", "text_encoder"):
        want, got = reference[name].state_dict(), model.components[name].state_dict()
        assert want.keys() == got.keys(), name
        for key, value in want.items():
            assert torch.equal(value, got[key].reshape(value.shape)), (name, key)


def test_seeds_reproduce_and_a_random_seed_is_reported(zoo: Zoo, photo: np.ndarray) -> None:
    first = run(zoo, photo)
    seed = first.details["seed"]
    assert isinstance(seed, int) and first.details["family"] == "SD1.5"
    again = run(zoo, photo, seed=seed)
    np.testing.assert_array_equal(first.outputs[0].pixels, again.outputs[0].pixels)
    other = run(zoo, photo, seed=(seed + 1) % 2**32)
    assert not np.array_equal(first.outputs[0].pixels, other.outputs[0].pixels)
    f = first.details["fidelity"]
    assert 0 < f["psnr_db"] < 100 and -1 <= f["ssim"] <= 1 and 0 < f["changed_share"] <= 1


def test_strength_zero_gives_the_input_back(zoo: Zoo, photo: np.ndarray) -> None:
    result = run(zoo, photo, strength=0.0)
    np.testing.assert_array_equal(result.outputs[0].pixels, photo)
    assert result.details["fidelity"] == {"psnr_db": 100.0, "ssim": 1.0, "changed_share": 0.0}


def test_outside_the_selection_every_pixel_is_the_input(zoo: Zoo, astronaut: np.ndarray) -> None:
    image = np.ascontiguousarray(astronaut[::4, ::4][:128, :128])
    mask = np.zeros((128, 128, 1), np.uint8)
    mask[40:70, 50:80] = 255
    result = run(zoo, image, mask=mask, seed=4, denoise_feather=6)
    out = result.outputs[0].pixels
    assert result.outputs[0].overlay and out.shape == (128, 128, 4)
    x, y, w, h = result.details["region"]
    assert w < 128 and h < 128  # only the selection's region was re-rendered
    outside = np.ones((128, 128), bool)
    outside[y : y + h, x : x + w] = False
    np.testing.assert_array_equal(out[..., :3][outside], image[outside])
    assert not out[..., 3][outside].any()
    assert np.any(out[45:65, 55:75, :3] != image[45:65, 55:75])


def test_progress_per_step_and_cancel_stops_before_decoding(zoo: Zoo, photo: np.ndarray) -> None:
    seen: list[Progress] = []
    run(zoo, photo, ctx=TaskContext(seen.append), steps=3, seed=1)
    assert [(p.step, p.steps) for p in seen if p.stage == "denoising"] == [(1, 3), (2, 3), (3, 3)]

    model = zoo.cache.get(zoo.registry.find("tiny-sd15"))
    decodes: list[int] = []
    hook = model.components["vae"].decoder.register_forward_hook(lambda *a: decodes.append(1))
    ctx = TaskContext(None)

    def report(p: Progress) -> None:
        if p.step == 1:
            ctx.cancel.cancel()

    ctx._root.report = report
    try:
        with pytest.raises(CancelledError):
            run(zoo, photo, ctx=ctx, steps=4, seed=1)
    finally:
        hook.remove()
    assert decodes == []  # stopped between steps: the VAE never decoded


def test_sdxl_folder_lora_and_separate_vae_run(zoo: Zoo, photo: np.ndarray) -> None:
    sdxl = run(zoo, photo, model="tiny-sdxl", seed=2)
    assert sdxl.details["family"] == "SDXL" and sdxl.outputs[0].pixels.shape == photo.shape
    plain = run(zoo, photo, seed=2).outputs[0].pixels
    with_lora = run(zoo, photo, seed=2, lora="tiny-lora", lora_weight=1.0).outputs[0].pixels
    assert not np.array_equal(plain, with_lora)
    np.testing.assert_array_equal(plain, run(zoo, photo, seed=2).outputs[0].pixels)  # removed after
    own_vae = run(zoo, photo, seed=2, vae="tiny-vae").outputs[0].pixels
    assert not np.array_equal(plain, own_vae)


def test_the_colour_fix_keeps_each_region_mean(zoo: Zoo, photo: np.ndarray) -> None:
    fixed = run(zoo, photo, seed=5, strength=0.6).outputs[0].pixels.astype(np.float64)
    raw = run(zoo, photo, seed=5, strength=0.6, colour_fix="none").outputs[0].pixels.astype(float)
    src = photo.astype(np.float64)

    def drift(x: np.ndarray) -> float:  # the largest shift of a channel's mean, in levels
        return float(np.abs(x.mean(axis=(0, 1)) - src.mean(axis=(0, 1))).max())

    assert drift(fixed) < 3.0
    assert drift(raw) > 3 * drift(fixed)  # random weights drift far without the fix
    adain = run(zoo, photo, seed=5, strength=0.6, colour_fix="adain").outputs[0].pixels
    assert np.abs(adain.astype(float).mean(axis=(0, 1)) - src.mean(axis=(0, 1))).max() < 3.0


def test_wavelet_fix_and_fidelity_on_known_images() -> None:
    rng = np.random.default_rng(0)
    source = rng.random((64, 64, 3)).astype(np.float32) * 0.5 + 0.25
    shifted = np.clip(source + 0.2, 0, 1)
    assert np.abs(wavelet_fix(shifted, source).mean() - source.mean()) < 0.01
    same = fidelity(source, source, 1.0)
    assert same == {"psnr_db": 100.0, "ssim": 1.0, "changed_share": 0.0}
    moved = fidelity(shifted, source, 1.0)
    assert moved["psnr_db"] < 20 and moved["changed_share"] > 0.9


def test_a_model_too_large_for_this_computer_is_refused_with_what_it_needs(zoo: Zoo) -> None:
    entry = dataclasses.replace(zoo.registry.find("tiny-sd15"), memory_bytes=1 << 50)
    params = refine.SPEC.parse_params({})
    with pytest.raises(OutOfMemoryError) as refused:
        refine.SPEC.prepare(params, TaskInputs(np.zeros((8, 8, 3), np.uint8)), entry, Limits(10**8))
    assert "needs 2,147,483,648.0 MB" in refused.value.message


def test_without_the_extra_the_task_says_what_to_install() -> None:
    spec = dataclasses.replace(refine.SPEC, requires=("diffusers", "restora_no_such_module"))
    ok, why = spec.availability()
    assert not ok and "restora[diffusion]" in why and "restora_no_such_module" in why


def test_a_cpu_with_bf16_instructions_runs_diffusion_in_bf16(
    zoo: Zoo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auto on a CPU: bf16 where it computes in bf16 (AVX-512 BF16 or AMX; twice as fast for
    SD 1.5 on a Zen 4), fp32 where bf16 would be emulated; GPUs keep fp16; a named precision
    is what runs. A model loaded in bf16 on such a CPU refines a photo to a finite result."""
    from backend import devices
    from backend.diffusion import loading

    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_bf16_instructions", lambda: {"avx512_bf16"})
    assert loading.run_dtype(cpu, "auto") == torch.bfloat16
    assert loading.run_dtype(torch.device("cuda"), "auto") == torch.float16
    assert loading.run_dtype(cpu, "fp32") == torch.float32
    monkeypatch.setattr(devices, "cpu_bf16_instructions", lambda: set())
    assert loading.run_dtype(cpu, "auto") == torch.float32
    assert loading.run_dtype(cpu, "bf16") == torch.bfloat16

    cache = ModelCache(device="cpu", precision="bf16", max_models=None)
    params = refine.SPEC.parse_params({"seed": 3, "steps": 2, "strength": 0.5,
                                       "face_protection": "off"})  # fmt: skip
    photo = (np.random.default_rng(5).random((48, 64, 3)) * 255).astype(np.uint8)
    entry = zoo.registry.find("tiny-sd15")
    result = run_task(refine.SPEC, TaskInputs(photo), params, {"model": entry}, cache,
                      TaskContext())  # fmt: skip
    assert cache.get(entry).precision_label == "bf16"
    out = result.outputs[0].pixels
    assert out.shape == photo.shape and out.dtype == np.uint8 and np.any(out != photo)
