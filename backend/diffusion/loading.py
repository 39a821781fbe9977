"""Stable Diffusion models as users have them, loaded offline into shared components.

A single-file checkpoint (checkpoints/*.safetensors, the ComfyUI / A1111 layout) is converted
by diffusers' own single-file conversion against the configuration shipped for its family
(backend/diffusion/configs/), sized to the file's tensors, with CLIP's tokenizer shipped
beside it: no model hub is asked. A diffusers folder loads as it is. Components stay on the CPU
until a task applies the memory tier the model manager chose (`DiffusionModel.place`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from backend import paths
from backend.diffusion import families
from backend.errors import InvalidParameterError, ModelFormatError

log = logging.getLogger("restora.diffusion")

CONFIGS = Path(__file__).with_name("configs")
CLIP_TOKENIZER = CONFIGS / "clip_tokenizer"
#: OpenCLIP's tokenizers (SD 2.x, SDXL's second encoder) pad with "!", CLIP-L's with end-of-text
OPEN_CLIP_PAD = "!"
#: samplers by the names users know (A1111 / ComfyUI), and the diffusers class behind each
SCHEDULERS = ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc")


@dataclass
class DiffusionModel:
    """The components of one Stable Diffusion model, shared by every task that runs it."""

    entry: Any
    family: str
    components: dict[str, Any]
    dtype: torch.dtype
    device: torch.device
    tier: str = ""
    _pipelines: dict[str, Any] = field(default_factory=dict)

    @property
    def precision_label(self) -> str:
        return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.dtype, "fp32")

    @property
    def precision_reason(self) -> str:
        return f"{self.family}, {self.tier or 'not placed yet'}"

    @property
    def native_size(self) -> int:
        """The side, in pixels, the UNet was trained at (its sample size x the VAE's factor)."""
        unet, vae = self.components["unet"], self.components["vae"]
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        return int(unet.config.sample_size) * factor

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.components["vae"].config.block_out_channels) - 1)

    def weight_bytes(self) -> tuple[int, int]:
        """Bytes of all weights, and of the largest component (what model offload needs)."""
        sizes = [
            sum(p.numel() * p.element_size() for p in m.parameters())
            for m in self.components.values()
            if isinstance(m, torch.nn.Module)
        ]
        return sum(sizes), max(sizes, default=0)

    def pipeline(self, vae: Any = None, controlnet: Any = None) -> Any:
        """The img2img pipeline over the shared components (one per VAE), or with a ControlNet
        (a ControlNetWeights) its ControlNet img2img pipeline: dropped again by `forget`, so a
        ControlNet the manager unloads is not kept alive here."""
        key = "img2img" if vae is None else f"img2img:{id(vae)}"
        if controlnet is not None:
            key = f"{key}:controlnet:{id(controlnet)}"
        if key not in self._pipelines:
            parts = dict(self.components)
            if vae is not None:
                parts["vae"] = vae
            pipe = _make_pipeline(self.family, parts, controlnet)
            pipe.set_progress_bar_config(disable=True)
            self._pipelines[key] = pipe
            if self.tier:
                apply_tier(pipe, self.tier, self.device)
        return self._pipelines[key]

    def forget(self, controlnet: Any) -> None:
        """Drop the pipelines built around `controlnet` (after the job that used it)."""
        dropped = [k for k in self._pipelines if k.endswith(f":controlnet:{id(controlnet)}")]
        offloaded = self.tier not in ("", "resident")
        for key in dropped:
            pipe = self._pipelines.pop(key)
            if offloaded:
                pipe.remove_all_hooks()
        if dropped and offloaded:
            # the pipelines share their components, so the dropped one's offload hooks were
            # theirs too: hook the ones left again
            for pipe in self._pipelines.values():
                apply_tier(pipe, self.tier, self.device)

    def place(self, tier: str) -> None:
        """Apply the memory tier the manager chose (resident, model or sequential offload)."""
        if tier == self.tier:
            return
        for pipe in self._pipelines.values():
            if self.tier and self.tier != "resident":
                pipe.remove_all_hooks()
            apply_tier(pipe, tier, self.device)
        if not self._pipelines and tier == "resident":
            for m in self.components.values():
                if isinstance(m, torch.nn.Module):
                    m.to(self.device)
        self.tier = tier

    def release(self) -> None:
        for pipe in self._pipelines.values():
            if self.tier and self.tier != "resident":
                pipe.remove_all_hooks()
        self._pipelines.clear()


