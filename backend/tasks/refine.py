"""Refine: img2img at low denoise with a Stable Diffusion model, restoring without repainting.

Steps: 1. check the request and pick the seed, 2. find the faces to protect (face_guard.py),
3. with a selection, the region to re-render: the selection grown and feathered is the
denoise mask (soft values denoise part of the steps), the region around it gets context
padding; without one, the whole image; faces lower the mask to their share of the strength,
4. the region at the model's native resolution through one img2img pass (with a tile
ControlNet, the region itself is its condition), 5. back to its size, the colour fix against
the input, composited through the denoise mask (pixels it does not reach are the input's, bit
for bit), faces restored when asked, 6. report the seed and how far the result moved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.diffusion import options
from backend.diffusion.controlnet import ControlNetParams
from backend.diffusion.face_guard import FaceParams
from backend.diffusion.options import DiffusionParams
from backend.diffusion.prediction import PredictionParams
from backend.diffusion.report import summary_lines
from backend.errors import InvalidParameterError
from backend.tasks.context import TaskContext
from backend.tasks.spec import Limits, Output, OutputSpec, TaskInputs, TaskResult, TaskSpec, param

#: Krita AI Diffusion's selection refine: grow 4 px, feather 10% of the selection's size
GROW = 4
FEATHER_SHARE = 0.10
#: context around the region, as a share of its size (Krita's 6%), at least this many px
PADDING_SHARE = 0.06
MIN_PADDING = 8


@dataclass
class RefineParams(PredictionParams, ControlNetParams, FaceParams, DiffusionParams):
    denoise_feather: int | None = param(
        None,
        "Denoise mask feather",
        help="How soft the denoise mask's edge is around the selection.",
        minimum=0,
        maximum=512,
        unit="px",
        none_label="10% of the selection's size",
        advanced=True,
    )

    def validate(self) -> None:
        self.check_common()
        self.check_control()


def _float_rgb(colour: np.ndarray, top: float) -> np.ndarray:
    rgb = colour if colour.shape[2] == 3 else np.repeat(colour, 3, axis=2)
    return rgb.astype(np.float32) / np.float32(top)


def _back(rgb: np.ndarray, channels: int, top: float, dtype: Any) -> np.ndarray:
    out = rgb if channels == 3 else rgb.mean(axis=2, keepdims=True)
    return np.rint(np.clip(out, 0.0, 1.0) * top).astype(dtype)


def denoise_mask(plane: np.ndarray, feather: float) -> np.ndarray:
    """The selection (0..1) grown by GROW px and feathered; soft values stay soft."""
    import cv2

    size = 2 * GROW + 1
    grown = cv2.dilate(plane, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    if feather <= 0:
        return grown
    sigma = feather / 2
    blurred = cv2.GaussianBlur(grown, (0, 0), sigma)
    # the blur also lowers the selection's own inside near its edge: keep what was selected
    return np.maximum(blurred, plane)


def region_of(mask: np.ndarray, pad: int, height: int, width: int) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask > 0)
    top, bottom = max(int(ys.min()) - pad, 0), min(int(ys.max()) + 1 + pad, height)
    left, right = max(int(xs.min()) - pad, 0), min(int(xs.max()) + 1 + pad, width)
    return top, bottom, left, right


def native_shape(h: int, w: int, native: int, factor: int) -> tuple[int, int]:
    """(h, w) scaled so the longer side is the model's native size, in multiples of `factor`."""
    s = native / max(h, w)
    return (
        max(factor, round(h * s / factor) * factor),
        max(factor, round(w * s / factor) * factor),
    )


