"""Instruction-editing pipelines loaded offline from the layouts users have.

A diffusers folder loads as it is. ComfyUI's split Qwen files (transformer in
diffusion_models/, Qwen2.5-VL in text_encoders/, VAE in vae/) are put together against the
configurations Restora ships (backend/diffusion/configs/qwen_image/, sized to each file's
tensors) with the shipped Qwen tokenizer and processor: no model hub is asked. A GGUF
transformer stays quantized through diffusers' GGUF support (dequantized layer by layer as it
runs); an fp8 file stays fp8 in memory and each linear layer is up-cast when it runs, so a
20B transformer takes 20 GB instead of 41.
"""

from __future__ import annotations

import hashlib
import json
import logging
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from backend import paths
from backend.diffusion import edit_families as ef
from backend.diffusion.loading import CONFIGS
from backend.errors import ModelFormatError

log = logging.getLogger("restora.diffusion")

QWEN_CONFIGS = CONFIGS / "qwen_image"
QWEN_TOKENIZER = CONFIGS / "qwen_tokenizer"
FP8_TYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
#: the names ComfyUI's fp8 files give a weight's scale (older and newer "fp8_scaled" files)
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")


@dataclass
class EditModel:
    """One loaded instruction-editing pipeline, shared by every job that runs it."""

    entry: Any
    family: str
    pipe: Any
    dtype: torch.dtype
    device: torch.device
    #: "gguf" or "fp8" when the transformer is held quantized
    quantized: str = ""
    tier: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def info(self) -> ef.FamilyInfo:
        return ef.FAMILY_INFO[self.family]

    @property
    def precision_label(self) -> str:
        base = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.dtype, "fp32")
        return f"{base} ({self.quantized} weights)" if self.quantized else base

    @property
    def precision_reason(self) -> str:
        return f"{self.family}, {self.tier or 'not placed yet'}"

    def modules(self) -> dict[str, torch.nn.Module]:
        return {k: v for k, v in self.pipe.components.items() if isinstance(v, torch.nn.Module)}

    def weight_bytes(self) -> tuple[int, int]:
        """Bytes of all weights, and of the largest component (what model offload needs)."""
        sizes = [
            sum(t.numel() * t.element_size() for t in m.parameters())
            + sum(b.numel() * b.element_size() for b in m.buffers())
            for m in self.modules().values()
        ]
        return sum(sizes), max(sizes, default=0)

    def place(self, tier: str) -> None:
        """Apply the memory tier the model manager chose: resident, model offload (one
        component on the device at a time) or sequential offload (layer by layer); VAE tiling
        whenever the model does not sit on the device whole."""
        if tier == self.tier:
            return
        if self.tier and self.tier != "resident":
            self.pipe.remove_all_hooks()
        if tier == "resident" or self.device.type == "cpu":
            self.pipe.to(self.device)  # on a CPU the host is the device: offload only copies
        elif tier == "model_offload":
            self.pipe.enable_model_cpu_offload(device=self.device)
        else:
            self.pipe.enable_sequential_cpu_offload(device=self.device)
        vae = getattr(self.pipe, "vae", None)
        if vae is not None and tier != "resident":
            for switch in ("enable_tiling", "enable_slicing"):
                if hasattr(vae, switch):
                    getattr(vae, switch)()
        self.tier = tier

    def release(self) -> None:
        if self.tier and self.tier != "resident":
            self.pipe.remove_all_hooks()


def load(entry: Any, device: torch.device, dtype: torch.dtype) -> EditModel:
    path = Path(entry.path)
    try:
        if path.is_dir():
            pipe, family, quantized = _from_folder(path, dtype)
        elif ef.qwen_transformer_keys(ef.tensor_shapes(path)) is not None:
            pipe, family, quantized = _from_split_files(path, dtype)
        else:
            pipe, family, quantized = _ip2p_single_file(path, dtype)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        if "out of memory" in str(exc).lower():
            raise
        raise ModelFormatError(f"{path.name} could not be loaded: {exc}", "") from exc
    pipe.set_progress_bar_config(disable=True)
    for m in pipe.components.values():
        if isinstance(m, torch.nn.Module):
            m.eval().requires_grad_(False)
    return EditModel(entry, family, pipe, dtype, device, quantized)


# --- diffusers folders ----------------------------------------------------------------------