def _make_pipeline(family: str, parts: dict[str, Any], controlnet: Any) -> Any:
    from diffusers import (
        StableDiffusionControlNetImg2ImgPipeline,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionXLControlNetImg2ImgPipeline,
        StableDiffusionXLImg2ImgPipeline,
    )

    if controlnet is not None:
        parts["controlnet"] = controlnet.module
    if family == "SDXL":
        parts.setdefault("text_encoder_2", None)
        parts.setdefault("tokenizer_2", None)
        cls = StableDiffusionXLImg2ImgPipeline
        if controlnet is not None:
            cls = StableDiffusionXLControlNetImg2ImgPipeline
        return cls(**parts, requires_aesthetics_score=False)
    cls = StableDiffusionImg2ImgPipeline
    if controlnet is not None:
        cls = StableDiffusionControlNetImg2ImgPipeline
    return cls(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def apply_tier(pipe: Any, tier: str, device: torch.device) -> None:
    if tier == "resident" or device.type == "cpu":
        pipe.to(device)  # on a CPU the host is the device: offload would only add copies
    elif tier == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    if tier != "resident":
        pipe.vae.enable_slicing()


def run_dtype(device: torch.device, precision: str) -> torch.dtype:
    """fp16 on CUDA and MPS; on a CPU bf16 where it has bf16 instructions (AVX-512 BF16 or
    AMX: measured on a Zen 4 with SD 1.5 at 512 px, a UNet step 8.6 -> 4.3 s, a VAE decode
    15.0 -> 3.9 s), else fp32 (half precision is emulated there: slower)."""
    named = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if precision in named:
        return named[precision]
    if device.type in ("cuda", "mps"):
        return torch.float16
    from backend.devices import cpu_bf16_instructions

    return torch.bfloat16 if cpu_bf16_instructions() else torch.float32


def load(entry: Any, device: torch.device, dtype: torch.dtype) -> DiffusionModel:
    path = Path(entry.path)
    try:
        if path.is_dir():
            parts, family = _from_folder(path, dtype)
        else:
            parts, family = _from_single_file(path, dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if "out of memory" in str(exc).lower():
            raise
        raise ModelFormatError(f"{path.name} could not be loaded: {exc}", "") from exc
    for m in parts.values():
        if isinstance(m, torch.nn.Module):
            m.eval().requires_grad_(False)
    return DiffusionModel(entry, family, parts, dtype, device)


def _from_folder(root: Path, dtype: torch.dtype) -> tuple[dict[str, Any], str]:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    family = families.inspect_folder(root).family
    parts: dict[str, Any] = {
        "unet": UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=dtype),
        "vae": AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=dtype),
        "text_encoder": CLIPTextModel.from_pretrained(root / "text_encoder", dtype=dtype),
        "tokenizer": _tokenizer(root / "tokenizer", open_clip=family == "SD2.1"),
    }
    if (root / "scheduler").is_dir():
        parts["scheduler"] = DDIMScheduler.from_pretrained(root, subfolder="scheduler")
    else:
        parts["scheduler"] = _shipped_scheduler(family)
    if family == "SDXL":
        parts["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(
            root / "text_encoder_2", dtype=dtype
        )
        parts["tokenizer_2"] = _tokenizer(root / "tokenizer_2", open_clip=True)
    return parts, family


def _tokenizer(folder: Path, open_clip: bool) -> Any:
    """The folder's own tokenizer, else CLIP's shipped one (the same vocabulary)."""
    from transformers import CLIPTokenizer

    source = folder if (folder / "vocab.json").is_file() else CLIP_TOKENIZER
    tok = CLIPTokenizer.from_pretrained(source)
    if open_clip and source == CLIP_TOKENIZER:
        tok.pad_token = OPEN_CLIP_PAD
    return tok


def _shipped_scheduler(family: str) -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_pretrained(
        CONFIGS / families.CONFIG_NAMES.get(family, "sd15"), subfolder="scheduler"
    )


