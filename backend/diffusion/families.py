"""What a diffusion file is, read from its safetensors header alone (names and shapes, no
tensor is loaded): the family (SD1.5, SD2.1, SDXL or unknown), the role (checkpoint, VAE,
LoRA, ControlNet), whether Restora can use it and why not, and the memory it needs.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAMILIES = ("SD1.5", "SD2.1", "SDXL")
#: the shipped configuration folder (backend/diffusion/configs/) of each family
CONFIG_NAMES = {"SD1.5": "sd15", "SD2.1": "sd21", "SDXL": "sdxl"}
#: cross-attention width -> family; it is what tells SD 1.x (CLIP-L), 2.x (OpenCLIP-H) and
#: SDXL (CLIP-L + OpenCLIP-bigG) apart, in checkpoints and LoRAs alike
CONTEXT_DIMS = {768: "SD1.5", 1024: "SD2.1", 2048: "SDXL"}
#: the side each family was trained at, in pixels: refine works at this size
NATIVE_SIZE = {"SD1.5": 512, "SD2.1": 768, "SDXL": 1024}
#: working memory of one step at the native size (latents, attention, VAE decode), fp16
WORKING_BYTES = {"SD1.5": 1 << 30, "SD2.1": 3 << 29, "SDXL": 2 << 30}
#: a ControlNet runs a copy of the UNet's encoder beside it: about a quarter of the UNet's
#: working memory more (its residuals are added to the UNet's skip connections)
CONTROLNET_WORKING_SHARE = 4
#: the key prefix of a ControlNet saved inside an LDM-style file (lllyasviel's releases)
CONTROL = "control_model."
UNET = "model.diffusion_model."
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_MAX_HEADER = 100 << 20


@dataclass
class Inspection:
    role: str  # "checkpoint", "vae", "lora", "controlnet", "unknown"
    family: str = "unknown"
    usable: bool = False
    reason: str = ""
    #: parameters per component ("unet", "vae", "text_encoder", ...), for memory estimates
    params: dict[str, int] = field(default_factory=dict)
    layout: str = "single_file"  # or "diffusers_folder"

    def memory_bytes(self, element_bytes: int = 2) -> int:
        """Bytes to hold every component at `element_bytes` per weight plus one step's work."""
        weights = sum(self.params.values()) * element_bytes
        working = WORKING_BYTES.get(self.family, 1 << 30)
        if self.role == "controlnet":
            return weights + working // CONTROLNET_WORKING_SHARE
        return weights + (working if self.role == "checkpoint" else 0)


