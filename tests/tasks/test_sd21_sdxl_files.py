"""SD 2.1 and SDXL single-file checkpoints as A1111 and ComfyUI have them: the released files'
key layouts (OpenCLIP under cond_stage_model.model.*, SDXL's two encoders under
conditioner.embedders.*), checked at full size on empty (meta) tensors against diffusers' own
format detection and the shipped configurations, and at tiny size through the registry, the
loader and refine; and how v-prediction is decided from the file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.diffusion import families, loading, prediction
from backend.executor import run_task
from backend.model_cache import ModelCache
from backend.models.registry import Registry
from backend.tasks import refine
from backend.tasks.context import TaskContext
from backend.tasks.spec import Limits, TaskInputs
from tests import diffusion_zoo

CONFIGS = loading.CONFIGS


@dataclass
class Zoo:
    root: Path
    registry: Registry
    cache: ModelCache


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    root = tmp_path_factory.mktemp("sd21-sdxl-files")
    diffusion_zoo.sd21_checkpoint(root)
    diffusion_zoo.sd21_checkpoint(root, "tiny-sd21-base", v_weights=False)
    diffusion_zoo.sdxl_checkpoint(root)
    diffusion_zoo.sdxl_checkpoint(root, "tiny-sdxl-vpred", v_pred=True)
    registry = Registry([root], index_file=root / "index.json")
    return Zoo(root, registry, ModelCache(device="cpu", precision="fp32", max_models=None))


# --- full size, no weights: the key layouts are the released files' ---


def _config(family: str, part: str) -> dict:
    return json.loads((CONFIGS / family / part / "config.json").read_text())


def _meta_checkpoint(family: str) -> dict[str, torch.Tensor]:
    """A full-size checkpoint of `family` on the meta device (shapes only) in its original
    key names, built from the shipped configurations by the tests' own inverse conversion."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet_cfg = _config(family, "unet")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(_config(family, "vae"))
        text = _config(family, "text_encoder")
        if family == "sd21":  # the file holds all 24 OpenCLIP layers; SD 2 uses 23
            text["num_hidden_layers"] += 1
        encoder = CLIPTextModel(CLIPTextConfig(**text))
        second = (
            CLIPTextModelWithProjection(CLIPTextConfig(**_config(family, "text_encoder_2")))
            if family == "sdxl"
            else None
        )
    layers = unet_cfg["layers_per_block"]
    ckpt = diffusion_zoo.unet_to_ldm(
        unet.state_dict(), tuple(unet_cfg["down_block_types"]), layers, families.UNET
    )
    ckpt.update(diffusion_zoo._vae_keys(vae))
    if family == "sd21":
        ckpt.update(
            diffusion_zoo.clip_to_open_clip(encoder.state_dict(), "cond_stage_model.model.", False)
        )
    else:
        prefix = "cond_stage_model.transformer." if family == "sd15" else (
            "conditioner.embedders.0.transformer."
        )  # fmt: skip
        ckpt.update(
            {prefix + diffusion_zoo._text_model(k): v for k, v in encoder.state_dict().items()}
        )
    if second is not None:
        ckpt.update(
            diffusion_zoo.clip_to_open_clip(
                second.state_dict(), "conditioner.embedders.1.model.", True
            )
        )
    return ckpt


@pytest.mark.parametrize(
    ("family", "name", "diffusers_type"),
    [("sd15", "SD1.5", "v1"), ("sd21", "SD2.1", "v2"), ("sdxl", "SDXL", "xl_base")],
)
def test_full_size_layouts_are_the_released_ones_and_size_to_the_shipped_configs(
    family: str, name: str, diffusers_type: str
) -> None:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    ckpt = _meta_checkpoint(family)
    # diffusers recognises the layout by the keys and shapes of the released files
    assert infer_diffusers_model_type(ckpt) == diffusers_type
    shapes = {k: list(v.shape) for k, v in ckpt.items()}
    found = families._checkpoint(shapes)
    assert (found.family, found.usable) == (name, True), found.reason
    sized = loading.sized_config(name, shapes, v_prediction=family == "sd21")
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if (CONFIGS / family / part).is_dir():
            assert _config(str(sized), part) == _config(family, part), part


# --- tiny files through the registry and the loader ---


def test_the_registry_tells_the_family_prediction_and_memory(zoo: Zoo) -> None:
    rows = {e.name: e for e in zoo.registry.entries(refresh=True)}
    want = {
        "tiny-sd21": ("SD2.1", "v_prediction"),
        "tiny-sd21-base": ("SD2.1", "epsilon"),
        "tiny-sdxl-file": ("SDXL", "epsilon"),
        "tiny-sdxl-vpred": ("SDXL", "v_prediction"),
    }
    for name, (family, kind) in want.items():
        row = rows[name]
        assert row.usable, (name, row.reason)
        assert (row.architecture, row.purpose, row.tags) == (
            family,
            "Diffusion",
            ["single_file", kind],
        )
        assert row.memory_bytes > families.WORKING_BYTES[family]  # weights plus a step's work


def _equal(reference: torch.nn.Module, loaded: torch.nn.Module, skip: str = "") -> None:
    got = loaded.state_dict()
    for key, value in reference.state_dict().items():
        if skip and skip in key:
            continue
        name = key if key in got else key.removeprefix("text_model.")
        assert torch.equal(value, got[name].reshape(value.shape)), key


