"""ControlNet tile for the diffusion tasks: its parameters, its loading, and the check that it
fits the checkpoint it runs beside.

A tile ControlNet (lllyasviel's control_v11f1e_sd15_tile, the SDXL tile models) is fed the
image being refined as its condition and pulls each step towards that image's structure, so a
refine can run at a higher strength, adding more detail, without redrawing what is there.
Files come from controlnet/ as users have them: one .safetensors file with lllyasviel's key
names (`control_model.*`, or bare), one with diffusers' key names (most SDXL ControlNets),
or a diffusers folder (config.json beside the weights). A single file is converted by
diffusers' own single-file loader against the configuration shipped for its family
(backend/diffusion/configs/controlnet_*/), sized to the file's tensors: no model hub.

Only the parameters are torch-free here (the task specs import them); loading imports torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.diffusion import families
from backend.errors import InvalidParameterError, ModelFormatError
from backend.tasks.spec import param

PURPOSE = "ControlNet"
FOLDER = "controlnet"
#: the shipped ControlNet configuration of each family
CONFIG_NAMES = {"SD1.5": "controlnet_sd15", "SD2.1": "controlnet_sd21", "SDXL": "controlnet_sdxl"}
#: words in a file's name that say it is a tile (or blur) ControlNet: any other kind is run
#: too, but told to the user, since a canny or depth model fed a photo draws nonsense
TILE_WORDS = ("tile", "blur", "upscale")


@dataclass
class ControlNetParams:
    controlnet: str | None = param(
        None,
        "ControlNet (tile)",
        help="A tile ControlNet from the controlnet folder: it keeps each tile's structure, "
        "so a higher strength adds detail without redrawing the picture. It must be of the "
        "checkpoint's family (SD 1.5, SD 2.1 or SDXL).",
        widget="model",
        folders=(FOLDER,),
        purposes=(PURPOSE,),
        none_label="none",
    )
    controlnet_strength: float = param(
        1.0,
        "ControlNet strength",
        help="How strongly the ControlNet holds the structure: 1 as trained, lower lets the "
        "model redraw more, above 1 holds tighter.",
        minimum=0.0,
        maximum=2.0,
        step=0.05,
        advanced=True,
    )
    control_start: float = param(
        0.0,
        "ControlNet start",
        help="Share of the steps after which the ControlNet starts to act.",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        advanced=True,
    )
    control_end: float = param(
        1.0,
        "ControlNet end",
        help="Share of the steps after which it stops: ending early frees the last steps "
        "for fine texture.",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        advanced=True,
    )

    def check_control(self) -> None:
        if self.control_start > self.control_end:
            raise InvalidParameterError(
                f"control_start ({self.control_start:g}) is after control_end "
                f"({self.control_end:g}).",
                "The ControlNet acts between start and end: give a start at or before the end.",
            )


@dataclass
class ControlNetWeights:
    """A loaded ControlNet (the manager's item): shared by every job that names it."""

    entry: Any
    module: Any  # diffusers ControlNetModel
    family: str
    device: Any
    precision_label: str = "fp32"
    precision_reason: str = "a ControlNet, at the model's precision"

    @property
    def looks_like_tile(self) -> bool:
        name = Path(str(getattr(self.entry, "path", ""))).name.lower()
        return any(word in name for word in TILE_WORDS)


@dataclass(frozen=True)
class Control:
    """One denoise call's ControlNet: the network, its condition image and how it acts."""

    net: ControlNetWeights
    image: Any  # HxWx3 float32 in 0..1, the size of the image being denoised
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0


def check_pair(model: Any, net: ControlNetWeights) -> None:
    """Refuse a ControlNet that cannot run beside `model`, before any tile is processed."""
    name = getattr(net.entry, "name", "the ControlNet")
    model_name = getattr(model.entry, "name", "the model")
    if net.family != model.family:
        raise InvalidParameterError(
            f"The ControlNet '{name}' is for {net.family}; the model '{model_name}' is "
            f"{model.family}.",
            f"Choose a ControlNet made for {model.family}, or use this one with a "
            f"{net.family} checkpoint.",
        )
    unet, cn = model.components["unet"].config, net.module.config
    mismatch = [
        what
        for what, a, b in (
            ("context width", unet.cross_attention_dim, cn.cross_attention_dim),
            ("first block width", unet.block_out_channels[0], cn.block_out_channels[0]),
            (
                "added embedding",
                unet.projection_class_embeddings_input_dim,
                cn.projection_class_embeddings_input_dim,
            ),
        )
        if a != b
    ]
    if mismatch:
        raise InvalidParameterError(
            f"The ControlNet '{name}' does not fit the model '{model_name}' "
            f"(its {', '.join(mismatch)} differ), although both are {model.family}.",
            "Choose a ControlNet trained for this model's architecture.",
        )


def load(entry: Any, device: Any, dtype: Any) -> ControlNetWeights:
    """The ControlNet at `entry.path` (a file or a diffusers folder), on the host."""
    import torch
    from diffusers import ControlNetModel

    path = Path(entry.path)
    try:
        if path.is_dir():
            found = families.inspect_controlnet_folder(path)
            _refuse_unusable(path, found)
            module = ControlNetModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        else:
            found = families.inspect_file(path, FOLDER)
            _refuse_unusable(path, found)
            module = _from_single_file(path, found.family, dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if "out of memory" in str(exc).lower():
            raise
        message = f"{path.name} could not be loaded as a ControlNet: {exc}"
        raise ModelFormatError(message, "") from exc
    if any(p.is_meta for p in module.parameters()):
        raise ModelFormatError(
            f"{path.name} lacks some of the ControlNet's weights (an incomplete or pruned file).",
            "Download the file again.",
        )
    module.eval().requires_grad_(False)
    label = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")
    return ControlNetWeights(entry, module, found.family, device, precision_label=label)


def _refuse_unusable(path: Path, found: families.Inspection) -> None:
    if not found.usable:
        raise ModelFormatError(f"{path.name} cannot be used: {found.reason}.", "")


def _from_single_file(path: Path, family: str, dtype: Any) -> Any:
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
    from safetensors.torch import load_file

    shapes = families.shapes_of(families.read_header(path))
    layout, prefix = families.controlnet_layout(shapes)
    config = sized_config(family, shapes, layout, prefix)
    tensors: dict[str, Any] = load_file(str(path))
    added = f"{prefix}label_emb.0.0.weight"
    if layout == "ldm" and added in tensors:
        # an SDXL ControlNet in LDM key names: diffusers' conversion maps every block but the
        # added (text-time) embedding, so convert here and hand the loader diffusers' names
        cfg = json.loads((config / "config.json").read_text())
        bare = {k.removeprefix(prefix): v for k, v in tensors.items()}
        converted = convert_controlnet_checkpoint(bare, cfg)
        for i, j in ((1, 0), (2, 2)):
            for kind in ("weight", "bias"):
                converted[f"add_embedding.linear_{i}.{kind}"] = bare[f"label_emb.0.{j}.{kind}"]
        tensors = converted
    return ControlNetModel.from_single_file(
        tensors, config=str(config), torch_dtype=dtype, local_files_only=True
    )


def sized_config(family: str, shapes: dict[str, list[int]], layout: str, prefix: str) -> Path:
    """The family's shipped ControlNet configuration with the widths and depths read from the
    file's tensors (the same numbers for a released file), written once to the cache."""
    from backend import paths
    from backend.diffusion.loading import CONFIGS, _size_unet

    cfg = json.loads((CONFIGS / CONFIG_NAMES[family] / "config.json").read_text())
    if layout == "ldm":
        sized = dict(cfg, attention_head_dim=cfg["attention_head_dim"])
        _size_unet(sized, shapes, prefix)
        hint = [shapes[f"{prefix}input_hint_block.{i}.weight"] for i in _hint_convs(shapes, prefix)]
    else:
        sized = _size_diffusers(dict(cfg), shapes)
        hint = [shapes["controlnet_cond_embedding.conv_in.weight"]] + [
            shapes[f"controlnet_cond_embedding.blocks.{i}.weight"]
            for i in range(_count(shapes, "controlnet_cond_embedding.blocks."))
        ]
    # the condition embedding: pairs of convolutions, the second of each pair downsampling;
    # its widths are the first conv's and every other one's after it
    sized["conditioning_embedding_out_channels"] = [hint[i][0] for i in range(0, len(hint), 2)]
    sized["conditioning_channels"] = hint[0][1]
    keep = {k: sized[k] for k in cfg}  # a UNet's keys (up blocks) are not a ControlNet's
    blob = json.dumps(keep, sort_keys=True).encode()
    out = paths.cache_dir() / "diffusion-configs" / ("cn-" + hashlib.sha1(blob).hexdigest()[:16])
    if not (out / "config.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(keep, indent=1))
    return out


def _hint_convs(shapes: dict[str, list[int]], prefix: str) -> list[int]:
    start = f"{prefix}input_hint_block."
    found = {
        int(k[len(start) :].split(".")[0])
        for k in shapes
        if k.startswith(start) and k.endswith(".weight")
    }
    return sorted(found)[:-1]  # the last one is the zero convolution into the first block


def _count(shapes: dict[str, list[int]], start: str) -> int:
    return len({k[len(start) :].split(".")[0] for k in shapes if k.startswith(start)})


def _size_diffusers(cfg: dict[str, Any], shapes: dict[str, list[int]]) -> dict[str, Any]:
    """A ControlNet in diffusers' key names: levels, widths and depths from its tensors."""
    import math

    from backend.diffusion.loading import _divisor

    levels = _count(shapes, "down_blocks.")
    widths, kinds, depths = [], [], []
    for level in range(levels):
        widths.append(shapes[f"down_blocks.{level}.resnets.0.conv1.weight"][0])
        attn = f"down_blocks.{level}.attentions.0.transformer_blocks."
        stacked = _count(shapes, attn)
        kinds.append("CrossAttnDownBlock2D" if stacked else "DownBlock2D")
        depths.append(stacked or 1)
    cfg["block_out_channels"] = widths
    cfg["down_block_types"] = kinds
    cfg["layers_per_block"] = _count(shapes, "down_blocks.0.resnets.")
    cfg["transformer_layers_per_block"] = depths[0] if len(set(depths)) == 1 else depths
    cfg["norm_num_groups"] = math.gcd(int(cfg.get("norm_num_groups", 32)), *widths)
    ctx = families.context_dim(shapes, "")
    if ctx is not None:
        cfg["cross_attention_dim"] = ctx
    projections = [s for k, s in shapes.items() if k.endswith("proj_in.weight")]
    if projections:
        cfg["use_linear_projection"] = len(projections[0]) == 2
    added = shapes.get("add_embedding.linear_1.weight")
    if added is not None:
        cfg["addition_embed_type"] = "text_time"
        cfg["projection_class_embeddings_input_dim"] = added[1]
        cfg["addition_time_embed_dim"] = cfg.get("addition_time_embed_dim") or 256
    heads = cfg["attention_head_dim"]
    if isinstance(heads, int):
        cfg["attention_head_dim"] = _divisor(min(widths), heads)
    else:
        if len(heads) != len(widths):
            heads = [max(1, w // 64) for w in widths]
        cfg["attention_head_dim"] = [_divisor(w, h) for w, h in zip(widths, heads)]
    return cfg
