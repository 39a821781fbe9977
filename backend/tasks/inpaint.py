"""Inpainting with LaMa or MAT: the masked holes filled from what surrounds them.

Steps: 1. the mask's connected regions, 2. for each region a crop with context around it at
the model's resolution (nearby regions share a crop while it still fits; a region too large
for one crop is filled window by window at full resolution, never the whole photo shrunk),
3. the model on each crop (LaMa at the crop's own size, padded to a multiple of 8; MAT on a
512x512 window, a larger crop shrunk to it), later crops seeing the earlier fills, 4. only
the masked pixels pasted back: everything outside the mask is the input, bit for bit.

The output is the whole image with the holes filled; the task's mask is its exact region (no
feathered edge), so the editors' layer and the command line's file differ from the input
only inside the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.errors import InvalidParameterError, ModelFormatError, OutOfMemoryError
from backend.imaging import max_value, split_alpha
from backend.tasks.context import TaskContext
from backend.tasks.spec import (
    ModelSlot,
    Output,
    OutputSpec,
    TaskInputs,
    TaskResult,
    TaskSpec,
    check_ranges,
    param,
)

#: the largest crop side a model without a fixed size (LaMa) runs at, at full resolution
DEFAULT_WORKING_SIDE = 512
MISSING_HINT = (
    "Put an inpainting model (LaMa or MAT as .pth or .safetensors; not TorchScript) in the "
    "inpaint folder."
)


@dataclass
class InpaintParams:
    context: int = param(
        64,
        "Context",
        help="How far around each hole the model looks, at least (it also looks half the "
        "hole's own size around it).",
        minimum=8,
        maximum=512,
        step=8,
        unit="px",
    )
    working_size: int | None = param(
        None,
        "Working size",
        help="The largest crop side the model runs at; larger holes are filled in windows of "
        "this size. MAT always runs at 512.",
        minimum=64,
        maximum=2048,
        step=64,
        unit="px",
        none_label="the model's own (LaMa 512, MAT 512)",
        advanced=True,
    )

    def validate(self) -> None:
        check_ranges(self, "inpaint")  # the ranges its fields declare


@dataclass
class Crop:
    """One model run: the box it sees (x0, y0, x1, y1) and the holes it fills in it."""

    box: tuple[int, int, int, int]
    holes: np.ndarray  # (h, w) bool, the box's size


def fixed_side(descriptor: Any) -> int | None:
    """The square size a model must run at (MAT's 512), or None when any size works."""
    req = descriptor.size_requirements
    if req.square and req.minimum and req.multiple_of == req.minimum:
        return int(req.minimum)
    return None


def plan_crops(holes: np.ndarray, side: int, context: int) -> list[Crop]:
    """Crops of at most `side` pixels that together cover every hole pixel exactly once."""
    import cv2

    height, width = holes.shape
    n, labels, stats = cv2.connectedComponentsWithStats(holes.astype(np.uint8), connectivity=8)[:3]
    groups: list[tuple[list[int], tuple[int, int, int, int]]] = []
    big: list[int] = []
    for i in range(1, n):
        x, y, w, h = (int(v) for v in stats[i, :4])
        margin = max(context, max(w, h) // 2)
        box = _clip((x - margin, y - margin, x + w + margin, y + h + margin), width, height)
        if _side(box) > side:
            big.append(i)
            continue
        # join the first group whose crop still fits with this region in it
        for g, (members, gbox) in enumerate(groups):
            union = _union(gbox, box)
            if _overlap(gbox, box) and _side(union) <= side:
                groups[g] = ([*members, i], union)
                break
        else:
            groups.append(([i], box))
    crops = []
    for members, box in groups:
        x0, y0, x1, y1 = box
        crops.append(Crop(box, np.isin(labels[y0:y1, x0:x1], members)))
    # a region too large for one crop: windows whose cores tile its box, each with context
    core = max(side - 2 * min(context, side // 4), side // 2)
    for i in big:
        x, y, w, h = (int(v) for v in stats[i, :4])
        pad = (side - core) // 2
        for cy in range(y, y + h, core):
            for cx in range(x, x + w, core):
                mine = labels[cy : cy + core, cx : cx + core] == i
                if not mine.any():
                    continue
                box = _clip((cx - pad, cy - pad, cx + core + pad, cy + core + pad), width, height)
                bx0, by0, bx1, by1 = box
                window = np.zeros((by1 - by0, bx1 - bx0), bool)
                ch, cw = mine.shape
                window[cy - by0 : cy - by0 + ch, cx - bx0 : cx - bx0 + cw] = mine
                crops.append(Crop(box, window))
    return crops


def _clip(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def _side(box: tuple[int, int, int, int]) -> int:
    return max(box[2] - box[0], box[3] - box[1])


def _union(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _grow_to(box: tuple[int, int, int, int], side: int, width: int, height: int) -> tuple:
    """The box widened (within the image) towards `side` x `side`: more context for free."""
    x0, y0, x1, y1 = box
    for lo, hi, limit in ((0, 2, width), (1, 3, height)):
        b = [x0, y0, x1, y1]
        extra = max(0, min(side, limit) - (b[hi] - b[lo]))
        start = max(0, min(b[lo] - extra // 2, limit - (b[hi] - b[lo] + extra)))
        b[lo], b[hi] = start, start + b[hi] - b[lo] + extra
        x0, y0, x1, y1 = b
    return x0, y0, x1, y1


def fill(model: Any, rgb: np.ndarray, holes: np.ndarray, fixed: int | None) -> np.ndarray:
    """The model's (h, w, 3) float fill of float RGB `rgb` with `holes` (h, w) bool."""
    import cv2
    import torch

    from backend.inference import (
        autocast_context,
        input_dtype,
        is_out_of_memory,
        pad_to,
        padded_size,
    )

    d = model.descriptor
    h, w = holes.shape
    image, mask = rgb, holes.astype(np.float32)
    if fixed is not None and max(h, w) > fixed:  # MAT: a larger crop is shrunk to 512
        scale = fixed / max(h, w)
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        image = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
        mask = (cv2.resize(mask, (sw, sh), interpolation=cv2.INTER_AREA) > 0).astype(np.float32)
    ih, iw = mask.shape
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(d.device)
    m = torch.from_numpy(np.ascontiguousarray(mask))[None, None].to(d.device)
    ph, pw = padded_size(ih, iw, d.size_requirements)
    dtype = input_dtype(d, model.precision)
    x, m = pad_to(x, ph, pw).to(dtype), pad_to(m, ph, pw).to(dtype)
    try:
        with torch.inference_mode(), autocast_context(d.device, model.precision):
            y = d(x, m)
    except RuntimeError as exc:
        if is_out_of_memory(exc):
            raise OutOfMemoryError(
                f"Out of memory inpainting a {iw}x{ih} crop.", "Use a smaller working size."
            ) from exc
        raise
    out = y[0, :, :ih, :iw].float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
    if (ih, iw) != (h, w):
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_CUBIC)
    return out


def check_model(model: Any) -> None:
    d = model.descriptor
    if type(d).__name__ != "MaskedImageModelDescriptor" or d.input_channels != 3:
        raise ModelFormatError(
            f"The model '{model.entry.name}' is not an inpainting model (it takes no mask).",
            MISSING_HINT,
        )


def run(
    pixels: np.ndarray, mask: np.ndarray, model: Any, params: InpaintParams, ctx: TaskContext
) -> tuple[np.ndarray, dict[str, Any]]:
    """(the image with every masked pixel filled and every other one as it was, details)."""
    from backend.inference import LayerWatch

    params.validate()
    check_model(model)
    plane = mask[..., 0] if mask.ndim == 3 else mask
    if plane.shape != pixels.shape[:2]:
        raise InvalidParameterError(
            f"The mask is {plane.shape[1]}x{plane.shape[0]} but the image is "
            f"{pixels.shape[1]}x{pixels.shape[0]}.",
            "Give a mask of the image's size.",
        )
    holes = plane > 0
    colour, alpha = split_alpha(pixels)
    top = float(max_value(pixels.dtype))
    fixed = fixed_side(model.descriptor)
    side = fixed or params.working_size or DEFAULT_WORKING_SIDE
    crops = plan_crops(holes, side, params.context)
    out = colour.copy()
    height, width = holes.shape
    ctx.check_cancel()
    current = {"done": 0}

    def on_layer(fraction: float) -> None:
        ctx.check_cancel()
        ctx.progress((current["done"] + fraction) / max(len(crops), 1), "inpainting")

    watch = LayerWatch(model.descriptor.model, on_layer)
    for i, crop in enumerate(crops):
        current["done"] = i
        ctx.step(i, len(crops), "inpainting")
        box = crop.box
        if fixed is not None:
            box = _grow_to(box, fixed, width, height)  # MAT sees 512x512 of real context
        x0, y0, x1, y1 = box
        cx0, cy0 = crop.box[0] - x0, crop.box[1] - y0
        holes_here = np.zeros((y1 - y0, x1 - x0), bool)
        ch, cw = crop.holes.shape
        holes_here[cy0 : cy0 + ch, cx0 : cx0 + cw] = crop.holes
        part = out[y0:y1, x0:x1].astype(np.float32) / np.float32(top)
        rgb = np.repeat(part, 3, axis=2) if part.shape[2] == 1 else part
        with watch:
            filled = fill(model, np.ascontiguousarray(rgb), holes_here, fixed)
        if part.shape[2] == 1:
            filled = filled @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
        values = np.clip(np.rint(filled * np.float32(top)), 0, top).astype(pixels.dtype)
        region = out[y0:y1, x0:x1]
        region[holes_here] = values[holes_here]  # only the holes: the rest stays the input
    ctx.step(len(crops), len(crops), "inpainting")
    if alpha is not None:
        out = np.concatenate([out, alpha], axis=2)
    ctx.progress(1.0, "done")
    return out, {"regions": len(crops), "filled_pixels": int(holes.sum())}


# --- the task --------------------------------------------------------------------------------


def run_task(ctx: TaskContext, inputs: TaskInputs, params: InpaintParams) -> TaskResult:
    if inputs.mask is None:
        raise InvalidParameterError(
            "Inpaint needs a mask: the holes to fill.", "Select the area to fill first."
        )
    if inputs.model is None:
        raise InvalidParameterError("Inpaint needs an inpainting model.", MISSING_HINT)
    pixels, details = run(inputs.image, inputs.mask, inputs.model, params, ctx)
    return TaskResult([Output("result", pixels, "Inpainted")], details)


def summarize(details: dict[str, Any]) -> list[str]:
    n = details.get("regions", 0)
    return [f"filled {details.get('filled_pixels', 0)} pixels in {n} crop{'s' * (n != 1)}"]


SPEC = TaskSpec(
    id="inpaint",
    title="Inpaint",
    help="Fill the selected holes (scratches, stains, objects to remove) from their "
    "surroundings with LaMa or MAT; nothing outside the selection changes.",
    params=InpaintParams,
    run=run_task,
    model=ModelSlot(
        folders=("inpaint",),
        purposes=("Inpainting",),
        default=None,
        missing_hint=MISSING_HINT,
        catalog_task="",  # the catalog's LaMa files are TorchScript or ONNX, which do not load
    ),
    mask="required",
    feather=False,
    outputs=(OutputSpec("result", "Inpainted"),),
    summarize=summarize,
    group="restore",
    order=45,
)