def _from_single_file(path: Path, dtype: torch.dtype) -> tuple[dict[str, Any], str]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from backend.diffusion import prediction

    found = families.inspect_file(path, "checkpoints")
    if not found.usable:
        raise ModelFormatError(f"{path.name} cannot be used: {found.reason}.", "")
    family = found.family
    shapes = families.shapes_of(families.read_header(path))
    decided = prediction.decide(path, family)
    log.info("%s predicts %s: %s", path.name, decided.prediction, decided.why)
    v_model = decided.prediction == "v_prediction"
    config = sized_config(family, shapes, v_model, families.trained_size(path))
    checkpoint = load_file(str(path))
    common = {"config": str(config), "torch_dtype": dtype, "local_files_only": True}
    # each text encoder converts from its own tensors only: diffusers tells CLIP-L from
    # OpenCLIP by probing keys, and two encoders of one width in one dict would be confused
    first = _only(checkpoint, ("cond_stage_model.", "conditioner.embedders.0."))
    parts: dict[str, Any] = {
        "unet": UNet2DConditionModel.from_single_file(checkpoint, subfolder="unet", **common),
        "vae": AutoencoderKL.from_single_file(checkpoint, subfolder="vae", **common),
        "text_encoder": create_diffusers_clip_model_from_ldm(
            CLIPTextModel, first, subfolder="text_encoder", **common
        ),
        "tokenizer": _tokenizer(CLIP_TOKENIZER, open_clip=family == "SD2.1"),
        "scheduler": _scheduler_from(config),
    }
    if family == "SDXL":
        parts["text_encoder_2"] = create_diffusers_clip_model_from_ldm(
            CLIPTextModelWithProjection, _only(checkpoint, ("conditioner.embedders.1.",)),
            subfolder="text_encoder_2", **common,
        )  # fmt: skip
        parts["tokenizer_2"] = _tokenizer(CLIP_TOKENIZER, open_clip=True)
    del checkpoint, first
    return parts, family


def _only(checkpoint: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in checkpoint.items() if k.startswith(prefixes)}


def _scheduler_from(config: Path) -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_pretrained(config, subfolder="scheduler")


