"""Edit by instruction with tiny random-weight pipelines saved as users keep them: a
Qwen-Image-Edit-2509 diffusers folder, the same family in ComfyUI's split files (an fp8 text
encoder, a GGUF transformer), the first Qwen-Image-Edit, FLUX.1 Kontext and InstructPix2Pix,
listed and loaded through the real registry, model manager and executor."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.cli.tasks import over
from backend.diffusion import edit_run
from backend.diffusion.edit_families import FAMILY_INFO
from backend.errors import CancelledError, OutOfMemoryError
from backend.executor import run_task
from backend.model_cache import ModelCache
from backend.models.registry import Registry
from backend.tasks import edit
from backend.tasks.colorize import luma
from backend.tasks.context import Progress, TaskContext
from backend.tasks.spec import Limits, TaskInputs
from tests import edit_zoo

PLUS = "tiny-qwen-image-edit-2509"
SPLIT = "tiny-qwen-edit-2509"
FAST = {"steps": 2, "working_size": 64}


@dataclass
class Zoo:
    root: Path
    registry: Registry
    cache: ModelCache


@pytest.fixture(autouse=True)
def small_condition_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vision-language encoder sees each picture at 56x56 instead of 384x384 (speed)."""
    monkeypatch.setattr(edit_run, "CONDITION_AREA", 56 * 56)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    root = tmp_path_factory.mktemp("edit-models")
    edit_zoo.qwen_edit_plus_folder(root)
    edit_zoo.qwen_split_files(root, SPLIT, fp8_text_encoder=True)
    edit_zoo.kontext_folder(root)
    edit_zoo.ip2p_folder(root)
    # the first Qwen-Image-Edit as a split transformer beside the same text encoder and VAE
    edit_zoo.save_transformer(root, "tiny-qwen-image-edit")
    registry = Registry([root], index_file=root / "index.json")
    return Zoo(root, registry, ModelCache(device="cpu", precision="fp32", max_models=None))


@pytest.fixture(scope="module")
def photo(astronaut: np.ndarray) -> np.ndarray:
    """An odd-sized crop (not a multiple of 16 or 32): the result must come back aligned."""
    return np.ascontiguousarray(astronaut[::6, ::6][10:60, 20:63])


def run(zoo: Zoo, pixels, model=PLUS, mask=None, ctx=None, images=None, **raw):
    params = edit.SPEC.parse_params({**FAST, **raw})
    entries = {"model": zoo.registry.find(model)}
    for key, (name, _slot) in edit.SPEC.helper_models(params).items():
        entries[key] = zoo.registry.find(name)
    inputs = TaskInputs(pixels, mask, dict(images or {}))
    edit.SPEC.prepare(params, inputs, entries["model"], Limits(10**8))
    return run_task(edit.SPEC, inputs, params, entries, zoo.cache, ctx or TaskContext())


def test_the_registry_lists_each_layout_with_its_family_and_memory(zoo: Zoo) -> None:
    rows = {e.name: e for e in zoo.registry.entries(refresh=True)}
    expected = {
        PLUS: ("Qwen-Image-Edit-2509", "diffusers_folder"),
        SPLIT: ("Qwen-Image-Edit-2509", "split_files"),
        "tiny-qwen-image-edit": ("Qwen-Image-Edit", "split_files"),
        "tiny-flux-kontext": ("FLUX.1-Kontext", "diffusers_folder"),
        "tiny-instruct-pix2pix": ("InstructPix2Pix", "diffusers_folder"),
    }
    for name, (family, layout) in expected.items():
        entry = rows[name]
        assert (entry.purpose, entry.architecture, entry.tags) == ("Edit", family, [layout])
        assert entry.usable, entry.reason
        # the weights as held plus one step's working memory at the model's own size
        assert entry.memory_bytes > FAMILY_INFO[family].working_bytes
    parts = [e for e in rows.values() if e.purpose == "Component"]
    assert {e.folder for e in parts} == {"text_encoders", "vae"}
    # the SD refine task is not offered an edit model, and the edit task no SD model
    assert not any(e.purpose == "Diffusion" for e in rows.values())


def test_a_split_transformer_without_its_text_encoder_says_what_to_add(
    zoo: Zoo, tmp_path: Path
) -> None:
    edit_zoo.save_transformer(tmp_path, "lonely-qwen-image-edit-2509")
    (entry,) = Registry([tmp_path], index_file=tmp_path / "i.json").entries()
    assert not entry.usable and "text_encoders/" in entry.reason


