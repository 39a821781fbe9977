"""ControlNet tile in tiled refine and refine: tiny random-weight ControlNets saved in
controlnet/ as users have them (lllyasviel's `control_model.*` single file, diffusers' single
file, a diffusers folder; SDXL in diffusers' names), listed with family and memory, loaded
through diffusers' single-file conversion against the shipped configuration; the tile
itself is the condition; strength 0 is the plain refine; another family is refused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.diffusion import families
from backend.errors import InvalidParameterError
from backend.executor import run_task
from backend.model_cache import ModelCache
from backend.models.registry import Registry
from backend.tasks import refine, tiled_refine
from backend.tasks.context import Progress, TaskContext
from backend.tasks.refine import _float_rgb, native_shape, resize_float
from backend.tasks.spec import Limits, TaskInputs
from tests import diffusion_zoo

LAYOUTS = {"tiny-sd15-tile": "ldm", "tiny-sd15-tile-diffusers": "diffusers",
           "tiny-sd15-tile-folder": "folder"}  # fmt: skip


@dataclass
class Zoo:
    root: Path
    registry: Registry
    cache: ModelCache


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("controlnet-models")
    diffusion_zoo.sd15_checkpoint(root)
    diffusion_zoo.sdxl_checkpoint(root)
    for name, layout in LAYOUTS.items():
        diffusion_zoo.sd15_controlnet(root, name, layout)
    diffusion_zoo.sd15_controlnet(root, "tiny-sd15-canny", "diffusers")
    diffusion_zoo.sdxl_controlnet(root)
    # what else turns up in controlnet/: a Union model, a checkpoint put in the wrong folder
    save_file(
        {"task_embedding": torch.zeros(8, 32), "controlnet_cond_embedding.conv_in.weight":
         torch.zeros(16, 3, 3, 3)}, str(root / "controlnet" / "union-promax.safetensors"),
    )  # fmt: skip
    save_file(
        {f"{families.UNET}input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3)},
        str(root / "controlnet" / "misplaced-checkpoint.safetensors"),
    )
    registry = Registry([root], index_file=root / "index.json")
    return Zoo(root, registry, ModelCache(device="cpu", precision="fp32", max_models=None))


@pytest.fixture(scope="module")
def photo(astronaut: np.ndarray) -> np.ndarray:
    """48x48 of a real photo (no face: these tests are about the ControlNet)."""
    return np.ascontiguousarray(astronaut[::4, ::4][80:128, 0:48])


def run(zoo: Zoo, spec, pixels: np.ndarray, model: str = "tiny-sd15", ctx=None, **raw):
    params = spec.parse_params({"steps": 2, "seed": 5, "face_protection": "off", **raw})
    entries = {"model": zoo.registry.find(model)}
    for key, (name, _slot) in spec.helper_models(params).items():
        entries[key] = zoo.registry.find(name)
    inputs = TaskInputs(pixels)
    spec.prepare(params, inputs, entries["model"], Limits(10**8))
    return run_task(spec, inputs, params, entries, zoo.cache, ctx or TaskContext())


def test_controlnets_are_listed_with_family_and_memory(zoo: Zoo) -> None:
    rows = {e.name: e for e in zoo.registry.entries(refresh=True) if e.folder == "controlnet"}
    for name, layout in LAYOUTS.items():
        row = rows[name]
        assert (row.architecture, row.purpose, row.usable) == ("SD1.5", "ControlNet", True)
        assert row.tags == ["diffusers_folder" if layout == "folder" else "single_file"]
        assert row.memory_bytes > families.WORKING_BYTES["SD1.5"] // 4  # weights + its work
    assert (rows["tiny-sdxl-tile"].architecture, rows["tiny-sdxl-tile"].usable) == ("SDXL", True)
    assert not rows["union-promax"].usable and "Union" in rows["union-promax"].reason
    assert not rows["misplaced-checkpoint"].usable
    assert "checkpoint" in rows["misplaced-checkpoint"].reason
    # a folder is one model: its config.json and weights are not listed apart
    assert not any(Path(e.path).name.startswith("diffusion_pytorch") for e in rows.values())


def test_every_layout_loads_the_same_weights(zoo: Zoo) -> None:
    reference = diffusion_zoo._controlnet_of(diffusion_zoo._unet_sd15(), 16).state_dict()
    for name in LAYOUTS:
        net = zoo.cache.get(zoo.registry.find(name))
        got = net.module.state_dict()
        assert got.keys() == reference.keys(), name
        for key, value in reference.items():
            assert torch.equal(value, got[key]), (name, key)
        assert net.family == "SD1.5" and net.looks_like_tile


def test_strength_zero_is_the_plain_refine_and_one_changes_it(zoo: Zoo, photo: np.ndarray) -> None:
    plain = run(zoo, tiled_refine.SPEC, photo).outputs[0].pixels
    zero = run(zoo, tiled_refine.SPEC, photo, controlnet="tiny-sd15-tile", controlnet_strength=0.0)
    np.testing.assert_array_equal(zero.outputs[0].pixels, plain)
    held = run(zoo, tiled_refine.SPEC, photo, controlnet="tiny-sd15-tile")
    assert np.abs(held.outputs[0].pixels.astype(float) - plain).mean() > 1.0
    assert held.details["controlnet"] == "tiny-sd15-tile at 1, steps 0-1"
    assert held.outputs[0].pixels.shape == (96, 96, 3) and held.details["tiles"] == 4
    # the job's ControlNet pipeline is dropped after it: the manager may unload the ControlNet
    model = zoo.cache.get(zoo.registry.find("tiny-sd15"))
    assert not any("controlnet" in key for key in model._pipelines)


def test_the_condition_is_the_tile_being_refined(zoo: Zoo, photo: np.ndarray) -> None:
    net = zoo.cache.get(zoo.registry.find("tiny-sd15-tile"))
    seen: list[torch.Tensor] = []

    def record(_module, args, kwargs):
        seen.append(kwargs["controlnet_cond"].detach().clone())

    hook = net.module.register_forward_pre_hook(record, with_kwargs=True)
    try:
        run(zoo, refine.SPEC, photo, controlnet="tiny-sd15-tile", guidance=0.0)
    finally:
        hook.remove()
    nh, nw = native_shape(48, 48, diffusion_zoo.NATIVE, 8)
    tile = resize_float(_float_rgb(photo, 255.0), nh, nw).transpose(2, 0, 1)
    assert len(seen) == 2  # one per step (no guidance: no second batch)
    for cond in seen:
        assert cond.shape == (1, 3, nh, nw)
        np.testing.assert_allclose(cond[0].numpy(), tile, atol=1e-6)


def test_a_controlnet_of_another_family_is_refused_before_any_work(
    zoo: Zoo, photo: np.ndarray
) -> None:
    seen: list[Progress] = []
    with pytest.raises(InvalidParameterError) as refused:
        run(zoo, tiled_refine.SPEC, photo, model="tiny-sdxl-file",
            ctx=TaskContext(seen.append), controlnet="tiny-sd15-tile")  # fmt: skip
    assert "is for SD1.5" in refused.value.message and "is SDXL" in refused.value.message
    assert "made for SDXL" in refused.value.hint
    assert not any(p.stage.startswith(("tile", "upscaling")) for p in seen)


def test_an_sdxl_tile_controlnet_runs_beside_an_sdxl_file(zoo: Zoo, photo: np.ndarray) -> None:
    plain = run(zoo, tiled_refine.SPEC, photo, model="tiny-sdxl-file")
    held = run(zoo, tiled_refine.SPEC, photo, model="tiny-sdxl-file", controlnet="tiny-sdxl-tile")
    assert held.details["family"] == "SDXL" and held.outputs[0].pixels.shape == (96, 96, 3)
    assert not np.array_equal(plain.outputs[0].pixels, held.outputs[0].pixels)


def test_a_controlnet_not_named_tile_runs_with_a_note(zoo: Zoo, photo: np.ndarray) -> None:
    result = run(zoo, refine.SPEC, photo, controlnet="tiny-sd15-canny")
    assert any("does not look like a tile" in n for n in result.details["notes"])
    assert "tile" in result.message


def test_the_guidance_window_is_checked() -> None:
    with pytest.raises(InvalidParameterError, match="control_start"):
        tiled_refine.SPEC.parse_params({"control_start": 0.8, "control_end": 0.2})
    params = tiled_refine.SPEC.parse_params({"control_start": 0.2, "control_end": 0.6})
    assert (params.control_start, params.control_end, params.controlnet_strength) == (
        0.2,
        0.6,
        1.0,
    )


@pytest.mark.parametrize("family", ["SD2.1", "SDXL"])
def test_ldm_named_controlnets_of_the_other_families_load(tmp_path: Path, family: str) -> None:
    """SD 2.1 ControlNets (thibaud's) and SDXL ones saved with LDM names (label_emb for the
    text-time embedding, which diffusers' own conversion leaves out) load the same weights."""
    from safetensors.torch import save_file

    from backend.diffusion import controlnet

    parts = diffusion_zoo.sd21_parts() if family == "SD2.1" else diffusion_zoo.sdxl_parts()
    down = diffusion_zoo.SD21_DOWN if family == "SD2.1" else diffusion_zoo.SDXL_DOWN
    net = diffusion_zoo._controlnet_of(parts["unet"], 18)
    folder = tmp_path / "controlnet"
    folder.mkdir()
    path = folder / f"tiny-{family.lower()}-tile.safetensors"
    sd = diffusion_zoo.unet_to_ldm(net.state_dict(), down, 2, "control_model.")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    (entry,) = Registry([tmp_path], index_file=tmp_path / "index.json").entries()
    assert (entry.architecture, entry.purpose, entry.usable) == (family, "ControlNet", True)
    loaded = controlnet.load(entry, torch.device("cpu"), torch.float32)
    got = loaded.module.state_dict()
    for key, value in net.state_dict().items():
        assert torch.equal(value, got[key]), key
