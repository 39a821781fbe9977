"""Colorization of black-and-white photos with DDColor (or another colorization model spandrel
loads), keeping the photo's own luminance.

Steps: 1. the luminance of the input (a gray image, or an RGB one: a black-and-white or toned
scan stored as RGB is recognised and reported), 2. the model at its working size (DDColor's
256x256: it resizes its input itself, so sending it more only costs time), 3. the model's
chroma resized back to the photo's size, scaled by the saturation, 4. recombined with the
original luminance: in YCbCr, each pixel's chroma reduced just enough to stay in gamut, so the
luma is the input's within one level; or, by option, in Lab as DDColor's own pipeline does,
5. the original alpha put back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.errors import InvalidParameterError, ModelFormatError
from backend.imaging import max_value, split_alpha
from backend.tasks.context import TaskContext
from backend.tasks.spec import (
    ModelSlot,
    Output,
    OutputSpec,
    Preset,
    TaskInputs,
    TaskResult,
    TaskSpec,
    check_ranges,
    param,
)

#: BT.601 luma weights: Y = 0.299 R + 0.587 G + 0.114 B (JPEG's YCbCr)
LUMA = (0.299, 0.587, 0.114)
#: longest side a model without a declared size runs at: colour is low-frequency
DEFAULT_WORKING_SIDE = 512
#: chroma (in 8-bit levels) below which an RGB photo counts as black-and-white or toned
MONOCHROME_SPREAD = 6.0
SPACES = ("ycbcr", "lab")
MISSING_HINT = (
    "Put a colorization model (DDColor; .pth or .safetensors) in the colorization folder, or "
    "download one from the catalog."
)


@dataclass
class ColorizeParams:
    saturation: float = param(
        1.0,
        "Saturation",
        help="How strong the model's colours are: 1 as the model paints them, 0 the black and "
        "white original, above 1 more vivid.",
        minimum=0.0,
        maximum=2.0,
        step=0.05,
        widget="slider",
    )
    keep_luminance: bool = param(
        True,
        "Keep the photo's brightness",
        help="Take only the colour from the model, so every pixel keeps its brightness (in "
        "YCbCr, within one level). Off: colours are combined in Lab as DDColor itself does, "
        "which keeps lightness as the eye sees it but may move the luma by a few levels.",
    )
    working_size: int | None = param(
        None,
        "Working size",
        help="The longest side the model runs at; its colours are then enlarged to the photo. "
        "Larger sizes cost time and seldom add colour detail.",
        minimum=64,
        maximum=2048,
        step=32,
        unit="px",
        none_label="the model's own (DDColor: 256)",
        advanced=True,
    )

    def validate(self) -> None:
        check_ranges(self, "colorize")  # the ranges its fields declare


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 luma of float RGB."""
    r, g, b = LUMA
    return rgb[..., 0] * r + rgb[..., 1] * g + rgb[..., 2] * b


