"""Tiled refine: the Ultimate SD Upscale algorithm, so any image size fits in memory.

Steps: 1. check the request (a ControlNet must be of the checkpoint's family), 2. upscale
with an SR model (or Lanczos), and find the faces to protect on the input, 3. img2img tile by
tile at the model's native tile size, each on its tile plus padding and composited through a
blurred mask, in linear or chess order (later tiles see earlier results), each tile's colours
fixed against the upscaled input so no tile shifts in tone; inside faces the denoise mask is
lowered to their share of the strength; with a tile ControlNet, each tile's own pixels are
its condition, 4. the seam fix (band pass, half tile, half tile + intersections) with its own
strength, width, blur and padding, 5. faces restored by a face model when asked, 6. report
the seed and how far the result moved from the input (at the input's size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.diffusion import options
from backend.diffusion.controlnet import ControlNetParams
from backend.diffusion.face_guard import FaceParams
from backend.diffusion.options import DiffusionParams
from backend.diffusion.prediction import PredictionParams
from backend.diffusion.report import summary_lines
from backend.diffusion.usdu import ORDERS, SEAM_FIXES
from backend.errors import ImageTooLargeError, InvalidParameterError
from backend.tasks.context import TaskContext
from backend.tasks.spec import Limits, Output, OutputSpec, TaskInputs, TaskResult, TaskSpec, param


@dataclass
class TiledRefineParams(PredictionParams, ControlNetParams, FaceParams, DiffusionParams):
    scale: float = param(
        2.0,
        "Scale",
        help="How much larger the result is; 1 refines at the image's own size.",
        minimum=1.0,
        maximum=8.0,
        step=0.5,
        unit="x",
        flags=("-s", "--scale"),
    )
    upscale_model: str | None = param(
        None,
        "Upscale model",
        help="The super-resolution model that enlarges the image before refining.",
        widget="model",
        folders=("upscale_models",),
        purposes=("SR",),
        none_label="Lanczos",
        flags=("-u", "--upscale-model"),
    )
    tile: int | None = param(
        None,
        "Tile size",
        help="Tiles are refined at this size; the model's native size works best.",
        minimum=64,
        maximum=2048,
        step=64,
        unit="px",
        none_label="the model's native size",
        flags=("-t", "--tile"),
        advanced=True,
    )
    padding: int = param(
        32, "Padding", help="Context around each tile.", minimum=0, maximum=256, unit="px",
        advanced=True,
    )  # fmt: skip
    mask_blur: int = param(
        8, "Mask blur", help="Softness of each tile's edge.", minimum=0, maximum=64, unit="px",
        advanced=True,
    )  # fmt: skip
    order: str = param(
        "linear", "Tile order", help="Linear, or every other tile first (chess).",
        choices=ORDERS, advanced=True,
    )  # fmt: skip
    seam_fix: str = param(
        "none",
        "Seam fix",
        help="A second pass over the tile borders: bands along them, tiles offset by half "
        "a tile, or those and the corners.",
        choices=SEAM_FIXES,
        choice_labels=("none", "band pass", "half tile", "half tile + intersections"),
    )
    seam_strength: float = param(
        0.35, "Seam fix strength", help="Denoise of the seam pass.", minimum=0.0, maximum=1.0,
        step=0.05, advanced=True,
    )  # fmt: skip
    seam_width: int = param(
        64, "Seam fix width", help="Band pass: the band's width.", minimum=8, maximum=512,
        unit="px", advanced=True,
    )  # fmt: skip
    seam_blur: int = param(
        8, "Seam fix blur", help="Softness of the seam masks.", minimum=0, maximum=64,
        unit="px", advanced=True,
    )  # fmt: skip
    seam_padding: int = param(
        16, "Seam fix padding", help="Context around each seam job.", minimum=0, maximum=256,
        unit="px", advanced=True,
    )  # fmt: skip
    max_output_pixels: int = param(600_000_000, "Largest result", internal=True)

    def validate(self) -> None:
        self.check_common()
        self.check_control()
        if self.order not in ORDERS or self.seam_fix not in SEAM_FIXES:
            raise InvalidParameterError("order or seam_fix is not one of the listed values.", "")
        if not 1.0 <= self.scale <= 8.0:
            raise InvalidParameterError(f"scale must be 1..8, not {self.scale}.", "")


def prepare(params: TiledRefineParams, inputs: TaskInputs, entry: Any, limits: Limits) -> None:
    params.validate()
    params.max_output_pixels = limits.max_output_pixels
    h, w = inputs.image.shape[:2]
    out = round(h * params.scale) * round(w * params.scale)
    if out > limits.max_output_pixels:
        raise ImageTooLargeError(
            f"The result would be {out / 1e6:.0f} megapixels; at most "
            f"{limits.max_output_pixels / 1e6:.0f} are allowed.",
            "Use a smaller scale or work on a part of the image.",
        )
    if entry is not None:
        options.check_memory(entry, "Tiled refine")


def run(ctx: TaskContext, inputs: TaskInputs, params: TiledRefineParams) -> TaskResult:
    from backend.diffusion import usdu
    from backend.diffusion.colour import colour_fix, fidelity
    from backend.diffusion.controlnet import Control, check_pair
    from backend.diffusion.face_guard import Faces, find_faces, restore_faces
    from backend.diffusion.img2img import Sampling, denoise
    from backend.diffusion.lora import applied_lora
    from backend.imaging import max_value, resize, split_alpha
    from backend.tasks import upscale
    from backend.tasks.refine import (
        _back,
        _control_detail,
        _faces_detail,
        _float_rgb,
        native_shape,
        resize_float,
    )

    # 1. check
    params.validate()
    model = inputs.model
    if model is None:
        raise InvalidParameterError("Tiled refine needs a Stable Diffusion model.", "")
    net = inputs.models.get("controlnet")
    if net is not None:
        check_pair(model, net)  # before the upscale: a wrong family is the user's to fix
    seed = params.chosen_seed()
    pixels = inputs.image
    colour, alpha = split_alpha(pixels)
    top = max_value(pixels.dtype)
    h, w, channels = colour.shape
    oh, ow = round(h * params.scale), round(w * params.scale)

    # 2. upscale
    ctx.progress(0.01, "upscaling")
    sr = inputs.models.get("upscale_model")
    if sr is not None:
        big = upscale.run(
            np.ascontiguousarray(colour), sr, upscale.UpscaleParams(width=ow),
            progress=ctx.span(0.01, 0.1, "upscaling"), cancel=ctx.cancel,
        )  # fmt: skip
    else:
        big = resize(colour, ow, oh) if (oh, ow) != (h, w) else colour
    ctx.check_cancel()
    image = _float_rgb(big, top)
    upscaled = image.copy()
    details: dict[str, Any] = {"seed": seed, "family": model.family, "size": [ow, oh]}
    faces = Faces()
    if params.face_protection != "off" and params.strength > 0:
        faces = find_faces(ctx, pixels).scaled(ow / w, oh / h)
        if params.face_protection == "lower":
            _faces_detail(faces, params, details)
        ctx.check_cancel()
    lowered = faces if params.face_protection == "lower" else Faces()

    # 3 + 4. tiles, then seams
    extra = net.module.num_parameters() * model.dtype.itemsize if net is not None else 0
    details["tier"] = options.place(ctx, model, extra)
    tile = params.tile or model.native_size
    jobs = usdu.main_jobs(oh, ow, tile, params.order)
    if params.strength == 0.0:
        jobs = []  # strength 0 is the upscaled input itself
    if params.seam_fix != "none" and params.seam_strength > 0:
        jobs += usdu.seam_jobs(oh, ow, tile, params.seam_fix, params.seam_width)
    details["tiles"] = sum(not j.seam for j in jobs)
    details["seam_jobs"] = sum(j.seam for j in jobs)
    if net is not None:
        details["controlnet"] = _control_detail(net, params, details)
    vae = inputs.models.get("vae")
    span = ctx.span(0.1, 0.9 if params.face_protection == "restore" else 0.97)
    paddings = (params.padding, params.seam_padding)

    def refine_one(crop: np.ndarray, mask: np.ndarray, k: int, n: int, job: Any) -> np.ndarray:
        ch, cw = crop.shape[:2]
        nh, nw = native_shape(ch, cw, tile, model.vae_factor)
        strength = params.seam_strength if job.seam else params.strength
        sampling = Sampling(
            params.prompt, params.negative_prompt, strength, params.steps, params.guidance,
            params.sampler, seed + k, params.prediction,
        )  # fmt: skip
        scale = lowered.strength_scale(
            usdu.crop_of(job.rect, paddings[job.seam], oh, ow), params.face_strength
        )
        if scale is not None:
            mask = mask * scale
        work = resize_float(crop, nh, nw)
        control = None
        if net is not None:  # a tile ControlNet's condition is the tile itself
            control = Control(
                net, work, params.controlnet_strength, params.control_start, params.control_end
            )
        out = denoise(
            model, work, sampling, span.span(k / n, (k + 1) / n),
            resize_float(mask[:, :, None], nh, nw)[:, :, 0], vae=None if vae is None else vae.vae,
            stage=f"tile {k + 1} of {n}", control=control, report=details,
        )  # fmt: skip
        # each tile's tones from the upscaled input, so no tile shifts in colour
        return colour_fix(resize_float(out, ch, cw), crop, params.colour_fix)

    try:
        with applied_lora(model, inputs.models.get("lora"), params.lora_weight, vae):
            usdu.run_jobs(image, jobs, refine_one, paddings, (params.mask_blur, params.seam_blur))
    finally:
        if net is not None:
            model.forget(net)
    result = _back(image, channels, top, colour.dtype)
    if params.face_protection == "restore" and jobs:
        ctx.progress(0.9, "restoring faces")
        sub = ctx.span(0.9, 0.97, "restoring faces")
        result = restore_faces(sub, inputs, result, faces, details)
    ctx.progress(0.98, "finishing")
    small = result if (oh, ow) == (h, w) else resize(result, w, h)
    details["fidelity"] = fidelity(small, colour, top)
    details["fidelity_to_upscaled"] = fidelity(
        result, _back(upscaled, channels, top, colour.dtype), top
    )
    if alpha is not None:
        a = alpha if (oh, ow) == (h, w) else resize(alpha, ow, oh)
        result = np.concatenate([result, a], axis=2)
    ctx.progress(1.0, "done")
    message = " ".join(details.get("notes", []))
    return TaskResult([Output("result", result, "Tiled refine")], details, message=message)


SPEC = TaskSpec(
    id="tiled-refine",
    title="Upscale and refine (diffusion, tiled)",
    help="Upscale, then redraw detail tile by tile with a Stable Diffusion model (Ultimate SD "
    "Upscale). The image is enlarged with a super-resolution model (or Lanczos) first; seam "
    "fixes and a per-tile colour correction keep tiles from showing, faces are refined more "
    "gently (or restored afterwards), a tile ControlNet holds each tile's structure, and any "
    "size fits in memory.",
    params=TiledRefineParams,
    run=run,
    prepare=prepare,
    model=options.MODEL_SLOT,
    mask="ignored",
    outputs=(OutputSpec("result", "Tiled refine"),),
    resizes=True,
    requires=options.REQUIRES,
    install_hint=options.INSTALL_HINT,
    group="enhance",
    order=55,
    summarize=summary_lines,
    presets=options.PRESETS,
)
