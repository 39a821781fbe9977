"""Denoising and artifact removal with any spandrel restoration model (SCUNet, NAFNet, DRUNet,
DnCNN, FBCNN, ...), tiled like an upscale, blended with the original by a strength.

Steps: 1. check the request (the model must keep the image's size), 2. run the colour through
upscale.run at scale 1 (tiling, border mirroring, out-of-memory tile halving), giving FBCNN its
JPEG quality and DRUNet and FDnCNN their noise map through the model call, 3. blend with the
original by `strength` in the image's own depth, 4. put the original alpha back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.errors import InvalidParameterError, ModelFormatError
from backend.tasks import upscale
from backend.tasks.context import TaskContext
from backend.tasks.spec import (
    Limits,
    ModelSlot,
    OutputSpec,
    Preset,
    TaskInputs,
    TaskSpec,
    param,
)
from backend.tasks.upscale import (
    DEFAULT_MAX_OUTPUT_PIXELS,
    UpscaleParams,
    overlap_param,
    tile_param,
)

#: DRUNet's own default noise level (KAIR's), in 8-bit levels
DEFAULT_NOISE_LEVEL = 15.0
#: rows blended at a time, so a huge image never needs a float copy of itself
BLEND_ROWS = 256
MISSING_HINT = (
    "Put a restoration model (SCUNet, NAFNet, DRUNet, DnCNN, FBCNN; .pth or .safetensors) in "
    "the upscale_models folder, or download one from the catalog."
)


@dataclass
class DenoiseParams:
    strength: float = param(
        1.0,
        "Strength",
        help="How much of the model's result shows over the original: 1 is the model's "
        "result, 0 the original.",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        widget="slider",
    )
    jpeg_quality: int | None = param(
        None,
        "JPEG quality",
        help="The quality the image was saved at; FBCNN removes that much compression. "
        "Lower values remove more.",
        minimum=1,
        maximum=100,
        step=5,
        none_label="estimated by the model",
        applies_to=("FBCNN",),
    )
    noise_level: float = param(
        DEFAULT_NOISE_LEVEL,
        "Noise level",
        help="How strong the noise is, in 8-bit levels whatever the image's depth; DRUNet "
        "and FDnCNN remove that much (15 is their own default).",
        minimum=0.0,
        maximum=255.0,
        step=1.0,
        unit="levels",
        applies_to=("DRUNet", "DnCNN"),
    )
    tile: int | None = tile_param(
        "The image is processed in tiles of this many pixels so it fits in memory; 0 "
        "runs the whole image in one pass. Models that work poorly in tiles (SCUNet) get "
        "the whole image unless a tile is given."
    )
    overlap: int = overlap_param()
    max_output_pixels: int = param(DEFAULT_MAX_OUTPUT_PIXELS, "Largest result", internal=True)

    def validate(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise InvalidParameterError(
                f"strength must be between 0 and 1, not {self.strength}.", ""
            )
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise InvalidParameterError(
                f"jpeg_quality must be between 1 and 100, not {self.jpeg_quality}.",
                "Leave it out to let FBCNN estimate it.",
            )
        if not 0.0 <= self.noise_level <= 255.0:
            raise InvalidParameterError(
                f"noise_level must be between 0 and 255, not {self.noise_level}.", ""
            )
        self.upscale_params().validate()  # tile and overlap follow upscale's rules

    def upscale_params(self) -> UpscaleParams:
        return UpscaleParams(
            scale=1.0,
            tile=self.tile,
            overlap=self.overlap,
            alpha="resize",
            max_output_pixels=self.max_output_pixels,
        )


def check_scale(name: str, scale: int) -> None:
    """A model that changes the image's size is an upscaler, not a denoiser."""
    if scale != 1:
        raise InvalidParameterError(
            f"The model '{name}' enlarges the image x{scale}; Denoise runs only models that "
            "keep the image's size (x1).",
            f"Use Upscale for it (restora upscale -m {name}).",
        )


def takes_noise_level(descriptor: Any) -> bool:
    """DRUNet and FDnCNN take the noise level as a further input channel."""
    arch = descriptor.architecture.id
    return arch == "DRUNet" or (arch == "DnCNN" and descriptor.model.mode == "FDnCNN")


