"""HYPIR: one-step diffusion restoration with Stable Diffusion 2.1 and HYPIR's LoRA.

Steps: 1. check the request (the result's size and the memory it takes, before queueing),
2. enlarge the image bicubically to the result's size, 3. HYPIR's one step in overlapping
patches (backend.diffusion.hypir_restore: encode without noise, one UNet call at t = 200, the
predicted x0, decode), 4. the wavelet colour fix against the enlarged input (HYPIR's own), and
the strength blend towards it, 5. report how far the result moved from the input.

The model is a HYPIR LoRA file (models/HYPIR/HYPIR_sd2.pth) which the registry pairs with an
SD 2.1 base checkpoint (checkpoints/ or a diffusers folder); backend.diffusion.hypir_model
merges the LoRA into the base's UNet when it loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.diffusion.colour import COLOUR_FIXES, fidelity_lines
from backend.diffusion.options import INSTALL_HINT
from backend.errors import ImageTooLargeError, InvalidParameterError, OutOfMemoryError
from backend.tasks.context import TaskContext
from backend.tasks.spec import (
    Limits,
    ModelSlot,
    Output,
    OutputSpec,
    TaskInputs,
    TaskResult,
    TaskSpec,
    param,
)

#: host memory per result pixel beyond the model: the input and its enlargement, the pixel
#: patches' canvas and weights, the colour fix's wavelet bands and the result (float32 RGB)
IMAGE_BYTES_PER_PIXEL = 128
MISSING_HINT = (
    "HYPIR needs two files: HYPIR_sd2.pth in the HYPIR folder and the Stable Diffusion 2.1 "
    "base (v2-1_512-ema-pruned.safetensors) in checkpoints. `restora models download "
    "hypir-sd2 sd21-base --allow-unverified` fetches both; HYPIR's weights are for "
    "non-commercial use only."
)
MODEL_SLOT = ModelSlot(
    folders=("HYPIR",),
    purposes=("HYPIR",),
    missing_hint=MISSING_HINT,
    # the catalog's words ("put a ... model in the HYPIR folder") would name one of the two
    # files; the hint above names both
    catalog_task="",
)


@dataclass
class HypirParams:
    scale: float = param(
        1.0,
        "Scale",
        help="How much larger the result is; 1 restores at the image's own size.",
        minimum=1.0,
        maximum=8.0,
        step=0.5,
        unit="x",
        flags=("-s", "--scale"),
    )
    prompt: str = param(
        "",
        "Prompt",
        help="What the image shows, in a few words (optional): HYPIR was trained without "
        "prompts; words steer the detail it adds.",
        widget="prompt",
        maximum=2000,
    )
    strength: float = param(
        1.0,
        "Strength",
        help="How much of the restoration is kept: 1 is HYPIR's result, lower values blend "
        "back towards the enlarged input.",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        widget="slider",
    )
    colour_fix: str = param(
        "wavelet",
        "Colour fix",
        help="Keep the input's colours: wavelet takes its low frequencies (as HYPIR does), "
        "AdaIN its mean and spread per channel.",
        choices=COLOUR_FIXES,
        choice_labels=("wavelet", "AdaIN", "none"),
        advanced=True,
    )
    tile: int = param(
        512,
        "Tile size",
        help="HYPIR restores square patches of this size (it was trained at 512); an image "
        "smaller than one is enlarged to it and back.",
        minimum=64,
        maximum=2048,
        step=64,
        unit="px",
        flags=("-t", "--tile"),
        advanced=True,
    )
    stride: int = param(
        256,
        "Tile stride",
        help="How far apart the patches start: half the tile size blends them smoothly; "
        "smaller costs more patches.",
        minimum=32,
        maximum=2048,
        step=32,
        unit="px",
        advanced=True,
    )
    max_output_pixels: int = param(600_000_000, "Largest result", internal=True)

    def validate(self) -> None:
        if not 1.0 <= self.scale <= 8.0:
            raise InvalidParameterError(f"scale must be 1..8, not {self.scale}.", "")
        if self.stride > self.tile:
            raise InvalidParameterError(
                f"The tile stride ({self.stride} px) is larger than the tile ({self.tile} px): "
                "parts of the image would be left out.",
                "Use a stride of at most the tile size (half of it blends best).",
            )
        if self.colour_fix not in COLOUR_FIXES:
            raise InvalidParameterError(f"colour_fix must be one of {COLOUR_FIXES}.", "")


def output_shape(h: int, w: int, scale: float) -> tuple[int, int]:
    return max(1, round(h * scale)), max(1, round(w * scale))


def prepare(params: HypirParams, inputs: TaskInputs, entry: Any, limits: Limits) -> None:
    params.validate()
    params.max_output_pixels = limits.max_output_pixels
    oh, ow = output_shape(*inputs.image.shape[:2], params.scale)
    if oh * ow > limits.max_output_pixels:
        raise ImageTooLargeError(
            f"The result would be {oh * ow / 1e6:.0f} megapixels; at most "
            f"{limits.max_output_pixels / 1e6:.0f} are allowed.",
            "Use a smaller scale or work on a part of the image.",
        )
    check_memory(entry, oh, ow)


def check_memory(entry: Any, oh: int, ow: int) -> None:
    """Refuse, before queueing, a job no memory here can hold, saying what it would need:
    the model (fp32 on a CPU) and the result's buffers, which grow with its size."""
    from backend.devices import free_memory, resolve_device
    from backend.models.manager.memory import megabytes

    device = resolve_device("auto")
    model = int(getattr(entry, "memory_bytes", 0) or 0) * (2 if device.type == "cpu" else 1)
    image = oh * ow * IMAGE_BYTES_PER_PIXEL
    host = free_memory(resolve_device("cpu"))
    gpu = free_memory(device) if device.type != "cpu" else 0
    if model + image > host + gpu:
        raise OutOfMemoryError(
            f"HYPIR at {ow} x {oh} px needs about {megabytes(model + image)} (the model "
            f"{megabytes(model)}, the image {megabytes(image)}); this computer has "
            f"{megabytes(host)} of memory free"
            + (f" and the GPU {megabytes(gpu)}." if gpu else "."),
            "Use a smaller scale, work on a part of the image, or close other programs.",
        )


