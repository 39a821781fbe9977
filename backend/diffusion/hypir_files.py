"""What a HYPIR file is, from its tensor names and shapes, and which SD 2.1 base it runs on.

HYPIR ships LoRA weights only (`HYPIR_sd2.pth`: peft's `<module>.lora_A.default.weight` and
`lora_B` pairs, rank 256, on the UNet's attention, convolution and feed-forward layers), so a
file in the HYPIR folder is useful only beside a Stable Diffusion 2.1 base. The registry
describes each file on its own (cached), then `pair` gives every HYPIR file the base it will
run with, or the plain reason why none fits. Nothing here imports torch at import time: the
.pth is opened with PyTorch's weights-only unpickler (backend.models.loading) only when a file
is described, and a .safetensors file by its header alone.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the registry's words for a HYPIR file (its purpose and architecture)
PURPOSE = "HYPIR"
ARCHITECTURE = "HYPIR"
#: the layers HYPIR's LoRA adapts (its published configuration), matched as peft matches
#: target_modules: the module's name or its last dotted parts
TARGETS = (
    "to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
    "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj",
)  # fmt: skip
#: the base HYPIR was trained on: SD 2.1 base at 512 px, predicting noise
BASE_FAMILY = "SD2.1"
BASE_FILE = "v2-1_512-ema-pruned.safetensors"
BASE_CATALOG_NAME = "sd21-base"
NEEDS_BASE = (
    f"needs a Stable Diffusion 2.1 base model: put {BASE_FILE} in checkpoints/ (or a diffusers "
    "folder of stable-diffusion-2-1-base in checkpoints/ or HYPIR/), e.g. `restora models "
    f"download {BASE_CATALOG_NAME} --allow-unverified`"
)

#: peft's key form, with the adapter's name (HYPIR's "default") or without it, and the
#: prefixes other savers put in front (diffusers' "unet.", a PeftModel's "base_model.model.")
_PEFT_KEY = re.compile(
    r"^(?:base_model\.model\.|unet\.)?(?P<module>.+?)\.lora_(?P<half>[AB])(?:\.(?P<adapter>[^.]+))?"
    r"\.weight$"
)
#: top-level modules of diffusers' UNet2DConditionModel
_UNET_ROOTS = ("down_blocks.", "mid_block.", "up_blocks.", "conv_in", "conv_out", "time_embedding.")
_KOHYA = re.compile(r"(^lora_(unet|te\d?)_)|(lora_(down|up)\.weight$)")
#: cross-attention widths of the families HYPIR is not for (attn2.to_k reads the text encoder)
_OTHER_FAMILIES = {768: "SD 1.5", 2048: "SDXL"}


@dataclass
class HypirFile:
    """A file's description: a HYPIR LoRA (usable) or the reason it is none."""

    usable: bool
    reason: str = ""
    rank: int = 0
    #: modules the LoRA adapts, and which of HYPIR's target names they end in
    modules: int = 0
    targets: list[str] = field(default_factory=list)
    params: int = 0


def lora_key(key: str) -> tuple[str, str] | None:
    """(module, "A" or "B") of a peft LoRA key, or None for any other tensor name."""
    match = _PEFT_KEY.match(key)
    return (match["module"], match["half"]) if match else None


def canonical_key(key: str) -> str | None:
    """The key as peft's set_peft_model_state_dict takes it (`<module>.lora_A.weight`)."""
    found = lora_key(key)
    return None if found is None else f"{found[0]}.lora_{found[1]}.weight"


def target_of(module: str) -> str | None:
    """Which of HYPIR's target names `module` matches (the longest), or None."""
    hits = [t for t in TARGETS if module == t or module.endswith("." + t)]
    return max(hits, key=len) if hits else None