def _from_folder(root: Path, dtype: torch.dtype) -> tuple[Any, str, str]:
    import diffusers

    found = ef.inspect_edit(root, "diffusion_models")
    if found is None or not found.usable:
        reason = found.reason if found is not None else "not an instruction-editing pipeline"
        raise ModelFormatError(f"{root.name} cannot be used: {reason}.", "")
    cls = getattr(diffusers, ef.FAMILY_INFO[found.family].pipeline)
    extra: dict[str, Any] = {}
    if found.family == ef.IP2P:
        extra = {"safety_checker": None, "requires_safety_checker": False}
    pipe = cls.from_pretrained(root, dtype=dtype, local_files_only=True, **extra)
    return pipe, found.family, ""


# --- ComfyUI's split Qwen files ---------------------------------------------------------------


def _from_split_files(transformer: Path, dtype: torch.dtype) -> tuple[Any, str, str]:
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageEditPlusPipeline,
    )
    from transformers import Qwen2VLProcessor

    found = ef.inspect_edit(transformer, "diffusion_models")
    if found is None or not found.usable:
        raise ModelFormatError(
            f"{transformer.name} cannot be used: {found.reason if found else 'unknown'}.",
            "Put the Qwen2.5-VL text encoder in text_encoders/ and the Qwen-Image VAE in "
            "vae/ (ComfyUI's split files), or use a diffusers folder.",
        )
    model, quantized = load_qwen_transformer(transformer, dtype, found.family == ef.QWEN_2511)
    processor = Qwen2VLProcessor.from_pretrained(QWEN_TOKENIZER)
    parts = {
        "transformer": model,
        "text_encoder": load_qwen_text_encoder(Path(found.companions["text_encoder"]), dtype),
        "vae": load_qwen_vae(Path(found.companions["vae"]), dtype),
        "tokenizer": processor.tokenizer,
        "processor": processor,
        "scheduler": FlowMatchEulerDiscreteScheduler.from_pretrained(
            QWEN_CONFIGS, subfolder="scheduler"
        ),
    }
    cls = QwenImageEditPipeline if found.family == ef.QWEN_V1 else QwenImageEditPlusPipeline
    return cls(**parts), found.family, quantized


def _strip(shapes: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in shapes.items()}


def rope_axes(head_dim: int) -> list[int]:
    """The rotary axes (frame, height, width) of a head: Qwen-Image's 16/56/56 for its
    128-wide heads, split in the same proportions for other widths (even sizes)."""
    if head_dim == 128:
        return [16, 56, 56]
    a = max(2, head_dim // 8 // 2 * 2)
    b = (head_dim - a) // 2 // 2 * 2
    return [a, b, head_dim - a - b]


def transformer_config(shapes: dict[str, Any], zero_cond_t: bool) -> dict[str, Any]:
    cfg = json.loads((QWEN_CONFIGS / "transformer" / "config.json").read_text())
    shape = {k: v[1] for k, v in shapes.items()}
    inner, in_channels = shape["img_in.weight"]
    head_dim = shape["transformer_blocks.0.attn.norm_q.weight"][0]
    patch = int(cfg["patch_size"])
    layers = {int(k.split(".")[1]) for k in shape if k.startswith("transformer_blocks.")}
    cfg.update(
        in_channels=in_channels,
        out_channels=shape["proj_out.weight"][0] // (patch * patch),
        num_layers=max(layers) + 1,
        attention_head_dim=head_dim,
        num_attention_heads=inner // head_dim,
        joint_attention_dim=shape["txt_in.weight"][1],
        axes_dims_rope=rope_axes(head_dim),
        zero_cond_t=zero_cond_t,
    )
    return cfg


def _config_dir(kind: str, cfg: dict[str, Any], subfolder: str) -> Path:
    """A configuration written once to the cache, named by its content."""
    blob = json.dumps(cfg, sort_keys=True).encode()
    out = paths.cache_dir() / "edit-configs" / f"{kind}-{hashlib.sha1(blob).hexdigest()[:16]}"
    target = out / subfolder / "config.json"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(cfg, indent=1))
    return out


def load_qwen_transformer(path: Path, dtype: torch.dtype, zero_cond_t: bool) -> tuple[Any, str]:
    from diffusers import QwenImageTransformer2DModel

    shapes = ef.tensor_shapes(path)
    prefix = ef.qwen_transformer_keys(shapes) or ""
    cfg = transformer_config(_strip(shapes, prefix), zero_cond_t)
    if path.suffix.lower() == ".gguf":
        from diffusers import GGUFQuantizationConfig

        folder = _config_dir("transformer", cfg, "transformer")
        model = QwenImageTransformer2DModel.from_single_file(
            str(path),
            quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
            config=str(folder),
            subfolder="transformer",
            torch_dtype=dtype,
            local_files_only=True,
        )
        return model, "gguf"
    tensors = _read_tensors(path, prefix)
    model = _assign(lambda: QwenImageTransformer2DModel.from_config(cfg), tensors, dtype)
    return model, "fp8" if _cast_fp8_layers(model, tensors) else ""