def run(ctx: TaskContext, inputs: TaskInputs, params: HypirParams) -> TaskResult:
    from backend.diffusion import hypir_restore
    from backend.diffusion.colour import colour_fix, fidelity
    from backend.diffusion.options import place
    from backend.imaging import max_value, resize, split_alpha
    from backend.tasks.refine import _back, _float_rgb

    # 1. check
    params.validate()
    model = inputs.model
    if model is None:
        raise InvalidParameterError("HYPIR needs its LoRA and an SD 2.1 base.", MISSING_HINT)
    pixels = inputs.image
    colour, alpha = split_alpha(pixels)
    top = max_value(pixels.dtype)
    h, w, channels = colour.shape
    oh, ow = output_shape(h, w, params.scale)

    # 2. enlarge
    ctx.progress(0.01, "enlarging")
    ctx.check_cancel()
    upscaled = hypir_restore._resize(_float_rgb(colour, top), oh, ow)

    # 3. one step, patch by patch
    details: dict[str, Any] = {"base": model.base_name, "lora_rank": model.rank, "size": [ow, oh]}
    details.update(tile=params.tile, stride=params.stride)
    details["tier"] = place(ctx, model)
    details["precision"] = model.precision_label
    ctx.progress(0.02, "encoding the prompt")
    ctx.check_cancel()
    try:
        restored, details["tiles"] = hypir_restore.restore(
            model, upscaled, params.prompt, params.tile, params.stride, ctx.span(0.03, 0.96)
        )
    except RuntimeError as exc:
        from backend.inference import is_out_of_memory

        if not is_out_of_memory(exc):
            raise
        # the executor then unloads the other models and runs the job once more, when the
        # manager may choose to offload this one
        raise OutOfMemoryError(
            f"HYPIR ran out of memory on a {params.tile} px patch.",
            "Close other programs using the GPU, or use a smaller tile size.",
        ) from None

    # 4. colours, strength
    ctx.progress(0.97, "colour fix")
    ctx.check_cancel()
    out = colour_fix(restored, upscaled, params.colour_fix)
    if params.strength < 1.0:
        out = upscaled + (out - upscaled) * np.float32(params.strength)
    result = _back(out, channels, top, colour.dtype)

    # 5. report
    small = result if (oh, ow) == (h, w) else resize(result, w, h)
    details["fidelity"] = fidelity(small, colour, top)
    details["fidelity_to_upscaled"] = fidelity(
        result, _back(upscaled, channels, top, colour.dtype), top
    )
    if alpha is not None:
        a = alpha if (oh, ow) == (h, w) else resize(alpha, ow, oh)
        result = np.concatenate([result, a.reshape(oh, ow, -1)], axis=2)
    ctx.progress(1.0, "done")
    return TaskResult([Output("result", result, "HYPIR")], details)


def summarize(details: dict[str, Any]) -> list[str]:
    lines = []
    if "tiles" in details:
        lines.append(
            f"{details['tiles']} tiles of {details['tile']} px (stride {details['stride']}) on "
            f"{details.get('base', 'the base')}, rank-{details.get('lora_rank', '?')} LoRA, "
            f"{details.get('precision', '')}".rstrip(", ")
        )
    return lines + fidelity_lines(details)


SPEC = TaskSpec(
    id="hypir",
    title="HYPIR restoration (one-step diffusion)",
    help="Restore a photo in one diffusion step with HYPIR (Stable Diffusion 2.1 and HYPIR's "
    "restoration LoRA), optionally enlarged. It works in overlapping 512 px patches, so any "
    "size fits, and keeps the colours with a wavelet fix; the same image and options always "
    "give the same result. Reports how far the result moved from the input. HYPIR's weights "
    "are for non-commercial use only.",
    params=HypirParams,
    run=run,
    prepare=prepare,
    model=MODEL_SLOT,
    outputs=(OutputSpec("result", "HYPIR"),),
    resizes=True,
    requires=("diffusers", "transformers", "peft"),
    install_hint=INSTALL_HINT,
    group="enhance",
    order=57,
    summarize=summarize,
)
