"""HYPIR's one step over an image of any size, in overlapping patches.

Three passes over the same patch grid (patch P px, stride S px, as HYPIR tiles), each blended
into a whole-image canvas before the next starts: encode every patch (the latent
distribution's mean: no noise, so the same input gives the same output), run the UNet once per
latent patch at t = 200 and take the predicted x0, decode every latent patch. Blending each
pass, rather than only the pixels at the end, keeps the UNet's patches seeing one continuous
latent; the window is sin^2, which at half overlap sums to one, so a pixel between patches is
a smooth mix of both and no border shows. One component works at a time, so an offloaded
model moves to the device once per pass, not once per patch. Progress is reported per patch
and a cancel lands between patches.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from backend.diffusion.hypir_model import TIMESTEP, HypirModel
from backend.tasks.context import TaskContext

#: where each pass ends on the job's progress bar (the decoder costs about as much as the UNet)
PASSES = (("encoding", 0.2), ("restoring", 0.6), ("decoding", 1.0))
#: the window's floor: a border pixel covered by one patch only still has a weight
_FLOOR = 1e-3


def starts(length: int, patch: int, stride: int) -> list[int]:
    """Patch offsets along one side: every stride, and one flush with the far edge."""
    if length <= patch:
        return [0]
    return [*range(0, length - patch, stride), length - patch]


def ramp(size: int) -> torch.Tensor:
    """sin^2 over `size` pixels: shifted by half its size, two of them sum to one."""
    x = torch.sin(math.pi * (torch.arange(size, dtype=torch.float32) + 0.5) / size) ** 2
    return x.clamp_min(_FLOOR)


def window(size: int) -> torch.Tensor:
    """A size x size weight: the ramp along each side."""
    r = ramp(size)
    return r[:, None] * r[None, :]


def predicted_x0(sample: torch.Tensor, eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """The clean sample a noise prediction implies at a step of cumulative alpha `alpha_bar`
    (what DDPMScheduler.step reports as pred_original_sample, without drawing its noise)."""
    return (sample - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def restore(
    model: HypirModel, image: np.ndarray, prompt: str, patch: int, stride: int, ctx: TaskContext
) -> tuple[np.ndarray, int]:
    """`image` (HxWx3 float32 0..1, already at the output size) restored, the same size, and
    how many patches it took.

    An image whose shorter side is below the patch is enlarged to it first (HYPIR does the
    same: the UNet works at its own scale) and brought back after."""
    f = model.vae_factor
    patch, stride = max(f, patch - patch % f), max(f, stride - stride % f)
    h0, w0 = image.shape[:2]
    work = image
    if min(h0, w0) < patch:
        s = patch / min(h0, w0)
        work = _resize(image, max(patch, math.ceil(h0 * s)), max(patch, math.ceil(w0 * s)))
    h1, w1 = work.shape[:2]
    # pad to whole latent pixels by repeating the edge (not a flat colour the VAE would see)
    ph, pw = -h1 % f, -w1 % f
    padded = np.pad(work, ((0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else work
    pixels = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None] * 2 - 1
    lh, lw = pixels.shape[2] // f, pixels.shape[3] // f
    size, step = patch // f, stride // f
    grid = [(y, x) for y in starts(lh, size, step) for x in starts(lw, size, step)]

    embedding = model.text_embedding(prompt)
    scaling = float(model.vae.config.scaling_factor)
    t = torch.tensor([TIMESTEP], device=model.device)

    def unet_step(z: torch.Tensor) -> torch.Tensor:
        z_in = z * scaling
        eps = model.unet(z_in, t, encoder_hidden_states=embedding).sample
        return predicted_x0(z_in, eps, model.alpha_bar) / scaling

    start = 0.0
    spans = []
    for stage, end in PASSES:
        spans.append(ctx.span(start, end, stage))
        start = end
    latent_channels = int(model.vae.config.latent_channels)
    with torch.inference_mode():
        with model.on_device("vae") as vae:
            z = _tiled(
                lambda x: vae.encode(x).latent_dist.mean, pixels, grid, size, f, 1,
                latent_channels, model, spans[0], "encoding",
            )  # fmt: skip
        with model.on_device("unet"):
            z = _tiled(unet_step, z, grid, size, 1, 1, latent_channels, model, spans[1],
                       "restoring")  # fmt: skip
        with model.on_device("vae") as vae:
            out = _tiled(
                lambda zt: vae.decode(zt).sample, z, grid, size, 1, f, 3, model, spans[2],
                "decoding",
            )  # fmt: skip
    result = ((out[0, :, :h1, :w1].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    if (h1, w1) != (h0, w0):
        result = _resize(result, h0, w0)
    return np.ascontiguousarray(result, dtype=np.float32), len(grid)


def _tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    source: torch.Tensor,
    grid: list[tuple[int, int]],
    size: int,
    src_factor: int,
    dst_factor: int,
    channels: int,
    model: HypirModel,
    ctx: TaskContext,
    stage: str,
) -> torch.Tensor:
    """`fn` over every patch of `source` (grid in latent pixels, scaled by src_factor into the
    source and dst_factor into the result), blended into one float32 canvas on the host."""
    lh, lw = source.shape[2] // src_factor, source.shape[3] // src_factor
    out = torch.zeros(1, channels, lh * dst_factor, lw * dst_factor)
    weights = torch.zeros(1, 1, lh * dst_factor, lw * dst_factor)
    span = size * dst_factor
    w = window(span)
    n = len(grid)
    for k, (y, x) in enumerate(grid):
        ctx.check_cancel()
        tile = source[
            :, :, y * src_factor : (y + size) * src_factor, x * src_factor : (x + size) * src_factor
        ]
        result = fn(tile.to(model.device, model.dtype)).float().cpu()
        ys, xs = y * dst_factor, x * dst_factor
        out[:, :, ys : ys + span, xs : xs + span] += result * w
        weights[:, :, ys : ys + span, xs : xs + span] += w
        ctx.step(k + 1, n, f"{stage} tile {k + 1} of {n}")
    return out / weights


def _resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bicubic up (as HYPIR enlarges), area down (no aliasing), float32 0..1."""
    import cv2

    if image.shape[:2] == (h, w):
        return image
    up = h * w > image.shape[0] * image.shape[1]
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC if up else cv2.INTER_AREA)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
