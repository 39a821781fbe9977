"""Instruction-editing models as users keep them, described from headers alone (no torch).

Families: Qwen-Image-Edit-2509 and -2511 (diffusers' QwenImageEditPlusPipeline, up to three
pictures), the first Qwen-Image-Edit (QwenImageEditPipeline), FLUX.1 Kontext
(FluxKontextPipeline) and InstructPix2Pix (an SD 1.5 UNet with 8 input channels). Layouts:
a diffusers folder (model_index.json) of any family; ComfyUI's split files for Qwen: the
transformer in diffusion_models/ (.safetensors in bf16 or fp8, or .gguf), the Qwen2.5-VL text
encoder in text_encoders/, the VAE in vae/. What each needs in memory is estimated here, so
the registry lists it and a job that cannot fit is refused before anything loads.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.diffusion import families

EDIT_PURPOSE = "Edit"
#: what the split layout's text encoder and VAE are listed as: parts of an edit model, not a
#: model any task slot offers
COMPONENT_PURPOSE = "Component"
QWEN_PLUS = "Qwen-Image-Edit-2509"
QWEN_2511 = "Qwen-Image-Edit-2511"
QWEN_V1 = "Qwen-Image-Edit"
KONTEXT = "FLUX.1-Kontext"
IP2P = "InstructPix2Pix"
QWEN_FAMILIES = (QWEN_PLUS, QWEN_2511, QWEN_V1)
TEXT_ENCODER_ARCH = "Qwen2.5-VL"
VAE_ARCH = "Qwen-Image VAE"


@dataclass(frozen=True)
class FamilyInfo:
    """How a family is run: its pipeline, sizes and the defaults its model cards give."""

    pipeline: str
    #: pictures one call takes, the layer included
    max_images: int
    #: the side of a square of the area the model prefers (about 1 MP), in pixels
    native: int
    #: working sizes are multiples of this (VAE factor x patch size, or the pipeline's rounding)
    multiple: int
    steps: int
    guidance: float
    #: "true_cfg": a negative prompt and a second pass (Qwen); "distilled": a guidance input
    #: (Kontext); "cfg": classic classifier-free guidance (InstructPix2Pix)
    guidance_kind: str
    #: one step's working memory at the native size (latents, attention, VAE decode), bf16
    working_bytes: int


FAMILY_INFO: dict[str, FamilyInfo] = {
    QWEN_PLUS: FamilyInfo("QwenImageEditPlusPipeline", 3, 1024, 32, 40, 4.0, "true_cfg", 3 << 30),
    QWEN_2511: FamilyInfo("QwenImageEditPlusPipeline", 3, 1024, 32, 40, 4.0, "true_cfg", 3 << 30),
    QWEN_V1: FamilyInfo("QwenImageEditPipeline", 1, 1024, 32, 50, 4.0, "true_cfg", 3 << 30),
    KONTEXT: FamilyInfo("FluxKontextPipeline", 1, 1024, 16, 28, 2.5, "distilled", 2 << 30),
    IP2P: FamilyInfo("StableDiffusionInstructPix2PixPipeline", 1, 512, 8, 20, 7.5, "cfg", 1 << 30),
}
#: diffusers pipeline class -> family (2509 and 2511 share one; the transformer's config tells)
PIPELINE_FAMILIES = {
    "QwenImageEditPlusPipeline": QWEN_PLUS,
    "QwenImageEditPipeline": QWEN_V1,
    "FluxKontextPipeline": KONTEXT,
    "StableDiffusionInstructPix2PixPipeline": IP2P,
}
#: what fits a 12-16 GB GPU, said when a model is refused for memory
FIT_HINTS = {
    QWEN_PLUS: "A GGUF transformer (Q4_K_M, about 13 GB) with the fp8 text encoder (9 GB) and "
    "offload fits a 12-16 GB GPU and 32 GB of memory; a selection instead of the whole layer "
    "also needs less.",
    KONTEXT: "An fp8 or GGUF transformer of FLUX.1 Kontext (about 12 GB) with offload fits a "
    "12-16 GB GPU.",
    IP2P: "InstructPix2Pix needs about 3 GB; close other programs.",
}
FIT_HINTS[QWEN_2511] = FIT_HINTS[QWEN_V1] = FIT_HINTS[QWEN_PLUS]

#: tensors only a Qwen-Image transformer has (with or without ComfyUI's prefix)
QWEN_TRANSFORMER_KEYS = (
    "img_in.weight",
    "txt_norm.weight",
    "transformer_blocks.0.img_mod.1.weight",
)
COMFY_PREFIX = "model.diffusion_model."
_GGUF_MAGIC = b"GGUF"


@dataclass
class EditInspection:
    usable: bool
    family: str = ""
    reason: str = ""
    layout: str = "diffusers_folder"  # or "split_files"
    purpose: str = EDIT_PURPOSE
    #: parameters per component, and bytes per weight as they will be held
    params: dict[str, int] = field(default_factory=dict)
    held_bytes: dict[str, int] = field(default_factory=dict)
    #: the split layout's other files: role -> path
    companions: dict[str, str] = field(default_factory=dict)

    def weight_bytes(self) -> int:
        return sum(self.held_bytes.values())

    def memory_bytes(self) -> int:
        """Bytes to hold every component as loaded plus one step's work at the native size."""
        if self.purpose != EDIT_PURPOSE or not self.family:
            return self.weight_bytes()
        return self.weight_bytes() + FAMILY_INFO[self.family].working_bytes