def load_qwen_text_encoder(path: Path, dtype: torch.dtype) -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tensors = {_text_encoder_key(k): v for k, v in _read_tensors(path, "").items()}
    tensors.pop("scaled_fp8", None)
    config = Qwen2_5_VLConfig(**text_encoder_config({k: list(v.shape) for k, v in tensors.items()}))
    model = _assign(lambda: Qwen2_5_VLForConditionalGeneration(config), tensors, dtype)
    _cast_fp8_layers(model, tensors)
    return model


def _text_encoder_key(key: str) -> str:
    """The original Qwen2.5-VL names (model.layers.*, visual.*) -> transformers 5's."""
    if key.startswith("model.") and not key.startswith(("model.language_model.", "model.visual.")):
        return "model.language_model." + key[len("model.") :]
    if key.startswith("visual."):
        return "model." + key
    return key


def text_encoder_config(shapes: dict[str, list[int]]) -> dict[str, Any]:
    """The shipped Qwen2.5-VL-7B configuration with widths and depths read from the tensors."""
    cfg = json.loads((QWEN_CONFIGS / "text_encoder" / "config.json").read_text())
    text, vision = cfg["text_config"], cfg["vision_config"]
    lm, vis = "model.language_model.", "model.visual."
    vocab, hidden = shapes[f"{lm}embed_tokens.weight"]
    q_out = shapes[f"{lm}layers.0.self_attn.q_proj.weight"][0]
    k_out = shapes[f"{lm}layers.0.self_attn.k_proj.weight"][0]
    head_dim = 128 if q_out % 128 == 0 and q_out >= 1024 else max(1, q_out // 2)
    layers = {
        int(k[len(f"{lm}layers.") :].split(".")[0]) for k in shapes if k.startswith(f"{lm}layers.")
    }
    half = head_dim // 2
    section = [max(1, round(s * half / 64)) for s in (16, 24, 24)]
    section[0] += half - sum(section)
    text.update(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=len(layers),
        max_window_layers=len(layers),
        intermediate_size=shapes[f"{lm}layers.0.mlp.gate_proj.weight"][0],
        num_attention_heads=q_out // head_dim, num_key_value_heads=max(1, k_out // head_dim),
        head_dim=head_dim,
    )  # fmt: skip
    text["rope_parameters"]["mrope_section"] = section
    patch = shapes[f"{vis}patch_embed.proj.weight"]
    width = patch[0]
    blocks = {
        int(k[len(f"{vis}blocks.") :].split(".")[0])
        for k in shapes
        if k.startswith(f"{vis}blocks.")
    }
    depth = len(blocks)
    vision.update(
        depth=depth, hidden_size=width, patch_size=patch[-1], temporal_patch_size=patch[2],
        intermediate_size=shapes[f"{vis}blocks.0.mlp.gate_proj.weight"][0],
        num_heads=width // 80 if width % 80 == 0 else max(1, width // 8),
        out_hidden_size=shapes[f"{vis}merger.mlp.2.weight"][0],
        fullatt_block_indexes=[i for i in range(depth) if i % 8 == 7] or [depth - 1],
    )  # fmt: skip
    return cfg


def load_qwen_vae(path: Path, dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKLQwenImage
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    tensors = _read_tensors(path, "")
    if "encoder.conv_in.weight" not in tensors:  # the original (Wan 2.1 style) names
        tensors = convert_wan_vae_to_diffusers(tensors)
    cfg = vae_config({k: list(v.shape) for k, v in tensors.items()})
    return _assign(lambda: AutoencoderKLQwenImage.from_config(cfg), tensors, dtype)


def vae_config(shapes: dict[str, list[int]]) -> dict[str, Any]:
    """The shipped Qwen-Image VAE configuration with its widths and depths read from the
    tensors: a residual block or a resample per encoder entry, in order."""
    cfg = json.loads((QWEN_CONFIGS / "vae" / "config.json").read_text())
    base = shapes["encoder.conv_in.weight"][0]
    z_dim = shapes["quant_conv.weight"][0] // 2
    entries = sorted({int(k.split(".")[2]) for k in shapes if k.startswith("encoder.down_blocks.")})
    mult, temporal, res_blocks, count = [], [], 0, 0
    width = base
    for i in entries:
        p = f"encoder.down_blocks.{i}."
        if f"{p}resample.1.weight" in shapes:
            mult.append(width // base)
            temporal.append(f"{p}time_conv.weight" in shapes)
            res_blocks = res_blocks or count
            count = 0
        elif f"{p}conv1.weight" in shapes:
            width = shapes[f"{p}conv1.weight"][0]
            count += 1
    mult.append(width // base)
    cfg.update(base_dim=base, z_dim=z_dim, dim_mult=mult, temperal_downsample=temporal,
               num_res_blocks=res_blocks or count)  # fmt: skip
    if z_dim != len(cfg["latents_mean"]):  # not the released VAE: a neutral normalisation
        cfg["latents_mean"], cfg["latents_std"] = [0.0] * z_dim, [1.0] * z_dim
    return cfg


def _read_tensors(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    return {
        k[len(prefix) :] if prefix and k.startswith(prefix) else k: v for k, v in tensors.items()
    }


def _assign(make: Any, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> Any:
    """The module `make()` builds, without initialising its weights (a 7B or 20B model would
    take minutes), filled with `tensors`: fp8 linear weights stay fp8, the rest in `dtype`."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = make()
    own = dict(model.named_parameters())
    state = {}
    for name, value in tensors.items():
        if name.endswith(SCALE_SUFFIXES) or name not in own:
            continue
        keep = value.dtype in FP8_TYPES and value.ndim == 2
        state[name] = value if keep else value.to(dtype)
    missing = [n for n in own if n not in state]
    for name in missing:  # e.g. the language head a text-encoder file leaves out: never used
        state[name] = torch.zeros(own[name].shape, dtype=dtype)
    if missing:
        log.info("%s: %d tensors absent from the file, zero-filled: %s", type(model).__name__,
                 len(missing), ", ".join(missing[:4]))  # fmt: skip
    model.load_state_dict(state, strict=False, assign=True)
    return model


def _cast_fp8_layers(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> int:
    """Give each linear layer that holds fp8 weights a forward that up-casts them (times the
    file's scale, if any) for that layer's call only; returns how many there are."""
    count = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module.weight.dtype not in FP8_TYPES:
            continue
        scale = next((tensors[name + s] for s in SCALE_SUFFIXES if name + s in tensors), None)
        if scale is not None:
            module.register_buffer("fp8_scale", scale.float().reshape(-1, 1) if scale.numel() > 1
                                   else scale.float().reshape(()))  # fmt: skip
        module.forward = types.MethodType(_fp8_forward, module)
        count += 1
    return count


def _fp8_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    weight = self.weight.to(x.dtype)
    scale = getattr(self, "fp8_scale", None)
    if scale is not None:
        weight = weight * scale.to(x.dtype)
    bias = None if self.bias is None else self.bias.to(x.dtype)
    return torch.nn.functional.linear(x, weight, bias)


# --- InstructPix2Pix as one original-layout checkpoint ----------------------------------------


def _ip2p_single_file(path: Path, dtype: torch.dtype) -> tuple[Any, str, str]:
    """instruct-pix2pix-00-22000.safetensors: SD 1.5's layout with an 8-channel UNet, converted
    by diffusers' single-file code against the shipped SD 1.5 configuration."""
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    from backend.diffusion import families, loading

    found = ef.inspect_edit(path, "checkpoints")
    if found is None or not found.usable:
        raise ModelFormatError(f"{path.name} is not an InstructPix2Pix checkpoint.", "")
    shapes = families.shapes_of(families.read_header(path))
    config = loading.sized_config("SD1.5", shapes, False, families.trained_size(path))
    unet_cfg = json.loads((config / "unet" / "config.json").read_text())
    unet_cfg["in_channels"] = 8
    folder = _config_dir("ip2p-unet", unet_cfg, "unet")
    checkpoint = load_file(str(path))
    common = {"torch_dtype": dtype, "local_files_only": True}
    unet = UNet2DConditionModel.from_single_file(
        checkpoint, config=str(folder), subfolder="unet", **common
    )
    vae = AutoencoderKL.from_single_file(checkpoint, config=str(config), subfolder="vae", **common)
    text = create_diffusers_clip_model_from_ldm(
        CLIPTextModel, checkpoint, config=str(config), subfolder="text_encoder", **common
    )
    scheduler = EulerAncestralDiscreteScheduler.from_pretrained(config, subfolder="scheduler")
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text, tokenizer=loading._tokenizer(loading.CLIP_TOKENIZER, False),
        unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    return pipe, ef.IP2P, ""