def test_split_files_load_the_same_weights_as_the_folder(zoo: Zoo) -> None:
    folder = zoo.cache.get(zoo.registry.find(PLUS)).pipe
    split = zoo.cache.get(zoo.registry.find(SPLIT)).pipe
    for name in ("transformer", "vae"):
        want, got = folder.components[name].state_dict(), split.components[name].state_dict()
        assert want.keys() == got.keys(), name
        for key, value in want.items():
            assert torch.equal(value, got[key]), (name, key)
    # the fp8 text encoder stays fp8 in memory; each layer is up-cast (times its scale) to run
    q = split.text_encoder.model.language_model.layers[0].self_attn.q_proj
    reference = folder.text_encoder.model.language_model.layers[0].self_attn.q_proj.weight
    assert q.weight.dtype == torch.float8_e4m3fn
    restored = q.weight.float() * q.fp8_scale
    assert torch.allclose(restored, reference, atol=float(reference.abs().max()) / 8)


def test_the_whole_layer_comes_back_at_its_size_and_seeds_reproduce(
    zoo: Zoo, photo: np.ndarray
) -> None:
    first = run(zoo, photo)
    out = first.outputs[0].pixels
    assert out.shape == photo.shape and out.dtype == photo.dtype
    seed = first.details["seed"]
    assert isinstance(seed, int) and first.details["family"] == "Qwen-Image-Edit-2509"
    w, h = first.details["working_size"]
    assert w % 32 == 0 and h % 32 == 0 and w * h == 64 * 64
    again = run(zoo, photo, seed=seed)
    np.testing.assert_array_equal(out, again.outputs[0].pixels)
    other = run(zoo, photo, seed=(seed + 1) % 2**32)
    assert not np.array_equal(out, other.outputs[0].pixels)
    worded = run(zoo, photo, seed=seed, instruction="Remove the scratches")
    assert not np.array_equal(out, worded.outputs[0].pixels)
    # the pipeline module's own resize targets are back as they were after the call
    module = importlib.import_module(type(zoo.cache.get(zoo.registry.find(PLUS)).pipe).__module__)
    assert module.VAE_IMAGE_SIZE == 1024 * 1024 and module.CONDITION_IMAGE_SIZE == 384 * 384


def test_outside_the_selection_every_pixel_is_the_input(zoo: Zoo, astronaut: np.ndarray) -> None:
    image = np.ascontiguousarray(astronaut[::4, ::4][:96, :112])
    mask = np.zeros((96, 112, 1), np.uint8)
    mask[30:60, 40:80] = 255
    result = run(zoo, image, mask=mask, seed=5, context=8)
    layer = result.outputs[0].pixels
    assert result.outputs[0].overlay and layer.shape == (96, 112, 4)
    x, y, w, h = result.details["region"]
    assert (x, y, w, h) == (32, 22, 56, 46)  # the selection's box and 8 px of context
    composed = over(image, layer)  # as the editors and the command line show it
    outside = mask[..., 0] == 0
    np.testing.assert_array_equal(composed[outside], image[outside])
    assert not layer[..., 3][outside].any()
    assert np.any(composed[35:55, 45:75] != image[35:55, 45:75])


def test_colorizing_keeps_the_luminance_within_one_level(zoo: Zoo, photo: np.ndarray) -> None:
    gray = photo.mean(axis=2, keepdims=True).astype(np.uint8)
    preset = edit.SPEC.preset("colorize")
    assert preset is not None
    result = run(zoo, gray, seed=2, **preset.params)
    out = result.outputs[0].pixels
    assert out.shape == (*gray.shape[:2], 3) and result.details["kept_luminance"]
    assert np.abs(luma(out.astype(np.float32)) - gray[..., 0]).max() <= 1.0
    assert np.ptp(out.astype(int), axis=2).max() > 0  # it has colour now
    # "auto" keeps it for a colorizing instruction typed by hand, not for other edits
    typed = run(zoo, gray, seed=2, instruction="Please colourise this old photograph")
    assert typed.details.get("kept_luminance")
    plain = run(zoo, gray, seed=2, instruction="Remove the scratches")
    assert not plain.details.get("kept_luminance")
    # 16-bit: the luma is the input's within one 16-bit level
    deep = gray.astype(np.uint16) * 257
    out16 = run(zoo, deep, seed=2, **preset.params).outputs[0].pixels
    assert out16.dtype == np.uint16
    assert np.abs(luma(out16.astype(np.float32)) - deep[..., 0]).max() <= 1.0


def test_fidelity_options(zoo: Zoo, photo: np.ndarray) -> None:
    from backend.diffusion.colour import wavelet_split

    base = run(zoo, photo, seed=7).outputs[0].pixels.astype(np.float32) / 255
    fixed = run(zoo, photo, seed=7, colour_fix="wavelet").outputs[0].pixels.astype(np.float32)
    src = photo.astype(np.float32) / 255
    low = lambda x: wavelet_split(x)[1]  # noqa: E731
    # the wavelet fix brings the low frequencies (tones, colours) back to the input's
    assert np.abs(low(fixed / 255) - low(src)).mean() < np.abs(low(base) - low(src)).mean()
    kept = run(zoo, photo, seed=7, keep_structure=1.0).outputs[0].pixels.astype(np.float32)
    high = lambda x: wavelet_split(x)[0]  # noqa: E731
    assert np.abs(high(kept / 255) - high(src)).mean() < np.abs(high(base) - high(src)).mean()