def classify(shapes: dict[str, list[int]]) -> HypirFile:
    """Whether tensors of these names and shapes are a HYPIR LoRA, and if not, why."""
    if not shapes:
        return HypirFile(False, "it holds no tensors")
    params = sum(_numel(s) for s in shapes.values())
    if any(k.startswith("model.diffusion_model.") for k in shapes):
        return HypirFile(
            False, "a full Stable Diffusion checkpoint, not LoRA weights", params=params
        )
    if any(_KOHYA.search(k) for k in shapes):
        return HypirFile(
            False,
            "a kohya-style Stable Diffusion LoRA (lora_down / lora_up): put it in loras/ for "
            "refine; HYPIR's file holds peft lora_A / lora_B weights",
            params=params,
        )
    halves: dict[str, set[str]] = {}
    ranks: Counter[int] = Counter()
    others = []
    for key, shape in shapes.items():
        found = lora_key(key)
        if found is None:
            others.append(key)
            continue
        module, half = found
        halves.setdefault(module, set()).add(half)
        if half == "A" and shape:
            ranks[int(shape[0])] += 1
    if not halves:
        return HypirFile(False, "no LoRA weights in it (lora_A / lora_B)", params=params)
    if others:
        return HypirFile(
            False,
            f"besides LoRA weights it holds {len(others)} other tensors (e.g. {others[0]}); "
            "HYPIR's file holds LoRA weights only",
            params=params,
        )
    outside = sorted(m for m in halves if not m.startswith(_UNET_ROOTS))
    if outside:
        return HypirFile(
            False,
            f"it adapts layers outside a Stable Diffusion UNet (e.g. {outside[0]}): "
            "not a HYPIR LoRA",
            params=params,
        )
    broken = sorted(m for m, h in halves.items() if h != {"A", "B"})
    if broken:
        return HypirFile(
            False,
            f"damaged: {len(broken)} layers lack half of their LoRA weights (e.g. {broken[0]})",
            params=params,
        )
    targets = sorted({t for t in map(target_of, halves) if t is not None})
    kinds = {"resnet": {"conv1", "conv2"}, "attention": {"to_q", "to_k", "to_v"}}
    missing = [name for name, names in kinds.items() if not names & set(targets)]
    if missing:
        return HypirFile(
            False,
            f"it adapts no {' or '.join(missing)} layers, which HYPIR's LoRA does: a style "
            "LoRA? put it in loras/",
            params=params,
        )
    for module in halves:
        if module.endswith("attn2.to_k"):
            width = next(
                (s[1] for k, s in shapes.items() if lora_key(k) == (module, "A") and len(s) == 2),
                None,
            )
            if width in _OTHER_FAMILIES:
                return HypirFile(
                    False,
                    f"a LoRA for {_OTHER_FAMILIES[width]} (text width {width}); HYPIR runs on "
                    "Stable Diffusion 2.1",
                    params=params,
                )
            break
    rank = ranks.most_common(1)[0][0] if ranks else 0
    return HypirFile(True, rank=rank, modules=len(halves), targets=targets, params=params)


def inspect(path: str | Path) -> HypirFile:
    """Describe one file of the HYPIR folder; never raises for a bad one."""
    from backend.errors import ModelFormatError

    path = Path(path)
    try:
        shapes = read_shapes(path)
    except ModelFormatError as exc:
        reason = exc.message.removeprefix(f"{path.name}: ").removeprefix(f"{path.name} ")
        return HypirFile(False, reason.rstrip("."))
    return classify(shapes)


def read_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor names and shapes: a safetensors header, or a weights-only unpickled .pth
    (memory-mapped, so the tensors' bytes are not read)."""
    from backend.errors import ModelFormatError

    if path.suffix.lower() == ".safetensors":
        from backend.diffusion.families import read_header, shapes_of

        try:
            return shapes_of(read_header(path))
        except (OSError, ValueError, struct.error) as exc:
            raise ModelFormatError(f"not a readable safetensors file ({exc})", "") from None
    from backend.models.loading import load_state_dict

    return {k: list(v.shape) for k, v in load_state_dict(path).items()}


# --- pairing with a base -------------------------------------------------------------------


def pair(entries: list[Any]) -> None:
    """Give each HYPIR entry its SD 2.1 base (`entry.base`), preferring a base in the same
    models folder tree and one named like the 512 base; without one, the entry becomes
    unusable with the reason. `entries` are the registry's, changed in place."""
    bases = [e for e in entries if _is_base(e)]
    for entry in (e for e in entries if e.purpose == PURPOSE and e.usable):
        if not bases:
            entry.usable, entry.base = False, ""
            entry.reason = _no_base_reason(entries)
            continue
        best = min(bases, key=lambda b: _preference(entry, b))
        entry.usable, entry.reason, entry.base = True, "", best.path
        entry.memory_bytes = int(best.memory_bytes) + entry.size_bytes
        entry.tags = [t for t in entry.tags if not t.startswith("base:")] + [f"base:{best.name}"]


def _is_base(entry: Any) -> bool:
    return (
        entry.usable
        and entry.purpose == "Diffusion"
        and entry.architecture == BASE_FAMILY
        and not predicts_v(entry.path)
    )


def _preference(hypir: Any, base: Any) -> tuple[int, int, str]:
    shared = len(os.path.commonpath([hypir.path, base.path]))
    name = Path(base.path).name.lower()
    looks_like_base = ("2-1" in name or "21" in name) and ("512" in name or "base" in name)
    return (-shared, 0 if looks_like_base else 1, base.name.lower())


def _no_base_reason(entries: list[Any]) -> str:
    v_models = [
        e.name
        for e in entries
        if e.usable and e.architecture == BASE_FAMILY and e.purpose == "Diffusion"
    ]
    if v_models:
        return (
            f"found only SD 2.1 768-v models ({', '.join(v_models[:3])}), which predict v; "
            f"HYPIR was trained on the 512 base, which {NEEDS_BASE.removeprefix('needs ')}"
        )
    return NEEDS_BASE


def predicts_v(path: str | Path) -> bool:
    """Whether an SD 2.x model predicts v (the 768 models) rather than noise (the 512 base):
    a diffusers folder says so in its scheduler; a single file does not, so its name does
    (the rule backend.diffusion.loading applies when it loads one: "768" or "-v")."""
    path = Path(path)
    if path.is_dir():
        try:
            config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        except (OSError, ValueError):
            return False
        return config.get("prediction_type") == "v_prediction"
    name = path.stem.lower()
    return "768" in name or name.endswith("-v") or "_v_" in name or "-v-" in name


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