def inspect_edit(path: Path, folder: str) -> EditInspection | None:
    """The edit model (or split-layout part) at `path`, or None when it is none of them (an
    SD checkpoint, a LoRA: the refine families describe those)."""
    try:
        if path.is_dir():
            return _folder(path)
        if folder == "text_encoders":
            return _text_encoder(path)
        if folder == "vae":
            return _vae(path)
        if folder in ("diffusion_models", "checkpoints"):
            return _transformer(path)
    except (OSError, ValueError, struct.error) as exc:
        if path.is_dir() or path.suffix.lower() == ".gguf":
            return EditInspection(False, reason=f"not readable ({exc})")
    return None


# --- diffusers folders --------------------------------------------------------------------


def _folder(root: Path) -> EditInspection | None:
    index = json.loads((root / "model_index.json").read_text())
    family = PIPELINE_FAMILIES.get(str(index.get("_class_name", "")))
    if family is None:
        return None
    out = EditInspection(True, family)
    if family == QWEN_PLUS and _config(root, "transformer").get("zero_cond_t"):
        out.family = QWEN_2511
    for component in ("transformer", "unet", "vae", "text_encoder", "text_encoder_2"):
        sub = root / component
        if not sub.is_dir():
            continue
        count, held = 0, 0
        for f in sorted(sub.glob("*.safetensors")):
            for _key, (dtype, shape) in tensor_shapes(f).items():
                n = _numel(shape)
                count += n
                held += n * min(_DTYPE_BYTES.get(dtype, 2), 2)  # run in bf16/fp16 at most
        if count:
            out.params[component] = count
            out.held_bytes[component] = held
    main = "unet" if family == IP2P else "transformer"
    for needed in (main, "vae", "text_encoder"):
        if needed not in out.params:
            return EditInspection(False, family, f"no {needed}/ weights in .safetensors form")
    return out


def _config(root: Path, component: str) -> dict[str, Any]:
    try:
        return json.loads((root / component / "config.json").read_text())
    except (OSError, ValueError):
        return {}


# --- split files ----------------------------------------------------------------------------

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}


def tensor_shapes(path: Path) -> dict[str, tuple[str, list[int]]]:
    """name -> (dtype, shape) from a safetensors header, or from a GGUF file's tensor table
    (dtype "GGUF:<type>", shape in PyTorch order)."""
    if path.suffix.lower() == ".gguf":
        return gguf_shapes(path)
    header = families.read_header(path)
    return {
        k: (str(v.get("dtype", "")), [int(s) for s in v.get("shape", [])])
        for k, v in header.items()
        if isinstance(v, dict)
    }


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def qwen_transformer_keys(shapes: dict[str, Any]) -> str | None:
    """The prefix a Qwen-Image transformer's tensors carry ("" or ComfyUI's), or None."""
    for prefix in ("", COMFY_PREFIX):
        if all(prefix + k in shapes for k in QWEN_TRANSFORMER_KEYS):
            return prefix
    return None