@pytest.mark.parametrize("model", ["tiny-flux-kontext", "tiny-instruct-pix2pix",
                                   "tiny-qwen-image-edit", SPLIT])  # fmt: skip
def test_every_family_and_layout_edits_at_the_layer_size(
    zoo: Zoo, photo: np.ndarray, model: str
) -> None:
    result = run(zoo, photo, model=model, seed=1)
    assert result.outputs[0].pixels.shape == photo.shape
    again = run(zoo, photo, model=model, seed=1)
    np.testing.assert_array_equal(result.outputs[0].pixels, again.outputs[0].pixels)


def test_reference_images_reach_qwen_and_are_reported_unused_elsewhere(
    zoo: Zoo, photo: np.ndarray, astronaut: np.ndarray
) -> None:
    ref = np.ascontiguousarray(astronaut[::8, ::8])
    alone = run(zoo, photo, seed=3).outputs[0].pixels
    with_ref = run(zoo, photo, seed=3, images={"reference_1": ref})
    assert not np.array_equal(alone, with_ref.outputs[0].pixels)
    assert with_ref.details["references"] == 1  # what the editors tell the user
    both = run(zoo, photo, seed=3, images={"reference_1": ref, "reference_2": ref[:24]})
    assert both.details["references"] == 2 and "2 reference images used" in edit.summarize(
        both.details)
    kontext = run(zoo, photo, model="tiny-flux-kontext", seed=3, images={"reference_1": ref})
    assert "one picture" in kontext.details["note"] and kontext.details["references"] == 0


def test_a_gguf_transformer_loads_quantized_and_runs(zoo: Zoo, photo: np.ndarray) -> None:
    pytest.importorskip("gguf")
    name = "tiny-qwen-image-edit-2509-Q8_0"
    edit_zoo.save_transformer(zoo.root, name, gguf=True)
    entry = next(e for e in zoo.registry.entries(refresh=True) if e.name == name)
    assert entry.usable and entry.architecture == "Qwen-Image-Edit-2509"
    model = zoo.cache.get(entry)
    assert model.quantized == "gguf" and "gguf" in model.precision_label
    weight = model.pipe.transformer.transformer_blocks[0].attn.to_q.weight
    assert type(weight).__name__ == "GGUFParameter" and weight.dtype == torch.uint8
    result = run(zoo, photo, model=name, seed=4)
    assert result.outputs[0].pixels.shape == photo.shape


def test_a_model_that_cannot_fit_is_refused_with_the_numbers(zoo: Zoo) -> None:
    entry = zoo.registry.find(PLUS)
    with pytest.raises(OutOfMemoryError) as caught:
        edit.check_fits(entry, host_free=1 << 30, device_free=512 << 20, on_cpu=False)
    message, hint = caught.value.message, caught.value.hint
    assert "needs 3," in message and "1,024.0 MB of memory free" in message
    assert "GPU 512.0 MB" in message and "GGUF" in hint
    edit.check_fits(entry, host_free=64 << 30, device_free=0, on_cpu=True)  # fits: no error


def test_progress_per_step_and_a_cancel_stops_before_decoding(zoo: Zoo, photo: np.ndarray) -> None:
    seen: list[Progress] = []
    run(zoo, photo, ctx=TaskContext(seen.append), steps=3, seed=1)
    assert [(p.step, p.steps) for p in seen if p.stage == "denoising"] == [(1, 3), (2, 3), (3, 3)]
    model = zoo.cache.get(zoo.registry.find(PLUS))
    decodes: list[int] = []
    hook = model.pipe.vae.decoder.register_forward_hook(lambda *a: decodes.append(1))
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
    assert decodes == []


def test_a_lightning_style_lora_applies_for_one_job(zoo: Zoo, photo: np.ndarray) -> None:
    path = edit_zoo.qwen_lora_file(zoo.root, "tiny-qwen-lightning")
    assert path.is_file()
    zoo.registry.entries(refresh=True)
    plain = run(zoo, photo, seed=2).outputs[0].pixels
    lora = run(zoo, photo, seed=2, lora="tiny-qwen-lightning", guidance=1.0, steps=2)
    assert not np.array_equal(plain, lora.outputs[0].pixels)
    np.testing.assert_array_equal(plain, run(zoo, photo, seed=2).outputs[0].pixels)
