"""HYPIR with a tiny random-weight SD 2.1-style base (a diffusers folder in checkpoints/) and a
tiny LoRA saved as HYPIR saves HYPIR_sd2.pth (peft keys on HYPIR's target layers), found,
paired and loaded through the real registry, model manager and executor."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.diffusion import hypir_files
from backend.diffusion.hypir_model import TIMESTEP
from backend.diffusion.hypir_restore import predicted_x0, ramp, starts, window
from backend.errors import (
    CancelledError,
    ImageTooLargeError,
    ModelFormatError,
    ModelNotFoundError,
    OutOfMemoryError,
)
from backend.executor import run_task
from backend.jobs import JobManager
from backend.model_cache import ModelCache
from backend.model_choice import choose_model
from backend.models.registry import Registry
from backend.settings import Settings
from backend.tasks import hypir
from backend.tasks.context import Progress, TaskContext
from backend.tasks.spec import Limits, TaskInputs
from tests import diffusion_zoo
from tests.tasks.test_tiled_refine import border_steps

#: small patches so an image a few dozen pixels wide is several patches wide
SMALL = {"tile": 64, "stride": 32}


@dataclass
class Zoo:
    root: Path
    registry: Registry
    cache: ModelCache


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    root = diffusion_zoo.hypir_models(tmp_path_factory.mktemp("hypir-models"))
    registry = Registry([root], index_file=root / "index.json")
    return Zoo(root, registry, ModelCache(device="cpu", precision="fp32", max_models=None))


@pytest.fixture(scope="module")
def photo(astronaut: np.ndarray) -> np.ndarray:
    """96x160 of a real photo: with 64 px tiles at stride 32, a grid of 2 x 4 patches."""
    return np.ascontiguousarray(astronaut[::3, ::3][16:112, 0:160])


def run(zoo: Zoo, pixels: np.ndarray, ctx: TaskContext | None = None, **raw: object):
    params = hypir.SPEC.parse_params({**SMALL, **raw})
    entry = zoo.registry.find("HYPIR_sd2")
    inputs = TaskInputs(pixels)
    hypir.SPEC.prepare(params, inputs, entry, Limits(10**8))
    return run_task(hypir.SPEC, inputs, params, {"model": entry}, zoo.cache, ctx or TaskContext())


def task_info(registry: Registry, cache: ModelCache):
    jobs = JobManager(Settings(), registry, cache, publish=lambda *a: None)
    return next(i for i in jobs.task_infos() if i.task == "hypir")


# --- files ---------------------------------------------------------------------------------


def test_the_lora_is_paired_with_its_sd21_base_and_the_task_is_available(zoo: Zoo) -> None:
    rows = {e.name: e for e in zoo.registry.entries(refresh=True)}
    lora, base = rows["HYPIR_sd2"], rows["tiny-sd21-base"]
    assert (lora.folder, lora.purpose, lora.usable) == ("HYPIR", "HYPIR", True)
    assert (base.architecture, base.purpose) == ("SD2.1", "Diffusion")
    assert lora.base == base.path and "base:tiny-sd21-base" in lora.tags
    assert "rank 4" in lora.tags and lora.memory_bytes > base.memory_bytes
    info = task_info(zoo.registry, zoo.cache)
    assert info.available and not info.needs_model and info.default_model == "HYPIR_sd2"
    assert "non-commercial" in info.help


def test_a_lora_without_a_base_lists_the_task_as_needing_the_base(tmp_path: Path) -> None:
    diffusion_zoo.hypir_lora_file(tmp_path)
    registry = Registry([tmp_path], index_file=tmp_path / "index.json")
    lora = next(e for e in registry.entries() if e.name == "HYPIR_sd2")
    assert not lora.usable and lora.base == ""
    assert "Stable Diffusion 2.1 base" in lora.reason and "sd21-base" in lora.reason
    with pytest.raises(ModelFormatError, match=r"2\.1 base"):
        registry.find("HYPIR_sd2")  # named on the command line: says what is missing
    cache = ModelCache(device="cpu", precision="fp32")
    info = task_info(registry, cache)
    assert not info.available and info.needs_model
    assert "HYPIR_sd2.pth" in info.hint and "v2-1_512-ema-pruned" in info.hint
    with pytest.raises(ModelNotFoundError) as missing:
        choose_model(hypir.SPEC, hypir.SPEC.model, None, registry.entries, registry.find)
    assert "sd21-base" in missing.value.hint

    # a 768-v SD 2.1 model predicts v, not noise: not a base HYPIR runs on, and it says so
    v_model = diffusion_zoo.sd21_folder(tmp_path, "tiny-sd21-768-v")
    config = v_model / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"epsilon"', '"v_prediction"'))
    lora = next(e for e in registry.entries(refresh=True) if e.name == "HYPIR_sd2")
    assert not lora.usable and "768-v" in lora.reason and "tiny-sd21-768-v" in lora.reason


def test_a_base_beside_the_lora_in_the_hypir_folder_is_preferred(tmp_path: Path) -> None:
    """ComfyUI's HYPIR nodes keep stable-diffusion-2-1-base/ in models/HYPIR/."""
    diffusion_zoo.hypir_lora_file(tmp_path)
    beside = diffusion_zoo.sd21_folder(tmp_path, "stable-diffusion-2-1-base", where="HYPIR")
    shutil.copytree(beside, tmp_path / "checkpoints" / "another-sd21")
    rows = {e.name: e for e in Registry([tmp_path], index_file=tmp_path / "i.json").entries()}
    assert rows["HYPIR_sd2"].usable and rows["HYPIR_sd2"].base == str(beside)
    assert rows["stable-diffusion-2-1-base"].purpose == "Diffusion"  # a base, not a LoRA