def model_call(descriptor: Any, params: DenoiseParams) -> Any:
    """How the network is called: FBCNN with its quality, DRUNet and FDnCNN with their noise
    map, a gray model on each colour channel; None when the descriptor's own call does."""
    import torch

    arch = descriptor.architecture.id
    gray = descriptor.input_channels == 1
    quality = params.jpeg_quality if arch == "FBCNN" else None
    noise_map = takes_noise_level(descriptor)
    if not gray and quality is None and not noise_map:
        return None

    def forward(d: Any, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if quality is not None:
            # FBCNN's qf_input is 1 - quality/100; it returns (image, estimated quality)
            qf = torch.full((n, 1), 1.0 - quality / 100.0, dtype=x.dtype, device=x.device)
            return d.model(x, qf)[0]
        if noise_map:
            sigma = params.noise_level / 255.0
            noise = torch.full((n, 1, *x.shape[2:]), sigma, dtype=x.dtype, device=x.device)
            return d.model(torch.cat([x, noise], dim=1))
        return d(x)

    def call(d: Any, x: torch.Tensor) -> torch.Tensor:
        if not gray:
            return forward(d, x)
        # a gray model denoises each colour channel as a gray image of its own
        n, c, h, w = x.shape
        y = forward(d, x.reshape(n * c, 1, h, w))
        return y.reshape(n, c, *y.shape[2:])

    return call


def blend(original: np.ndarray, restored: np.ndarray, strength: float) -> np.ndarray:
    """original + strength * (restored - original), rounded, in the original's dtype."""
    if strength >= 1.0:
        return restored
    if strength <= 0.0:
        return original.copy()
    out = np.empty_like(original)
    for top in range(0, original.shape[0], BLEND_ROWS):
        rows = slice(top, top + BLEND_ROWS)
        base = original[rows].astype(np.float32)
        mixed = base + (restored[rows].astype(np.float32) - base) * np.float32(strength)
        out[rows] = np.rint(mixed).astype(original.dtype)  # a convex mix stays in range
    return out


# --- the task --------------------------------------------------------------------------------


def prepare(params: DenoiseParams, inputs: TaskInputs, entry: Any, limits: Limits) -> None:
    """Before queueing: refuse an upscaler, and take the caller's size limit."""
    check_scale(entry.name, entry.output_scale or entry.scale)
    params.max_output_pixels = limits.max_output_pixels


def run(ctx: TaskContext, inputs: TaskInputs, params: DenoiseParams) -> np.ndarray:
    # 1. check
    params.validate()
    model = inputs.model
    if model is None:
        raise InvalidParameterError("Denoise needs a restoration model.", MISSING_HINT)
    check_scale(model.entry.name, model.default_output_scale)
    check_scale(model.entry.name, model.scale)
    descriptor = model.descriptor
    if descriptor.input_channels not in (1, 3) or (
        descriptor.output_channels != descriptor.input_channels
    ):
        raise ModelFormatError(
            f"The model '{model.entry.name}' takes {descriptor.input_channels} channels and "
            f"returns {descriptor.output_channels}; Denoise runs gray or RGB models.",
            "",
        )
    pixels = inputs.image
    channels = pixels.shape[2]
    colour, alpha = (
        (pixels[:, :, : channels - 1], pixels[:, :, channels - 1 :])
        if channels in (2, 4)
        else (pixels, None)
    )
    ctx.check_cancel()
    if params.strength == 0.0:  # the original itself: no need to run the model
        ctx.progress(1.0, "done")
        return pixels.copy()

    # 2. the model, tiled
    restored = upscale.run(
        np.ascontiguousarray(colour),
        model,
        params.upscale_params(),
        progress=ctx.span(0.0, 0.98),
        stage="denoising",
        cancel=ctx.cancel,
        call=model_call(descriptor, params),
    )

    # 3 + 4. strength, alpha
    ctx.progress(0.99, "blending")
    out = blend(colour, restored, params.strength)
    if alpha is not None:
        out = np.concatenate([out, alpha], axis=2)
    ctx.progress(1.0, "done")
    return out


PRESETS = (
    Preset(
        "photo",
        "Photo",
        "A model made for camera noise in photographs, at full strength.",
        {"strength": 1.0},
        ("photo",),
    ),
    Preset(
        "gentle",
        "Gentle",
        "Half of the model's result over the original, so some of the photo's grain stays.",
        {"strength": 0.5},
    ),
)


SPEC = TaskSpec(
    id="denoise",
    title="Denoise",
    help="Remove noise, blur or JPEG artifacts with a restoration model (SCUNet, NAFNet, "
    "DRUNet, DnCNN, FBCNN, ...) on a selection or the whole layer, at the image's own size.",
    params=DenoiseParams,
    run=run,
    prepare=prepare,
    model=ModelSlot(
        folders=("upscale_models",),
        purposes=("Restoration",),
        default=None,
        missing_hint=MISSING_HINT,
        catalog_task="denoise",
    ),
    outputs=(OutputSpec("result", "Denoised"),),
    resizes=False,
    group="restore",
    order=30,
    presets=PRESETS,
)