def read_header(path: str | Path) -> dict[str, Any]:
    """The safetensors header: tensor name -> {"dtype", "shape", "data_offsets"}."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if not 0 < length <= _MAX_HEADER:
            raise ValueError("not a safetensors file")
        header = json.loads(f.read(length))
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file")
    header.pop("__metadata__", None)
    return header


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors header's `__metadata__` (string keys and values), empty when absent."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if not 0 < length <= _MAX_HEADER:
            raise ValueError("not a safetensors file")
        meta = json.loads(f.read(length)).get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def read_tensor(path: str | Path, name: str) -> Any:
    """One tensor of a safetensors file as a float32 numpy array, read from its byte range
    alone (a statistic of one small tensor must not load a 7 GB file)."""
    import numpy as np

    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        info = header[name]
        begin, end = info["data_offsets"]
        f.seek(8 + length + int(begin))
        raw = f.read(int(end) - int(begin))
    dtype = info["dtype"]
    if dtype == "BF16":  # the upper half of a float32
        values = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        return values.view(np.float32).reshape(info["shape"])
    kinds = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}
    if dtype not in kinds:
        raise ValueError(f"{name} is stored as {dtype}, not a float")
    return np.frombuffer(raw, kinds[dtype]).astype(np.float32).reshape(info["shape"])


def trained_size(path: str | Path) -> int | None:
    """The side a checkpoint was trained at, from Stability's ModelSpec metadata
    (`modelspec.resolution`, "1024x1024"), when the file has it."""
    meta = read_metadata(path)
    text = str(meta.get("modelspec.resolution", ""))
    sides = [int(v) for v in text.lower().split("x") if v.strip().isdigit()]
    return max(sides) if len(sides) == 2 else None


def shapes_of(header: dict[str, Any]) -> dict[str, list[int]]:
    return {k: list(v.get("shape", [])) for k, v in header.items() if isinstance(v, dict)}


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def inspect_file(path: str | Path, folder: str) -> Inspection:
    """Describe a diffusion file; never raises for a bad one (it comes back unusable)."""
    path = Path(path)
    role = {"vae": "vae", "loras": "lora", "controlnet": "controlnet"}.get(folder, "checkpoint")
    if path.suffix.lower() != ".safetensors":
        return Inspection(
            role,
            reason="only .safetensors diffusion files are loaded (pickled "
            ".ckpt files can run code); convert it to .safetensors",
        )
    try:
        shapes = shapes_of(read_header(path))
    except (OSError, ValueError, struct.error) as exc:
        return Inspection(role, reason=f"not a readable safetensors file ({exc})")
    if role == "vae":
        return _vae(shapes)
    if role == "lora":
        return _lora(shapes)
    if role == "controlnet":
        return _controlnet(shapes)
    return _checkpoint(shapes)


def context_dim(shapes: dict[str, list[int]], prefix: str = UNET) -> int | None:
    for key, shape in shapes.items():
        if key.startswith(prefix) and key.endswith("attn2.to_k.weight") and len(shape) == 2:
            return shape[1]
    return None


def _checkpoint(shapes: dict[str, list[int]]) -> Inspection:
    out = Inspection("checkpoint")
    groups = {
        "unet": UNET,
        "vae": "first_stage_model.",
        "text_encoder": ("cond_stage_model.", "conditioner.embedders.0."),
        "text_encoder_2": "conditioner.embedders.1.",
    }
    for name, prefix in groups.items():
        total = sum(_numel(s) for k, s in shapes.items() if k.startswith(prefix))
        if total:
            out.params[name] = total
    if "unet" not in out.params:
        out.reason = "no UNet in it (model.diffusion_model.*): not a Stable Diffusion checkpoint"
        return out
    ctx = context_dim(shapes)
    in_ch = shapes.get(f"{UNET}input_blocks.0.0.weight", [0, 0])[1]
    if ctx == 2048 and "text_encoder_2" in out.params:
        out.family = "SDXL"
    elif ctx == 1280:
        out.reason = "an SDXL refiner checkpoint; refine with an SDXL base checkpoint"
        return out
    elif ctx in (768, 1024) and "text_encoder" in out.params:
        out.family = CONTEXT_DIMS[ctx]
    elif ctx is not None and "text_encoder" in out.params:
        # a width no released family has (a small test model): the layout tells the family
        opened = any(k.startswith("cond_stage_model.model.") for k in shapes)
        out.family = "SDXL" if "text_encoder_2" in out.params else ("SD2.1" if opened else "SD1.5")
    else:
        out.reason = "its UNet or text encoder is of no Stable Diffusion family Restora knows"
        return out
    if in_ch != 4:
        kind = {9: "an inpainting", 8: "an InstructPix2Pix"}.get(in_ch, f"a {in_ch}-channel")
        out.reason = f"{kind} checkpoint; refine needs a base (4-channel) checkpoint"
        return out
    if "vae" not in out.params:
        out.reason = "it holds no VAE (first_stage_model.*); save it with its VAE baked in"
        return out
    out.usable = True
    return out


def _vae(shapes: dict[str, list[int]]) -> Inspection:
    out = Inspection("vae", params={"vae": sum(_numel(s) for s in shapes.values())})
    strip = "first_stage_model." if any(k.startswith("first_stage_model.") for k in shapes) else ""
    quant = shapes.get(f"{strip}quant_conv.weight")
    if quant is None or not (
        f"{strip}encoder.down.0.block.0.conv1.weight" in shapes
        or f"{strip}encoder.down_blocks.0.resnets.0.conv1.weight" in shapes
    ):
        out.reason = "not a Stable Diffusion VAE (no encoder/decoder with quant_conv)"
        return out
    if quant[0] != 8:
        out.reason = f"a {quant[0] // 2}-channel VAE (SD3/Flux); SD 1.5, 2.1 and SDXL use 4"
        return out
    out.family, out.usable = "SD", True  # SD 1.x, 2.x and SDXL VAEs share one architecture
    return out


_LORA_KEY = re.compile(r"(lora_down|lora_A|lora\.down)\.weight$")


def _lora(shapes: dict[str, list[int]]) -> Inspection:
    out = Inspection("lora", params={"lora": sum(_numel(s) for s in shapes.values())})
    downs = {k: s for k, s in shapes.items() if _LORA_KEY.search(k)}
    if not downs:
        out.reason = "no LoRA weights in it (lora_down / lora_A)"
        return out
    for key, shape in downs.items():
        if ("attn2" in key and ("to_k" in key or "to_v" in key)) and len(shape) == 2:
            out.family = CONTEXT_DIMS.get(shape[1], "unknown")
            break
    if out.family == "unknown" and any("lora_te2_" in k or "text_encoder_2" in k for k in downs):
        out.family = "SDXL"
    out.usable = True  # a LoRA of another family is refused when it is applied, with the reason
    return out


def inspect_folder(root: str | Path) -> Inspection:
    """A diffusers folder (model_index.json beside its component folders)."""
    root = Path(root)
    out = Inspection("checkpoint", layout="diffusers_folder")
    try:
        index = json.loads((root / "model_index.json").read_text())
        unet = json.loads((root / "unet" / "config.json").read_text())
    except (OSError, ValueError) as exc:
        out.reason = f"an incomplete diffusers folder ({exc.__class__.__name__}: {exc})"
        return out
    cls = str(index.get("_class_name", ""))
    if not cls.startswith("StableDiffusion"):
        out.reason = f"a {cls or 'unknown'} pipeline; refine runs Stable Diffusion 1.5/2.1/SDXL"
        return out
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        folder = root / component
        files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        total = 0
        for f in files:
            try:
                total += sum(_numel(s) for s in shapes_of(read_header(f)).values())
            except (OSError, ValueError, struct.error):
                out.reason = f"{component}/{f.name} is not a readable safetensors file"
                return out
        if total:
            out.params[component] = total
    for needed in ("unet", "vae", "text_encoder"):
        if needed not in out.params:
            out.reason = f"no {needed}/ weights in .safetensors form"
            return out
    if unet.get("in_channels", 4) != 4:
        out.reason = "an inpainting or edit UNet; refine needs a base (4-channel) model"
        return out
    if "XL" in cls or unet.get("addition_embed_type") == "text_time":
        out.family = "SDXL"
    else:
        ctx = unet.get("cross_attention_dim")
        opened = unet.get("use_linear_projection", False)
        out.family = CONTEXT_DIMS.get(ctx, "SD2.1" if opened else "SD1.5")
    out.usable = True
    return out


def controlnet_layout(shapes: dict[str, list[int]]) -> tuple[str, str]:
    """(layout, key prefix) of a ControlNet file: "ldm" (lllyasviel's key names, with or
    without the `control_model.` prefix) or "diffusers"; ("", "") when it is none."""
    if f"{CONTROL}input_hint_block.0.weight" in shapes:
        return "ldm", CONTROL
    if "input_hint_block.0.weight" in shapes:
        return "ldm", ""
    if "controlnet_cond_embedding.conv_in.weight" in shapes:
        return "diffusers", ""
    return "", ""


def _controlnet(shapes: dict[str, list[int]]) -> Inspection:
    out = Inspection("controlnet", params={"controlnet": sum(_numel(s) for s in shapes.values())})
    if any("lora" in k for k in shapes):
        out.reason = "a control-LoRA; Restora runs full ControlNet models"
        return out
    if any(k.startswith(("task_embedding", "controlnet_mode_embedding")) for k in shapes):
        out.reason = "a ControlNet Union model; Restora runs single ControlNets (tile)"
        return out
    layout, prefix = controlnet_layout(shapes)
    if not layout:
        what = "a diffusion checkpoint" if any(k.startswith(UNET) for k in shapes) else "it"
        out.reason = f"not a ControlNet: {what} has no condition embedding (input_hint_block)"
        return out
    if layout == "ldm":
        hint, first = f"{prefix}input_hint_block.0.weight", f"{prefix}input_blocks.0.0.weight"
        extra = f"{prefix}label_emb.0.0.weight"
    else:
        hint, first = "controlnet_cond_embedding.conv_in.weight", "conv_in.weight"
        extra = "add_embedding.linear_1.weight"
    ctx = context_dim(shapes, prefix if layout == "ldm" else "")
    linear = any(k.endswith("proj_in.weight") and len(s) == 2 for k, s in shapes.items())
    if ctx in CONTEXT_DIMS:
        out.family = CONTEXT_DIMS[ctx]
    elif ctx is not None:  # a width no released family has (a small test model)
        out.family = "SDXL" if extra in shapes else ("SD2.1" if linear else "SD1.5")
    else:
        out.reason = "its attention layers are of no Stable Diffusion family Restora knows"
        return out
    if shapes.get(hint, [0, 0])[1] != 3 or shapes.get(first, [0, 0])[1] != 4:
        out.reason = "not an image ControlNet: it takes no 3-channel condition image"
        return out
    out.usable = True
    return out


def inspect_controlnet_folder(root: str | Path) -> Inspection:
    """A ControlNet saved by diffusers: config.json beside diffusion_pytorch_model.safetensors."""
    root = Path(root)
    out = Inspection("controlnet", layout="diffusers_folder")
    try:
        config = json.loads((root / "config.json").read_text())
        files = sorted(root.glob("*.safetensors"))
        shapes: dict[str, list[int]] = {}
        for f in files:
            shapes.update(shapes_of(read_header(f)))
    except (OSError, ValueError, struct.error) as exc:
        out.reason = f"an incomplete ControlNet folder ({exc.__class__.__name__}: {exc})"
        return out
    if config.get("_class_name") != "ControlNetModel" or not shapes:
        out.reason = (
            f"a {config.get('_class_name') or 'unknown'} folder; Restora runs ControlNetModel "
            "folders with .safetensors weights"
        )
        return out
    found = _controlnet(shapes)
    found.layout = "diffusers_folder"
    if found.usable and config.get("addition_embed_type") == "text_time":
        found.family = "SDXL"
    return found