def resize_float(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """imaging.resize (area down, Lanczos up) in (height, width) order; a no-op at that size."""
    from backend.imaging import resize

    return x if x.shape[:2] == (h, w) else resize(x, w, h)


def prepare(params: RefineParams, inputs: TaskInputs, entry: Any, limits: Limits) -> None:
    params.validate()
    if entry is not None:
        options.check_memory(entry, "Refine")


def run(ctx: TaskContext, inputs: TaskInputs, params: RefineParams) -> TaskResult:
    from backend.diffusion.colour import colour_fix, fidelity
    from backend.diffusion.controlnet import Control, check_pair
    from backend.diffusion.face_guard import Faces, find_faces, restore_faces
    from backend.diffusion.img2img import Sampling, denoise
    from backend.diffusion.lora import applied_lora
    from backend.imaging import max_value, split_alpha

    # 1. check
    params.validate()
    model = inputs.model
    if model is None:
        raise InvalidParameterError("Refine needs a Stable Diffusion model.", options.MISSING_HINT)
    net = inputs.models.get("controlnet")
    if net is not None:
        check_pair(model, net)  # before any work: a wrong family is the user's to fix
    seed = params.chosen_seed()
    pixels = inputs.image
    colour, alpha = split_alpha(pixels)
    top = max_value(pixels.dtype)
    h, w, channels = colour.shape
    details: dict[str, Any] = {"seed": seed, "family": model.family, "strength": params.strength}
    if params.strength == 0.0:
        ctx.progress(1.0, "done")  # strength 0 is the input itself: nothing to denoise
        details["fidelity"] = fidelity(colour, colour, top)
        return TaskResult([Output("result", pixels.copy(), "Refined")], details)

    # 2. faces
    faces = Faces()
    if params.face_protection != "off":
        ctx.progress(0.01, "finding faces")
        faces = find_faces(ctx, pixels)
        if params.face_protection == "lower":
            _faces_detail(faces, params, details)
        ctx.check_cancel()
    lowered = faces if params.face_protection == "lower" else Faces()

    # 3. the region
    source = _float_rgb(colour, top)
    if inputs.mask is not None and np.any(inputs.mask):
        plane = inputs.mask[:, :, 0].astype(np.float32) / 255.0
        ys, xs = np.nonzero(plane > 0)
        diag = math.hypot(np.ptp(ys) + 1, np.ptp(xs) + 1)
        feather = (
            params.denoise_feather
            if params.denoise_feather is not None
            else max(4.0, FEATHER_SHARE * diag)
        )
        soft = denoise_mask(plane, feather)
        pad = max(MIN_PADDING, round(PADDING_SHARE * max(h, w)))
        y0, y1, x0, x1 = region_of(soft, pad, h, w)
        soft = soft[y0:y1, x0:x1]
    else:
        y0, y1, x0, x1, soft = 0, h, 0, w, None
    crop = source[y0:y1, x0:x1]
    details["region"] = [x0, y0, x1 - x0, y1 - y0]
    denoise_soft = soft
    scale = lowered.strength_scale((y0, y1, x0, x1), params.face_strength)
    if scale is not None:
        denoise_soft = scale if soft is None else soft * scale

    # 4. at the model's native resolution
    ctx.progress(0.02, "encoding")
    extra = net.module.num_parameters() * model.dtype.itemsize if net is not None else 0
    details["tier"] = options.place(ctx, model, extra)
    nh, nw = native_shape(y1 - y0, x1 - x0, model.native_size, model.vae_factor)
    work = resize_float(crop, nh, nw)
    work_mask = (
        None if denoise_soft is None else resize_float(denoise_soft[:, :, None], nh, nw)[:, :, 0]
    )
    sampling = Sampling(
        params.prompt, params.negative_prompt, params.strength, params.steps,
        params.guidance, params.sampler, seed, params.prediction,
    )  # fmt: skip
    control = None
    if net is not None:
        control = Control(
            net, work, params.controlnet_strength, params.control_start, params.control_end
        )
        details["controlnet"] = _control_detail(net, params, details)
    vae = inputs.models.get("vae")
    end = 0.85 if params.face_protection == "restore" else 0.95
    try:
        with applied_lora(model, inputs.models.get("lora"), params.lora_weight, vae):
            out = denoise(
                model, work, sampling, ctx.span(0.05, end), work_mask,
                vae=None if vae is None else vae.vae, control=control, report=details,
            )  # fmt: skip
    finally:
        if net is not None:
            model.forget(net)

    # 5. back, colour, composite
    ctx.progress(end + 0.01, "compositing")
    out = colour_fix(resize_float(out, y1 - y0, x1 - x0), crop, params.colour_fix)
    if soft is not None:
        m = np.clip(soft, 0.0, 1.0)[:, :, None]
        out = crop + (out - crop) * m
    result = colour.copy()
    patch = _back(out, channels, top, colour.dtype)
    if soft is not None:
        patch = np.where(soft[:, :, None] > 0, patch, colour[y0:y1, x0:x1])
    result[y0:y1, x0:x1] = patch
    if params.face_protection == "restore":
        ctx.progress(0.87, "restoring faces")
        sub = ctx.span(0.87, 0.97, "restoring faces")
        result = restore_faces(sub, inputs, result, faces, details)

    # 6. report
    details["fidelity"] = fidelity(result, colour, top)
    if alpha is not None:
        result = np.concatenate([result, alpha], axis=2)
    ctx.progress(1.0, "done")
    return TaskResult(
        [Output("result", result, "Refined")], details, message=" ".join(details.get("notes", []))
    )


def _faces_detail(faces: Any, params: Any, details: dict[str, Any]) -> None:
    """What face protection did, in the details; a detector that could not run, in the notes."""
    detail = {"mode": "lower", "found": len(faces.boxes), "strength": params.face_strength}
    if faces.note:
        detail["note"] = faces.note
        details.setdefault("notes", []).append(faces.note)
    details["faces"] = detail


def _control_detail(net: Any, params: Any, details: dict[str, Any]) -> str:
    """The ControlNet's line for the details, and a note when its name says it is no tile."""
    name = getattr(net.entry, "name", "")
    if not net.looks_like_tile:
        details.setdefault("notes", []).append(
            f"the ControlNet '{name}' does not look like a tile ControlNet by its name; it was "
            "given the image itself as its condition, which only a tile (or blur) model expects"
        )
    return (
        f"{name} at {params.controlnet_strength:g}, steps "
        f"{params.control_start:g}-{params.control_end:g}"
    )


SPEC = TaskSpec(
    id="refine",
    title="Refine (diffusion)",
    help="Restore detail with a Stable Diffusion model at low strength (img2img): the "
    "original stays, textures and edges are redrawn. With a selection only the selection is "
    "re-rendered; faces are refined more gently (or restored afterwards), and a tile "
    "ControlNet can hold the structure. Reports the seed and how far the result moved.",
    params=RefineParams,
    run=run,
    prepare=prepare,
    model=options.MODEL_SLOT,
    outputs=(OutputSpec("result", "Refined"),),
    requires=options.REQUIRES,
    install_hint=options.INSTALL_HINT,
    group="enhance",
    order=50,
    summarize=summary_lines,
    presets=options.PRESETS,
)