def _transformer(path: Path) -> EditInspection | None:
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".gguf"):
        return None
    shapes = tensor_shapes(path)
    if qwen_transformer_keys(shapes) is None:
        if suffix == ".gguf":
            return EditInspection(
                False,
                reason="a GGUF file that is not a Qwen-Image transformer",
                layout="split_files",
            )
        return _ip2p_single_file(shapes)
    out = EditInspection(True, qwen_family_from_name(path.stem), layout="split_files")
    count = sum(_numel(s) for _d, s in shapes.values())
    held = sum(_held_bytes(d, s) for d, s in shapes.values())
    out.params["transformer"], out.held_bytes["transformer"] = count, held
    attach_companions(out, path)
    return out


def qwen_family_from_name(stem: str) -> str:
    """A split transformer's tensors do not say which Qwen edit it is; its name does
    ("qwen_image_edit_2509_fp8", "Qwen-Image-Edit-2511-Q4_K_M", "qwen_image_edit_fp8")."""
    name = stem.lower().replace("_", "-")
    if "2511" in name:
        return QWEN_2511
    if "2509" in name or "plus" in name or "edit" not in name:
        return QWEN_PLUS
    return QWEN_V1


def _held_bytes(dtype: str, shape: list[int]) -> int:
    n = _numel(shape)
    if dtype.startswith("GGUF:"):
        return gguf_bytes(dtype[5:], n)
    return n * min(_DTYPE_BYTES.get(dtype, 2), 2)  # fp8 stays fp8 (cast per layer), else bf16


def attach_companions(out: EditInspection, transformer: Path) -> None:
    """Find the Qwen2.5-VL text encoder and the Qwen-Image VAE beside a split transformer (in
    the same models folder's text_encoders/ and vae/); unusable, with what to add, if not."""
    root = transformer.parent
    while root.name not in ("diffusion_models", "checkpoints") and root != root.parent:
        root = root.parent
    models = root.parent
    wanted = {"text_encoder": ("text_encoders", _text_encoder), "vae": ("vae", _vae)}
    missing = []
    for role, (sub, inspect) in wanted.items():
        best = None
        for f in sorted((models / sub).glob("**/*.safetensors")) if (models / sub).is_dir() else []:
            try:
                found = inspect(f)
            except (OSError, ValueError, struct.error):
                continue
            if found is not None and found.usable:
                # several encoders (bf16 and fp8): the one named like the transformer's family
                rank = 0 if "qwen" in f.name.lower() else 1
                if best is None or rank < best[0]:
                    best = (rank, f, found)
        if best is None:
            what = "Qwen2.5-VL 7B text encoder" if role == "text_encoder" else "Qwen-Image VAE"
            missing.append(f"the {what} in {sub}/")
            continue
        out.companions[role] = str(best[1])
        out.params[role] = sum(best[2].params.values())
        out.held_bytes[role] = best[2].weight_bytes()
    if missing:
        out.usable = False
        out.reason = f"needs {' and '.join(missing)} beside it (ComfyUI's split layout)"


def _text_encoder(path: Path) -> EditInspection | None:
    shapes = tensor_shapes(path)
    has_lm = any(k.startswith(("model.layers.", "model.language_model.layers.")) for k in shapes)
    has_visual = any(k.startswith(("visual.", "model.visual.")) for k in shapes)
    if not (has_lm and has_visual):
        return None
    out = EditInspection(True, layout="split_files", purpose=COMPONENT_PURPOSE)
    out.family = ""
    out.params["text_encoder"] = sum(_numel(s) for _d, s in shapes.values())
    out.held_bytes["text_encoder"] = sum(_held_bytes(d, s) for d, s in shapes.values())
    return out