def sized_config(
    family: str, shapes: dict[str, list[int]], v_prediction: bool, trained: int | None = None
) -> Path:
    """The family's shipped configuration with the widths and depths read from the file's
    tensors (the same numbers for a released checkpoint), written once to the cache."""
    base = CONFIGS / families.CONFIG_NAMES[family]
    configs = {
        name: json.loads((base / name / "config.json").read_text())
        for name in ("unet", "vae", "text_encoder", "text_encoder_2")
        if (base / name / "config.json").is_file()
    }
    _size_unet(configs["unet"], shapes)
    _size_vae(configs["vae"], shapes)
    if trained:
        factor = 2 ** (len(configs["vae"]["block_out_channels"]) - 1)
        configs["unet"]["sample_size"] = trained // factor
        configs["vae"]["sample_size"] = trained
    _size_text(
        configs["text_encoder"],
        shapes,
        ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer."),
    )
    # OpenCLIP's layout: SD 2.x's only encoder (its last layer unused: SD 2 conditions on the
    # penultimate one) and SDXL's second, whose projection gives the pooled embedding
    _size_open_clip(configs["text_encoder"], shapes, "cond_stage_model.model.", drop_last=True)
    if "text_encoder_2" in configs:
        _size_open_clip(
            configs["text_encoder_2"], shapes, "conditioner.embedders.1.model.", drop_last=False
        )
    scheduler = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    scheduler["prediction_type"] = "v_prediction" if v_prediction else "epsilon"
    blob = json.dumps([configs, scheduler], sort_keys=True).encode()
    out = paths.cache_dir() / "diffusion-configs" / hashlib.sha1(blob).hexdigest()[:16]
    if not (out / "model_index.json").is_file():
        for name, cfg in configs.items():
            (out / name).mkdir(parents=True, exist_ok=True)
            (out / name / "config.json").write_text(json.dumps(cfg, indent=1))
        (out / "scheduler").mkdir(parents=True, exist_ok=True)
        (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
        (out / "model_index.json").write_text((base / "model_index.json").read_text())
    return out


def _size_unet(
    cfg: dict[str, Any], shapes: dict[str, list[int]], prefix: str | None = None
) -> None:
    """The UNet's shape read from its LDM-named tensors: levels and blocks per level (from
    where the downsamplers sit), widths, which levels attend and how many transformer
    blocks they stack, the projection kind, the context width and SDXL's added embedding.
    A released file reproduces the shipped configuration; a pruned or small one gets its own.
    `prefix`: where the tensors' names start (a ControlNet's encoder has the same layout)."""
    u = families.UNET if prefix is None else prefix
    start = f"{u}input_blocks."
    blocks = {int(k[len(start) :].split(".")[0]) for k in shapes if k.startswith(start)}
    downs = sorted(i for i in blocks if f"{start}{i}.0.op.weight" in shapes)
    if not blocks or (not downs and max(blocks) < 1):
        raise ModelFormatError("the UNet has no input_blocks.* tensors", "")
    layers = downs[0] - 1 if downs else max(blocks)
    widths, kinds, depths = [], [], []
    for level in range(len(downs) + 1):
        first = f"{start}{1 + level * (layers + 1)}."
        key = f"{first}0.out_layers.3.weight"
        if key not in shapes:
            raise ModelFormatError(f"the UNet has no tensor {key}: not an SD layout", "")
        widths.append(shapes[key][0])
        attn = f"{first}1.transformer_blocks."
        stacked = {k[len(attn) :].split(".")[0] for k in shapes if k.startswith(attn)}
        kinds.append("CrossAttnDownBlock2D" if stacked else "DownBlock2D")
        depths.append(len(stacked) or 1)
    cfg["block_out_channels"] = widths
    cfg["layers_per_block"] = layers
    cfg["down_block_types"] = kinds
    cfg["up_block_types"] = [k.replace("Down", "Up") for k in reversed(kinds)]
    cfg["transformer_layers_per_block"] = depths[0] if len(set(depths)) == 1 else depths
    cfg["norm_num_groups"] = math.gcd(int(cfg.get("norm_num_groups", 32)), *widths)
    projections = [s for k, s in shapes.items() if k.startswith(u) and k.endswith("proj_in.weight")]
    if projections:
        cfg["use_linear_projection"] = len(projections[0]) == 2
    ctx = families.context_dim(shapes, u)
    if ctx is not None:
        cfg["cross_attention_dim"] = ctx
    added = shapes.get(f"{u}label_emb.0.0.weight")
    if added is not None and cfg.get("addition_embed_type") == "text_time":
        cfg["projection_class_embeddings_input_dim"] = added[1]
    heads = cfg["attention_head_dim"]
    if isinstance(heads, int):
        cfg["attention_head_dim"] = _divisor(min(widths), heads)
    else:
        if len(heads) != len(widths):  # another depth: SD 2 and SDXL use 64-wide heads
            heads = [max(1, w // 64) for w in widths]
        cfg["attention_head_dim"] = [_divisor(w, h) for w, h in zip(widths, heads)]


def _size_vae(
    cfg: dict[str, Any], shapes: dict[str, list[int]], prefix: str = "first_stage_model."
) -> None:
    p = f"{prefix}encoder.down."
    levels = sorted({int(k[len(p) :].split(".")[0]) for k in shapes if k.startswith(p)})
    if not levels:
        raise ModelFormatError("the checkpoint's VAE has no encoder.down.* tensors", "")
    widths = [shapes[f"{p}{i}.block.0.conv1.weight"][0] for i in levels]
    blocks = {
        int(k[len(f"{p}0.block.") :].split(".")[0]) for k in shapes if k.startswith(f"{p}0.block.")
    }
    cfg["block_out_channels"] = widths
    cfg["layers_per_block"] = len(blocks)
    cfg["down_block_types"] = ["DownEncoderBlock2D"] * len(widths)
    cfg["up_block_types"] = ["UpDecoderBlock2D"] * len(widths)
    cfg["norm_num_groups"] = math.gcd(int(cfg.get("norm_num_groups", 32)), *widths)


def _size_text(
    cfg: dict[str, Any], shapes: dict[str, list[int]], prefixes: tuple[str, ...]
) -> None:
    prefix = next(
        (p for p in prefixes if f"{p}text_model.embeddings.token_embedding.weight" in shapes), None
    )
    if prefix is None:
        return  # OpenCLIP's layout (SD 2.x): the shipped size, checked by the conversion
    vocab, hidden = shapes[f"{prefix}text_model.embeddings.token_embedding.weight"]
    layer = f"{prefix}text_model.encoder.layers."
    depth = len({k[len(layer) :].split(".")[0] for k in shapes if k.startswith(layer)})
    cfg.update(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=depth,
        intermediate_size=shapes[f"{layer}0.mlp.fc1.weight"][0],
        num_attention_heads=_divisor(hidden, int(cfg["num_attention_heads"])),
        projection_dim=hidden if cfg.get("projection_dim", 0) > hidden else cfg["projection_dim"],
    )


def _size_open_clip(
    cfg: dict[str, Any], shapes: dict[str, list[int]], prefix: str, drop_last: bool
) -> None:
    """An OpenCLIP text tower (token_embedding, transformer.resblocks.N, ln_final,
    text_projection) sized into a CLIPTextConfig."""
    token = shapes.get(f"{prefix}token_embedding.weight")
    if token is None:
        return
    vocab, hidden = token
    layer = f"{prefix}transformer.resblocks."
    depth = len({k[len(layer) :].split(".")[0] for k in shapes if k.startswith(layer)})
    cfg.update(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=depth - 1 if drop_last else depth,
        intermediate_size=shapes[f"{layer}0.mlp.c_fc.weight"][0],
        num_attention_heads=_divisor(hidden, int(cfg["num_attention_heads"])),
        max_position_embeddings=shapes.get(f"{prefix}positional_embedding", [77])[0],
    )
    projection = shapes.get(f"{prefix}text_projection")
    if projection is not None and not drop_last:
        cfg["projection_dim"] = projection[1]


def _divisor(width: int, wanted: int) -> int:
    """`wanted` heads when they divide `width`, else the largest count below that does."""
    return next(h for h in range(min(wanted, width), 0, -1) if width % h == 0)


@dataclass
class SeparateVae:
    """A VAE from vae/, used instead of the checkpoint's own (shared by every task)."""

    entry: Any
    vae: Any
    device: torch.device
    precision_label: str = "fp32"
    precision_reason: str = "a separate VAE"


@dataclass
class LoraWeights:
    """A LoRA file's tensors, applied to a model for one job and removed after it."""

    entry: Any
    state_dict: dict[str, Any]
    family: str
    #: a LoRA's tensors wait on the host until applied
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision_label: str = "as stored"
    precision_reason: str = "a LoRA"


def load_vae(entry: Any, device: torch.device, dtype: torch.dtype) -> SeparateVae:
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    path = Path(entry.path)
    shapes = families.shapes_of(families.read_header(path))
    prefix = "first_stage_model." if any(k.startswith("first_stage_model.") for k in shapes) else ""
    tensors = load_file(str(path))
    if f"{prefix}encoder.down.0.block.0.conv1.weight" in shapes:
        cfg = json.loads((CONFIGS / "sd15" / "vae" / "config.json").read_text())
        _size_vae(cfg, shapes, prefix)
        blob = json.dumps(cfg, sort_keys=True).encode()
        out = (
            paths.cache_dir() / "diffusion-configs" / ("vae-" + hashlib.sha1(blob).hexdigest()[:16])
        )
        (out / "vae").mkdir(parents=True, exist_ok=True)
        (out / "vae" / "config.json").write_text(json.dumps(cfg))
        vae = AutoencoderKL.from_single_file(
            tensors, config=str(out), subfolder="vae", torch_dtype=dtype, local_files_only=True
        )
    else:  # saved by diffusers: its own key names
        raise ModelFormatError(
            f"{path.name} is a VAE in diffusers' key layout; put its folder beside a diffusers "
            "model, or use an original-layout (encoder.down.*) VAE file.",
            "",
        )
    return SeparateVae(entry, vae.eval().requires_grad_(False), device)


def load_lora(entry: Any) -> LoraWeights:
    from safetensors.torch import load_file

    return LoraWeights(entry, load_file(entry.path), getattr(entry, "architecture", "unknown"))


def make_scheduler(pipe: Any, name: str) -> Any:
    """The named sampler over the model's own noise schedule (and prediction type)."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    config = pipe.scheduler.config
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name in ("dpmpp_2m", "dpmpp_2m_karras"):
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", use_karras_sigmas=name.endswith("karras")
        )
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config)
    raise InvalidParameterError(f"Unknown sampler '{name}'.", f"Choose one of {SCHEDULERS}.")
