"""Feathered selection masks: how a restored selection blends into the layer below it.

The rule: alpha is zero everywhere the selection is zero, and rises smoothly (smoothstep of
the distance to the selection's edge) to full strength at `radius` pixels inside the edge.
So a restored region never spills outside the user's selection, its inside is fully opaque,
and its edge is a soft band of `radius` pixels. A soft selection (values between 0 and 255)
keeps its own softness: the ramp multiplies it. The default radius is
shared.geometry.default_feather: 8% of the selection's diagonal, at least 4 pixels, about
what Krita AI Diffusion uses for its inpainting masks.

A distance ramp rather than a Gaussian blur of the mask: a blur spreads outwards too, so
pixels just outside the selection would be changed.
"""

from __future__ import annotations

import numpy as np

from backend.errors import InvalidParameterError
from backend.imaging import max_value
from shared.geometry import Bounds, default_feather


def mask_plane(mask: np.ndarray) -> np.ndarray:
    """A (H, W) or (H, W, 1) uint8/uint16 mask as (H, W) float32 in [0, 1]."""
    plane = mask[:, :, 0] if mask.ndim == 3 else mask
    return plane.astype(np.float32) / max_value(mask.dtype)


def selection_bounds(mask: np.ndarray) -> Bounds | None:
    """The bounding box of the mask's non-zero pixels, or None when it selects nothing."""
    plane = mask[:, :, 0] if mask.ndim == 3 else mask
    rows = np.flatnonzero(plane.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(plane.any(axis=0))
    return Bounds(
        int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
    )


def resolve_feather(mask: np.ndarray, feather: float | None) -> float:
    """The feather radius in mask pixels: the given one, or the default for this selection."""
    if feather is not None:
        if not 0 <= feather <= 4096:
            raise InvalidParameterError(
                f"feather must be 0..4096 pixels, not {feather}.",
                "0 keeps the selection's own edge.",
            )
        return float(feather)
    box = selection_bounds(mask)
    if box is None:
        raise InvalidParameterError(
            "The mask selects nothing (every pixel is 0).",
            "Make a selection, or send no mask to process the whole image.",
        )
    return float(default_feather(box.extent))


def feather_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """(H, W) float32 alpha in [0, 1]: 0 outside the selection, 1 from `radius` inside it."""
    import cv2

    plane = mask_plane(mask)
    if radius <= 0:
        return plane
    inside = (plane > 0).astype(np.uint8)
    # distance from each selected pixel to the nearest unselected one (pixels beyond the
    # image border do not count as unselected: a selection reaching the canvas edge stays opaque)
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ramp = np.clip(distance / np.float32(radius), 0.0, 1.0)
    return plane * (ramp * ramp * (3.0 - 2.0 * ramp))


def apply_selection(pixels: np.ndarray, mask: np.ndarray, radius: float) -> np.ndarray:
    """`pixels` with the feathered mask as (or multiplied into) its alpha channel.

    `pixels` may be larger than `mask` (an upscaled result): the mask is enlarged to it first,
    and the radius with it, so the band has the same width on the canvas.
    """
    import cv2

    height, width, channels = pixels.shape
    mh, mw = mask.shape[:2]
    if (mw, mh) != (width, height):
        plane = mask[:, :, 0] if mask.ndim == 3 else mask
        mask = cv2.resize(plane, (width, height), interpolation=cv2.INTER_NEAREST)
        radius *= width / mw
    alpha = feather_mask(mask, radius)
    top = max_value(pixels.dtype)
    if channels in (2, 4):
        colour = pixels[:, :, : channels - 1]
        alpha = alpha * (pixels[:, :, channels - 1].astype(np.float32) / top)
    else:
        colour = pixels
    alpha_px = np.rint(alpha * top).astype(pixels.dtype)[:, :, None]
    return np.concatenate([colour, alpha_px], axis=2)