class _Evil:
    def __reduce__(self):  # a pickle that would run a command when loaded unsafely
        return (os.system, ("echo this must never run",))


def test_files_that_are_not_a_hypir_lora_say_why(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    folder = tmp_path / "HYPIR"
    whole = diffusion_zoo.hypir_lora_file(tmp_path, "whole").read_bytes()
    (folder / "whole.pth").unlink()
    (folder / "corrupt.pth").write_bytes(whole[: len(whole) // 2])  # a download cut short
    torch.save({"x.lora_A.weight": _Evil()}, folder / "code.pth")
    diffusion_zoo.hypir_lora_file(tmp_path, "style", targets=("to_k", "to_q", "to_v", "to_out.0"))
    save_file({"lora_unet_down_blocks_0_proj_in.lora_down.weight": torch.zeros(4, 32)},
              str(folder / "kohya.safetensors"))  # fmt: skip
    torch.save(diffusion_zoo.unet_sd21().state_dict(), folder / "full.pth")
    half = {k: v for k, v in torch.load(diffusion_zoo.hypir_lora_file(tmp_path, "half")).items()
            if "lora_B" not in k or "conv1" not in k}  # fmt: skip
    torch.save(half, folder / "half.pth")
    rows = {e.name: e for e in Registry([tmp_path], index_file=tmp_path / "i.json").entries()}
    expect = {
        "corrupt": "not a PyTorch model file",
        "code": "refused",
        "style": "no resnet layers",
        "kohya": "kohya-style",
        "full": "no LoRA weights",
        "half": "damaged",
    }
    for name, words in expect.items():
        assert not rows[name].usable and words in rows[name].reason, (name, rows[name].reason)
        with pytest.raises(ModelFormatError, match="cannot be used"):
            Registry([tmp_path], index_file=tmp_path / "i.json").find(name)


def test_hypir_weights_in_another_diffusion_folder_say_where_they_go(tmp_path: Path) -> None:
    misplaced = diffusion_zoo.hypir_lora_file(tmp_path)
    (tmp_path / "loras").mkdir()
    misplaced.rename(tmp_path / "loras" / misplaced.name)
    (entry,) = Registry([tmp_path], index_file=tmp_path / "i.json").entries()
    assert not entry.usable and "HYPIR folder" in entry.reason


def test_a_lora_for_another_unet_is_refused_when_it_loads(zoo: Zoo, tmp_path: Path) -> None:
    lora = torch.load(zoo.root / "HYPIR" / "HYPIR_sd2.pth")
    shutil.copytree(zoo.root / "checkpoints", tmp_path / "checkpoints")
    (tmp_path / "HYPIR").mkdir()
    moved = {k.replace("down_blocks.0.", "down_blocks.7."): v for k, v in lora.items()}
    torch.save(moved, tmp_path / "HYPIR" / "moved.pth")
    key = next(k for k in lora if k.endswith("proj_in.lora_A.default.weight"))
    torch.save({**lora, key: torch.zeros(4, 99)}, tmp_path / "HYPIR" / "resized.pth")
    registry = Registry([tmp_path], index_file=tmp_path / "i.json")
    cache = ModelCache(device="cpu", precision="fp32")
    with pytest.raises(ModelFormatError, match=r"does not fit tiny-sd21-base.*not in that UNet"):
        cache.get(registry.find("moved"))
    with pytest.raises(ModelFormatError, match="does not fit tiny-sd21-base"):
        cache.get(registry.find("resized"))


# --- the model -----------------------------------------------------------------------------


def test_the_merged_lora_is_peft_s_lora_and_changes_the_unet(zoo: Zoo) -> None:
    """The loaded UNet (LoRA merged) against the base with the same file's adapter applied
    by peft, unmerged, as HYPIR itself runs it."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    model = zoo.cache.get(zoo.registry.find("HYPIR_sd2"))
    assert model.rank == 4 and model.adapted_layers > 20
    assert not any("lora" in k for k in model.unet.state_dict())
    base = UNet2DConditionModel.from_pretrained(zoo.root / "checkpoints/tiny-sd21-base/unet")
    plain = UNet2DConditionModel.from_pretrained(zoo.root / "checkpoints/tiny-sd21-base/unet")
    base.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=list(hypir_files.TARGETS)))
    base.load_state_dict(torch.load(zoo.root / "HYPIR" / "HYPIR_sd2.pth"), strict=False)
    torch.manual_seed(0)
    z, text = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    t = torch.tensor([TIMESTEP])
    with torch.no_grad():
        merged = model.unet(z, t, encoder_hidden_states=text).sample
        peft_out = base(z, t, encoder_hidden_states=text).sample
        without = plain(z, t, encoder_hidden_states=text).sample
    torch.testing.assert_close(merged, peft_out, atol=1e-4, rtol=1e-4)
    assert (merged - without).abs().mean() > 0.05


def test_the_step_takes_x0_as_ddpm_does() -> None:
    from diffusers import DDPMScheduler

    from backend.diffusion.loading import CONFIGS

    # as HYPIR builds it: DDPM from the SD 2.1 base's scheduler config (which clips nothing)
    scheduler = DDPMScheduler.from_pretrained(CONFIGS / "sd21", subfolder="scheduler",
                                              prediction_type="epsilon")  # fmt: skip
    torch.manual_seed(1)
    sample, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    want = scheduler.step(eps, TIMESTEP, sample).pred_original_sample
    got = predicted_x0(sample, eps, float(scheduler.alphas_cumprod[TIMESTEP]))
    torch.testing.assert_close(got, want)


def test_patches_cover_every_pixel_and_their_windows_blend_to_one() -> None:
    assert starts(160, 64, 32) == [0, 32, 64, 96] and starts(90, 64, 32) == [0, 26]
    assert starts(50, 64, 32) == [0]
    total = torch.zeros(160)
    for s in starts(160, 64, 32):
        total[s : s + 64] += ramp(64)
    torch.testing.assert_close(total[32:128], torch.ones(96), atol=2e-3, rtol=0)
    assert window(64).min() > 0  # a border pixel only one patch covers still counts


# --- the task ------------------------------------------------------------------------------


def test_the_result_is_scale_times_the_input(zoo: Zoo, photo: np.ndarray) -> None:
    for scale, shape in ((2.0, (80, 112, 3)), (1.5, (60, 84, 3)), (1.0, (40, 56, 3))):
        result = run(zoo, photo[:40, :56], scale=scale)
        out = result.outputs[0].pixels
        assert out.shape == shape and out.dtype == np.uint8, scale
        assert result.details["size"] == [shape[1], shape[0]]
    f = result.details["fidelity"]
    assert 0 < f["psnr_db"] < 100 and 0 < f["changed_share"] <= 1  # random weights move it


def test_no_seam_along_the_patch_borders(zoo: Zoo, photo: np.ndarray) -> None:
    for colour_fix in ("wavelet", "none"):
        result = run(zoo, photo, colour_fix=colour_fix)
        out = result.outputs[0].pixels
        assert out.shape == photo.shape and result.details["tiles"] == 2 * 4
        # patches start every 32 px: each multiple of 32 is a patch's edge
        step, grad, step_inside, grad_inside = border_steps(out, SMALL["stride"])
        assert step < 1.5 * step_inside + 1.0, (colour_fix, step, step_inside)
        assert grad < 1.5 * grad_inside + 1.0, (colour_fix, grad, grad_inside)


def test_the_colour_fix_keeps_each_region_mean(zoo: Zoo, photo: np.ndarray) -> None:
    """Random weights scramble the picture at every scale, and the wavelet fix restores the
    input's tones only above its low band (~32 px): so the means are checked over the whole
    image and its quadrants (each about a patch's size)."""
    src = photo.astype(np.float64)

    def drift(x: np.ndarray, rows: int, cols: int) -> float:  # largest shift of a region mean
        regions = lambda a: a.reshape(rows, 96 // rows, cols, 160 // cols, 3).mean(axis=(1, 3))  # noqa: E731
        return float(np.abs(regions(x.astype(np.float64)) - regions(src)).max())

    fixed = run(zoo, photo).outputs[0].pixels
    raw = run(zoo, photo, colour_fix="none").outputs[0].pixels
    assert drift(fixed, 1, 1) < 3.0 and drift(fixed, 2, 2) < 10.0
    assert drift(raw, 1, 1) > 5 * drift(fixed, 1, 1)  # random weights drift far without it
    assert drift(raw, 2, 2) > 4 * drift(fixed, 2, 2)


def test_the_same_input_gives_the_same_output_and_strength_zero_the_enlargement(
    zoo: Zoo, photo: np.ndarray
) -> None:
    first = run(zoo, photo[:48, :64], scale=1.5).outputs[0].pixels
    again = run(zoo, photo[:48, :64], scale=1.5).outputs[0].pixels
    np.testing.assert_array_equal(first, again)  # no noise anywhere: nothing to seed
    from backend.diffusion.hypir_restore import _resize

    zero = run(zoo, photo[:48, :64], scale=1.5, strength=0.0).outputs[0].pixels
    bicubic = _resize(photo[:48, :64].astype(np.float32) / 255, 72, 96)
    np.testing.assert_array_equal(zero, np.rint(bicubic * 255).astype(np.uint8))


def test_progress_per_tile_and_a_cancel_leaves_nothing(zoo: Zoo, photo: np.ndarray) -> None:
    seen: list[Progress] = []
    before = run(zoo, photo, TaskContext(seen.append)).outputs[0].pixels
    for stage in ("encoding", "restoring", "decoding"):
        steps = [(p.step, p.steps) for p in seen if p.stage.startswith(stage + " tile")]
        assert steps == [(k, 8) for k in range(1, 9)], stage
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    model = zoo.cache.get(zoo.registry.find("HYPIR_sd2"))
    decodes: list[int] = []
    hook = model.vae.decoder.register_forward_hook(lambda *a: decodes.append(1))
    ctx = TaskContext(None)
    restored: list[int] = []

    def report(p: Progress) -> None:
        if p.stage.startswith("restoring tile"):
            restored.append(p.step or 0)
            if p.step == 2:
                ctx.cancel.cancel()

    ctx._root.report = report
    try:
        with pytest.raises(CancelledError):
            run(zoo, photo, ctx)
    finally:
        hook.remove()
    assert restored == [1, 2] and decodes == []  # stopped between patches, nothing decoded
    np.testing.assert_array_equal(run(zoo, photo).outputs[0].pixels, before)


def test_a_request_too_large_is_refused_with_what_it_needs(
    zoo: Zoo, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = zoo.registry.find("HYPIR_sd2")
    params = hypir.SPEC.parse_params({"scale": 8.0})
    with pytest.raises(ImageTooLargeError, match="megapixels"):
        hypir.SPEC.prepare(params, TaskInputs(photo), entry, Limits(100_000))
    import backend.devices

    monkeypatch.setattr(backend.devices, "free_memory", lambda device: 1 << 30)
    with pytest.raises(OutOfMemoryError) as refused:
        hypir.SPEC.prepare(params, TaskInputs(photo), entry, Limits(10**9))
    message = refused.value.message
    assert "1280 x 768 px needs about" in message and "the image 120.0 MB" in message
    assert "1,024.0 MB of memory free" in message
    small = hypir.SPEC.parse_params({"scale": 1.0})
    monkeypatch.setattr(backend.devices, "free_memory", lambda device: 64 << 30)
    hypir.SPEC.prepare(small, TaskInputs(photo), entry, Limits(10**9))  # this one fits


def test_running_out_of_memory_on_a_patch_is_the_executor_s_to_retry(
    zoo: Zoo, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.diffusion import hypir_restore

    calls: list[int] = []

    def short_of_memory(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(hypir_restore, "restore", short_of_memory)
    with pytest.raises(OutOfMemoryError, match="even with every other model unloaded"):
        run(zoo, photo[:32, :32])
    assert len(calls) == 2  # once, then once more with the other models unloaded


def test_a_stride_beyond_the_tile_is_refused() -> None:
    from backend.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="stride"):
        hypir.SPEC.parse_params({"tile": 256, "stride": 512})


def test_the_command_line_has_a_hypir_command() -> None:
    from backend.cli import build_parser

    args = build_parser().parse_args(["hypir", "in.png", "-s", "2", "-t", "256", "--stride",
                                      "128", "--prompt", "a portrait"])  # fmt: skip
    assert args.task_command == "hypir"
    assert (args.param_scale, args.param_tile, args.param_stride) == (2.0, 256, 128)


def test_restora_hypir_writes_the_result_and_says_how_far_it_moved(
    zoo: Zoo, photo: np.ndarray, tmp_path: Path
) -> None:
    from PIL import Image

    from tests.cli_runner import restora

    source, out = tmp_path / "photo.png", tmp_path / "restored.png"
    Image.fromarray(np.ascontiguousarray(photo[:40, :48])).save(source)
    result = restora("hypir", source, "-o", out, "--models-dir", zoo.root, "-s", "2",
                     "-t", "64", "--stride", "32", "-p", "fp32")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "tiles of 64 px (stride 32) on tiny-sd21-base" in result.stderr
    assert "PSNR" in result.stderr and "SSIM" in result.stderr
    assert np.asarray(Image.open(out)).shape == (80, 96, 3)
