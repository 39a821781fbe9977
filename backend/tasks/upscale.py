"""Super-resolution with any spandrel SR or restoration model, tiled to fit any image.

Steps: 1. check the request, 2. choose the tile, 3. upscale the colour, 4. upscale the alpha
separately (it is never dropped), 5. resize to the requested scale or width. On out-of-memory
the tile is halved and the image is run again, down to the smallest tile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.errors import (
    ImageTooLargeError,
    InvalidParameterError,
    OutOfMemoryError,
)
from backend.imaging import check_size, max_value, resize, split_alpha
from backend.models.registry import DEFAULT_UPSCALE_MODEL
from backend.models.runtime import MIN_TILE, LoadedModel
from backend.tasks.context import CancelToken, TaskContext
from backend.tasks.spec import (
    Limits,
    ModelSlot,
    OutputSpec,
    Preset,
    TaskInputs,
    TaskSpec,
    param,
)
from backend.tiling import balanced_tile, tiled_apply

DEFAULT_MAX_OUTPUT_PIXELS = 600_000_000
ALPHA_MODES = ("model", "resize")
MAX_SCALE = 16.0
BORDER = 8  # input pixels mirrored around the image (ncnn's Real-ESRGAN mirrors 10 per tile)


def tile_param(help_text: str) -> Any:
    """The tile size every tiled task offers: automatic by default, 0 for one pass."""
    return param(
        None,
        "Tile size",
        help=help_text,
        minimum=0,
        maximum=8192,
        step=32,
        unit="px",
        none_label="automatic (from free memory)",
        flags=("-t", "--tile"),
        advanced=True,
    )


def overlap_param() -> Any:
    return param(
        32,
        "Tile overlap",
        help="How far tiles overlap; the overlap is blended so no seam shows.",
        minimum=0,
        maximum=256,
        step=8,
        unit="px",
        advanced=True,
    )


@dataclass
class UpscaleParams:
    scale: float | None = param(
        None,
        "Scale",
        help="How much larger the result is. With an x4 model, 2 runs the model and then "
        "resizes with high quality (area averaging down, Lanczos up).",
        minimum=0.05,
        maximum=MAX_SCALE,
        step=0.5,
        unit="x",
        none_label="the model's own",
        flags=("-s", "--scale"),
    )
    width: int | None = param(
        None,
        "Width",
        help="The result's width; the aspect ratio is kept. Overrides the scale.",
        minimum=1,
        maximum=65536,
        unit="px",
        none_label="from the scale",
        flags=("-W", "--width"),
        advanced=True,
    )
    tile: int | None = tile_param(
        "The image is upscaled in tiles of this many input pixels so it fits in memory; "
        "0 runs the whole image in one pass."
    )
    overlap: int = overlap_param()
    alpha: str = param(
        "model",
        "Transparency",
        help="How the alpha channel is enlarged: by the model too, or only resized (faster).",
        choices=ALPHA_MODES,
        choice_labels=("through the model", "resized only"),
        advanced=True,
    )
    max_output_pixels: int = param(DEFAULT_MAX_OUTPUT_PIXELS, "Largest result", internal=True)

    def validate(self) -> None:
        if self.scale is not None and not (0 < self.scale <= MAX_SCALE):
            raise InvalidParameterError(
                f"scale must be between 0 and {MAX_SCALE:g}, not {self.scale}.",
                "For example --scale 2.",
            )
        if self.width is not None and self.width < 1:
            raise InvalidParameterError(f"width must be positive, not {self.width}.", "")
        if self.tile is not None and self.tile != 0 and self.tile < 16:
            raise InvalidParameterError(
                f"tile must be 0 (no tiling) or at least 16, not {self.tile}.",
                "Leave it out to choose automatically.",
            )
        if not 0 <= self.overlap <= 256:
            raise InvalidParameterError(f"overlap must be 0..256, not {self.overlap}.", "")
        if self.alpha not in ALPHA_MODES:
            raise InvalidParameterError(
                f"alpha must be one of {ALPHA_MODES}, not '{self.alpha}'.", ""
            )


#: progress(fraction 0..1, stage)
ProgressSink = Callable[[float, str], None]


def output_size(
    width: int, height: int, default_scale: int, params: UpscaleParams
) -> tuple[int, int]:
    if params.width:
        return params.width, max(1, round(height * params.width / width))
    scale = params.scale if params.scale is not None else default_scale
    return max(1, round(width * scale)), max(1, round(height * scale))


def run(
    pixels: np.ndarray,
    model: LoadedModel,
    params: UpscaleParams,
    progress: ProgressSink | None = None,
    cancel: CancelToken | None = None,
    free_bytes: int | None = None,
    call: Any = None,
    stage: str = "upscaling",
) -> np.ndarray:
    """Upscale (H, W, C) uint8/uint16 pixels; returns the same channels and dtype.

    `call(descriptor, x)` runs the network in place of its own call (see inference.run_tensor);
    a scale-1 restoration model passes through here too, tiled the same way, reporting its
    tiles as `stage`."""
    # 1. check
    params.validate()
    height, width = pixels.shape[:2]
    check_size(width, height, max_pixels=2**62)
    out_w, out_h = output_size(width, height, model.default_output_scale, params)
    if out_w * out_h > params.max_output_pixels:
        raise ImageTooLargeError(
            f"The result would be {out_w}x{out_h} = {out_w * out_h / 1e6:.0f} megapixels, more "
            f"than the limit of {params.max_output_pixels / 1e6:.0f}.",
            "Upscale a selection, or choose a smaller scale.",
        )
    has_alpha_channel = pixels.shape[2] in (2, 4)
    # mirror the borders so the network sees image, not zero padding, at the edges
    border = min(BORDER, height - 1, width - 1)
    if border:
        pixels = np.pad(pixels, ((border, border), (border, border), (0, 0)), mode="reflect")
    colour, alpha = split_alpha(pixels)

    # 2. tile size
    if params.tile is None:
        from backend.devices import free_memory

        tile = model.auto_tile(free_bytes if free_bytes is not None else free_memory(model.device))
    else:
        tile = params.tile or max(pixels.shape[:2])
    if model.descriptor.tiling.name != "SUPPORTED" and params.tile is None:
        tile = max(tile, *pixels.shape[:2])  # the model needs the whole image to work well
    tile_hw = (tile, tile)
    if params.tile is None:  # an automatic tile is a limit: no larger than the image needs
        multiple = model.descriptor.size_requirements.multiple_of
        tile_hw = (
            balanced_tile(pixels.shape[0], tile, params.overlap, multiple),
            balanced_tile(pixels.shape[1], tile, params.overlap, multiple),
        )

    passes = 1 + (alpha is not None)

    position = {"stage": 0, "name": stage, "done": 0, "total": 1, "sent": 0.0}

    def report(stage_index: int, stage: str) -> Callable[[int, int], None]:
        def tick(done: int, total: int) -> None:
            position.update(stage=stage_index, name=stage, done=done, total=total)
            publish(0.0)

        return tick

    def publish(within_tile: float) -> None:
        """Called after each tile and between layers inside one: cancel point and progress."""
        if cancel:
            cancel.raise_if_cancelled()
        if progress:
            tiles = (position["done"] + within_tile) / position["total"]
            fraction = min((position["stage"] + tiles) / passes, 0.999)
            if within_tile == 0.0 or fraction - position["sent"] >= 0.002:
                position["sent"] = fraction
                if isinstance(progress, TaskContext):  # "tile 3 of 12" for the editors
                    tile_no = min(position["done"] + 1, position["total"])
                    progress.progress(
                        fraction, position["name"], step=tile_no, steps=position["total"]
                    )
                else:
                    progress(fraction, position["name"])

    # 3 + 4. upscale, halving the tile on out-of-memory. The tiles stream into one result of
    # the final size (colour and alpha side by side, the mirrored border left out), so no
    # second copy of it is made to crop the border or to join the alpha.
    result = np.empty((height * model.scale, width * model.scale, pixels.shape[2]), pixels.dtype)
    colours = colour.shape[2]
    while True:
        try:
            from backend.inference import TileRunner

            runner = TileRunner(
                model.descriptor, model.precision, model.channels_last, on_layer=publish, call=call
            )
            if cancel:
                cancel.raise_if_cancelled()
            tiled_apply(
                colour,
                runner,
                model.scale,
                tile_hw,
                params.overlap,
                out=result[:, :, :colours],
                progress=report(0, stage),
                trim=border,
            )
            if alpha is not None and params.alpha == "model":
                tiled_apply(
                    alpha,
                    runner,
                    model.scale,
                    tile_hw,
                    params.overlap,
                    out=result[:, :, colours:],
                    progress=report(1, "alpha"),
                    trim=border,
                )
            break
        except OutOfMemoryError:
            from backend.inference import free_device_memory

            free_device_memory(model.device)
            if min(tile_hw) <= MIN_TILE:
                raise
            tile_hw = (max(MIN_TILE, tile_hw[0] // 2), max(MIN_TILE, tile_hw[1] // 2))
    del colour, pixels  # the padded input's colour is not needed any more

    # 5. the alpha where it did not go through the model, and the resize
    if has_alpha_channel and alpha is None:
        result[:, :, colours:] = max_value(result.dtype)
    elif alpha is not None and params.alpha != "model":
        # resized with its mirrored border, then cropped: the edges see what they always saw
        s, (h, w) = model.scale, alpha.shape[:2]
        rows, cols = slice(border * s, (h - border) * s), slice(border * s, (w - border) * s)
        result[:, :, colours:] = resize(alpha, w * s, h * s)[rows, cols]
    del alpha
    if (out_w, out_h) != (result.shape[1], result.shape[0]):
        if progress:
            progress(0.999, "resizing")
        result = resize(result, out_w, out_h)
    if progress:
        progress(1.0, "done")
    return result


# --- the task --------------------------------------------------------------------------------


def prepare(params: UpscaleParams, inputs: TaskInputs, entry: Any, limits: Limits) -> None:
    """Before queueing: a selection is restored in place, and the result must fit the limit."""
    if inputs.mask is not None and params.scale is None and params.width is None:
        params.scale = 1.0
    params.max_output_pixels = limits.max_output_pixels
    height, width = inputs.image.shape[:2]
    # the scale the file delivers: an ncnn x2 model is an x4 network plus a resize
    out_w, out_h = output_size(width, height, entry.output_scale or entry.scale, params)
    if out_w * out_h > params.max_output_pixels:
        raise ImageTooLargeError(
            f"The result would be {out_w}x{out_h} = {out_w * out_h / 1e6:.0f} megapixels, more "
            f"than the limit of {params.max_output_pixels / 1e6:.0f}.",
            "Upscale a selection, or choose a smaller scale.",
        )


#: each names the catalog trait of the model it picks; every preset sets the alpha mode, so
#: going from Fast back to Photo undoes Fast's shortcut
PRESETS = (
    Preset(
        "photo",
        "Photo",
        "A model made for photographs; transparency goes through the model too.",
        {"alpha": "model"},
        ("photo",),
    ),
    Preset(
        "illustration",
        "Illustration",
        "A model made for drawings, anime and line art.",
        {"alpha": "model"},
        ("illustration",),
    ),
    Preset(
        "fast",
        "Fast",
        "A small, quick model, and transparency only resized instead of run through it.",
        {"alpha": "resize"},
        ("fast",),
    ),
)


def run_task(ctx: TaskContext, inputs: TaskInputs, params: UpscaleParams) -> np.ndarray:
    return run(inputs.image, inputs.model, params, progress=ctx, cancel=ctx.cancel)


SPEC = TaskSpec(
    id="upscale",
    title="Upscale",
    help="Enlarge the image with a super-resolution model (ESRGAN, Real-ESRGAN, SwinIR, HAT, "
    "SPAN, ...), tiled so any size fits in memory, with no visible seam.",
    params=UpscaleParams,
    run=run_task,
    prepare=prepare,
    model=ModelSlot(
        folders=("upscale_models",),
        purposes=("SR", "Restoration"),
        default=DEFAULT_UPSCALE_MODEL,
        missing_hint="Put a super-resolution model (.pth or .safetensors) in the "
        "upscale_models folder, or download one from the catalog.",
        catalog_task="upscale",
    ),
    outputs=(OutputSpec("result", "Upscaled"),),
    resizes=True,
    group="upscale",
    order=10,
    presets=PRESETS,
)