def _vae(path: Path) -> EditInspection | None:
    shapes = tensor_shapes(path)
    original = "encoder.conv1.weight" in shapes and "conv1.weight" in shapes
    converted = "encoder.conv_in.weight" in shapes and "quant_conv.weight" in shapes
    conv = shapes.get("encoder.conv1.weight") or shapes.get("encoder.conv_in.weight")
    if not (original or converted) or conv is None or len(conv[1]) != 5:
        return None  # a 2-D (Stable Diffusion) VAE: refine's
    out = EditInspection(True, layout="split_files", purpose=COMPONENT_PURPOSE)
    out.params["vae"] = sum(_numel(s) for _d, s in shapes.values())
    out.held_bytes["vae"] = sum(_held_bytes(d, s) for d, s in shapes.values())
    return out


def _ip2p_single_file(shapes: dict[str, tuple[str, list[int]]]) -> EditInspection | None:
    """An InstructPix2Pix checkpoint in the original single-file layout (8-channel UNet)."""
    first = shapes.get(f"{families.UNET}input_blocks.0.0.weight")
    if first is None or len(first[1]) != 4 or first[1][1] != 8:
        return None
    out = EditInspection(True, IP2P, layout="single_file")
    groups = {
        "unet": families.UNET,
        "vae": "first_stage_model.",
        "text_encoder": "cond_stage_model.",
    }
    for name, prefix in groups.items():
        items = [(d, s) for k, (d, s) in shapes.items() if k.startswith(prefix)]
        if items:
            out.params[name] = sum(_numel(s) for _d, s in items)
            out.held_bytes[name] = sum(_held_bytes(d, s) for d, s in items)
    if "vae" not in out.params or "text_encoder" not in out.params:
        return EditInspection(False, IP2P, "the checkpoint lacks its VAE or text encoder")
    return out


# --- GGUF -----------------------------------------------------------------------------------

#: GGML tensor types: (name, elements per block, bytes per block)
_GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    30: ("BF16", 1, 2),
}  # fmt: skip
_GGUF_VALUE = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
               10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip


def gguf_bytes(type_name: str, numel: int) -> int:
    for name, per_block, block_bytes in _GGML_TYPES.values():
        if name == type_name:
            return -(-numel // per_block) * block_bytes
    return numel * 2


def gguf_shapes(path: Path) -> dict[str, tuple[str, list[int]]]:
    """name -> ("GGUF:<type>", shape) from a GGUF file's header (its key-value pairs are
    skipped, its tensor data is never read), so listing needs no gguf package."""
    with open(path, "rb") as f:
        if f.read(4) != _GGUF_MAGIC:
            raise ValueError("not a GGUF file")
        (version,) = struct.unpack("<I", f.read(4))
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        n_tensors, n_kv = struct.unpack("<QQ", f.read(16))
        for _ in range(n_kv):
            _read_string(f)
            _skip_value(f, struct.unpack("<I", f.read(4))[0])
        out = {}
        for _ in range(n_tensors):
            name = _read_string(f)
            (dims,) = struct.unpack("<I", f.read(4))
            shape = list(struct.unpack(f"<{dims}Q", f.read(8 * dims)))
            kind, _offset = struct.unpack("<IQ", f.read(12))
            type_name = _GGML_TYPES.get(kind, (f"type{kind}", 1, 2))[0]
            out[name] = (f"GGUF:{type_name}", shape[::-1])  # GGML lists the fastest axis first
    return out


def _read_string(f: Any) -> str:
    (n,) = struct.unpack("<Q", f.read(8))
    if n > 1 << 24:
        raise ValueError("a GGUF string longer than 16 MB")
    return f.read(n).decode("utf-8", "replace")


def _skip_value(f: Any, kind: int) -> None:
    if kind == 8:
        _read_string(f)
    elif kind == 9:
        inner, count = struct.unpack("<IQ", f.read(12))
        for _ in range(count):
            _skip_value(f, inner)
    elif kind in _GGUF_VALUE:
        f.read(struct.calcsize(_GGUF_VALUE[kind]))
    else:
        raise ValueError(f"unknown GGUF value type {kind}")