def test_sd21_loads_through_the_open_clip_conversion(zoo: Zoo) -> None:
    model = zoo.cache.get(zoo.registry.find("tiny-sd21"))
    assert model.family == "SD2.1" and model.native_size == diffusion_zoo.NATIVE
    assert model.components["scheduler"].config.prediction_type == "v_prediction"
    assert model.components["tokenizer"].pad_token == "!"  # OpenCLIP pads with "!"
    reference = diffusion_zoo.sd21_parts()
    _equal(reference["vae"], model.components["vae"])
    text = model.components["text_encoder"]
    assert text.config.num_hidden_layers == 2  # three in the file; SD 2 uses the penultimate
    _equal(reference["text_encoder"], text, skip="layers.2.")
    base = zoo.cache.get(zoo.registry.find("tiny-sd21-base"))
    assert base.components["scheduler"].config.prediction_type == "epsilon"
    _equal(reference["unet"], base.components["unet"])  # (the v file's biases were rewritten)


def test_sdxl_loads_both_encoders_from_their_own_tensors(zoo: Zoo) -> None:
    model = zoo.cache.get(zoo.registry.find("tiny-sdxl-file"))
    assert model.family == "SDXL"
    reference = diffusion_zoo.sdxl_parts()
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        _equal(reference[name], model.components[name])
    assert model.components["text_encoder_2"].config.projection_dim == 48
    vpred = zoo.cache.get(zoo.registry.find("tiny-sdxl-vpred"))
    assert vpred.components["scheduler"].config.prediction_type == "v_prediction"


def _run(zoo: Zoo, model: str, pixels: np.ndarray, **raw: object):
    params = refine.SPEC.parse_params({"steps": 2, "seed": 4, "face_protection": "off", **raw})
    entries = {"model": zoo.registry.find(model)}
    inputs = TaskInputs(pixels)
    refine.SPEC.prepare(params, inputs, entries["model"], Limits(10**8))
    return run_task(refine.SPEC, inputs, params, entries, zoo.cache, TaskContext())


@pytest.mark.parametrize("model", ["tiny-sd21", "tiny-sdxl-file"])
def test_refine_runs_on_the_single_files(zoo: Zoo, face_crop: np.ndarray, model: str) -> None:
    photo = np.ascontiguousarray(face_crop[:64, :48])
    result = _run(zoo, model, photo)
    out = result.outputs[0].pixels
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert result.details["family"] == ("SD2.1" if "sd21" in model else "SDXL")
    assert np.any(out != photo)


def test_the_prediction_parameter_overrides_the_file(zoo: Zoo, face_crop: np.ndarray) -> None:
    photo = np.ascontiguousarray(face_crop[:64, :48])
    auto = _run(zoo, "tiny-sd21", photo).outputs[0].pixels
    same = _run(zoo, "tiny-sd21", photo, prediction="v_prediction").outputs[0].pixels
    other = _run(zoo, "tiny-sd21", photo, prediction="epsilon").outputs[0].pixels
    np.testing.assert_array_equal(auto, same)  # auto read v from the weights
    assert not np.array_equal(auto, other)
    model = zoo.cache.get(zoo.registry.find("tiny-sd21"))
    assert model.components["scheduler"].config.prediction_type == "v_prediction"  # kept


# --- how v-prediction is decided ---


def _file(tmp_path: Path, name: str, spread: float | None, **meta: str) -> Path:
    from safetensors.torch import save_file

    key = f"{families.UNET}output_blocks.11.1.transformer_blocks.0.norm1.bias"
    tensors = {f"{families.UNET}out.2.bias": torch.zeros(4)}
    if spread is not None:
        values = torch.linspace(-1, 1, 640)
        tensors[key] = (values / values.std() * spread).half()
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, str(path), metadata=meta or None)
    return path


@pytest.mark.parametrize(
    ("spread", "meta", "want"),
    [
        (0.2, {}, "v_prediction"),  # the weights of a 768-v model
        (0.03, {}, "epsilon"),  # those of 512-base
        (0.2, {"modelspec.prediction_type": "epsilon"}, "epsilon"),  # the file's word wins
        (0.03, {"modelspec.architecture": "stable-diffusion-v2-768-v"}, "v_prediction"),
        (0.03, {"modelspec.resolution": "768x768"}, "v_prediction"),
        (0.2, {"modelspec.resolution": "512x512"}, "epsilon"),
        (None, {}, "epsilon"),  # nothing to go on
    ],
)
def test_sd2_prediction_is_read_from_the_file_not_its_name(
    tmp_path: Path, spread: float | None, meta: dict[str, str], want: str
) -> None:
    # the name says 768-v: it must not matter
    path = _file(tmp_path, "sd21-768-v", spread, **meta)
    decided = prediction.decide(path, "SD2.1")
    assert decided.prediction == want, decided.why


def test_other_families_predict_noise_unless_the_file_says_v(tmp_path: Path) -> None:
    assert prediction.decide(_file(tmp_path, "xl", 0.5), "SDXL").prediction == "epsilon"
    vp = _file(tmp_path, "xl-v", None, **{"modelspec.prediction_type": "v"})
    assert prediction.decide(vp, "SDXL").prediction == "v_prediction"