def chroma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 Cb, Cr of float RGB (same units as the RGB, centred on 0)."""
    y = luma(rgb)
    return np.stack([(rgb[..., 2] - y) / 1.772, (rgb[..., 0] - y) / 1.402], axis=-1)


def ycbcr_to_rgb(y: np.ndarray, cbcr: np.ndarray, top: float) -> np.ndarray:
    """RGB with luma `y` and the chroma's hue, the chroma shortened per pixel just enough for
    every channel to stay within 0..top (so rounding alone moves the luma, by half a level)."""
    cb, cr = cbcr[..., 0], cbcr[..., 1]
    # how much each channel moves per unit of chroma: R = Y + 1.402 Cr, B = Y + 1.772 Cb, ...
    slopes = (1.402 * cr, -0.344136 * cb - 0.714136 * cr, 1.772 * cb)
    fit = np.ones_like(y)
    for k in slopes:
        room = np.where(k > 0, top - y, y)
        limit = np.where(np.abs(k) > 1e-9, room / np.maximum(np.abs(k), 1e-9), np.inf)
        np.minimum(fit, limit, out=fit)
    fit = np.clip(fit, 0.0, 1.0)
    return np.stack([y + k * fit for k in slopes], axis=-1)


def monochrome_kind(colour: np.ndarray) -> str:
    """ "gray" (one channel), "monochrome" (RGB whose chroma hardly varies: a black-and-white
    or sepia scan stored as RGB) or "colour"."""
    if colour.shape[2] == 1:
        return "gray"
    step = max(1, int(np.sqrt(colour.shape[0] * colour.shape[1] / 65536)))
    sample = colour[::step, ::step].astype(np.float32) * np.float32(255.0 / max_value(colour.dtype))
    c = chroma(sample).reshape(-1, 2)
    spread = np.percentile(np.linalg.norm(c - np.median(c, axis=0), axis=1), 99)
    return "monochrome" if spread < MONOCHROME_SPREAD else "colour"


def working_shape(model: Any, height: int, width: int, side: int | None) -> tuple[int, int]:
    """(h, w) the model runs at: the asked side, DDColor's own input size, or a capped size."""
    own = getattr(model.descriptor.model, "input_size", None)
    if side is None and own is not None:
        return int(own[0]), int(own[1])
    side = side or DEFAULT_WORKING_SIDE
    scale = min(1.0, side / max(height, width))
    req = model.descriptor.size_requirements
    h, w = max(round(height * scale), req.minimum, 1), max(round(width * scale), req.minimum, 1)
    m = req.multiple_of
    return -(-h // m) * m, -(-w // m) * m


def check_model(model: Any) -> None:
    d = model.descriptor
    if d.input_channels not in (1, 3) or d.output_channels != 3 or model.scale != 1:
        raise ModelFormatError(
            f"The model '{model.entry.name}' takes {d.input_channels} channels and returns "
            f"{d.output_channels} at x{model.scale}; Colorize runs models that take a gray "
            "image and return a colour one of the same size.",
            MISSING_HINT,
        )


def run(
    pixels: np.ndarray, model: Any, params: ColorizeParams, ctx: TaskContext
) -> tuple[np.ndarray, dict[str, Any]]:
    """(colorized pixels: RGB or RGBA in the input's depth, details)."""
    import cv2

    from backend.inference import TileRunner

    # 1. luminance
    params.validate()
    check_model(model)
    colour, alpha = split_alpha(pixels)
    kind = monochrome_kind(colour)
    top = float(max_value(pixels.dtype))
    rgb = colour.astype(np.float32) / np.float32(top)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    y = luma(rgb)
    height, width = y.shape
    ctx.check_cancel()
    ctx.progress(0.02, "colorizing")

    # 2. the model at its working size; its layers report progress and answer a cancel
    wh, ww = working_shape(model, height, width, params.working_size)
    small = cv2.resize(y, (ww, wh), interpolation=cv2.INTER_AREA)
    inputs = small[..., None] if model.descriptor.input_channels == 1 else np.dstack([small] * 3)

    def on_layer(fraction: float) -> None:
        ctx.check_cancel()
        ctx.progress(0.02 + 0.9 * fraction, "colorizing")

    runner = TileRunner(model.descriptor, model.precision, model.channels_last, on_layer=on_layer)
    painted = runner(np.ascontiguousarray(inputs, dtype=np.float32))
    ctx.progress(0.93, "combining")

    # 3 + 4. the chroma back at full size, over the original luminance
    if params.keep_luminance:
        cbcr = cv2.resize(chroma(painted), (width, height), interpolation=cv2.INTER_CUBIC)
        out = ycbcr_to_rgb(y * np.float32(top), cbcr * np.float32(top * params.saturation), top)
    else:
        lab = cv2.cvtColor(np.ascontiguousarray(painted), cv2.COLOR_RGB2Lab)
        ab = cv2.resize(lab[..., 1:], (width, height), interpolation=cv2.INTER_CUBIC)
        lightness = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[..., :1]
        full = np.concatenate([lightness, ab * np.float32(params.saturation)], axis=2)
        out = np.clip(cv2.cvtColor(full, cv2.COLOR_Lab2RGB), 0.0, 1.0) * np.float32(top)
    result = np.clip(np.rint(out), 0, top).astype(pixels.dtype)
    if alpha is not None:
        result = np.concatenate([result, alpha], axis=2)
    ctx.progress(1.0, "done")
    details = {"input": kind, "working_size": [ww, wh]}
    if kind == "colour":
        details["note"] = "The photo already had colour; its colours were replaced."
    return result, details


# --- the task --------------------------------------------------------------------------------


def run_task(ctx: TaskContext, inputs: TaskInputs, params: ColorizeParams) -> TaskResult:
    model = inputs.model
    if model is None:
        raise InvalidParameterError("Colorize needs a colorization model.", MISSING_HINT)
    pixels, details = run(inputs.image, model, params, ctx)
    return TaskResult([Output("result", pixels, "Colorized")], details)


def summarize(details: dict[str, Any]) -> list[str]:
    kind = details.get("input", "")
    lines = {
        "gray": ["a gray image: colorized"],
        "monochrome": ["a black-and-white (or toned) photo stored as RGB: colorized"],
    }.get(kind, [details.get("note", "")])
    return [line for line in lines if line]


PRESETS = (
    Preset(
        "natural",
        "Natural",
        "The colours as the model paints them, the photo's brightness kept.",
        {"saturation": 1.0, "keep_luminance": True},
    ),
    Preset(
        "old-photo",
        "Old photo",
        "Softer colours, closer to those of an old print.",
        {"saturation": 0.75, "keep_luminance": True},
    ),
    Preset(
        "vivid",
        "Vivid",
        "Stronger colours than the model's own.",
        {"saturation": 1.4, "keep_luminance": True},
    ),
)


SPEC = TaskSpec(
    id="colorize",
    title="Colorize",
    help="Give a black-and-white photo colour with a colorization model (DDColor), keeping "
    "its own brightness; on a selection or the whole layer.",
    params=ColorizeParams,
    run=run_task,
    model=ModelSlot(
        folders=("colorization",),
        purposes=("Restoration",),
        default=None,
        missing_hint=MISSING_HINT,
        catalog_task="colorize",
    ),
    outputs=(OutputSpec("result", "Colorized"),),
    summarize=summarize,
    group="restore",
    order=50,
    presets=PRESETS,
)
