"""Putting a restored face back: inverse warp, a soft mask, colour matching, blending.

All work happens inside the face's own rectangle of the output, never over the whole image,
and a pixel the mask does not reach keeps its exact original value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from backend.faces.align import FACE_SIZE, apply, compose, translated

#: the part of the aligned crop that is face (an ellipse around eyes, nose and mouth), where
#: the colour statistics are measured
_FACE_CENTRE = (256.0, 300.0)
_FACE_AXES = (150.0, 180.0)


@dataclass
class PastedFace:
    """A restored face warped onto its rectangle of the output image."""

    x0: int
    y0: int
    pixels: np.ndarray  # (h, w, 3) float32 in [0, 1]
    mask: np.ndarray  # (h, w) float32 in [0, 1]: 0 means "keep the original pixel"


def face_region(
    to_image: np.ndarray, width: int, height: int, size: int = FACE_SIZE
) -> tuple[int, int, int, int] | None:
    """The output rectangle (x0, y0, x1, y1) the crop lands on, clipped to the image."""
    corners = apply(
        to_image, [[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]]
    )
    x0 = max(0, math.floor(corners[:, 0].min()) - 1)
    y0 = max(0, math.floor(corners[:, 1].min()) - 1)
    x1 = min(width, math.ceil(corners[:, 0].max()) + 2)
    y1 = min(height, math.ceil(corners[:, 1].max()) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def soft_mask(to_region: np.ndarray, width: int, height: int, size: int = FACE_SIZE) -> np.ndarray:
    """Where the crop lands, eroded then blurred by about sqrt(face area) / 20 so no edge shows."""
    import cv2

    full = np.ones((size, size), np.float32)
    mask = cv2.warpAffine(
        full,
        to_region,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))  # the resampled rim is never a full pixel
    edge = max(1, int(math.sqrt(float(mask.sum())) / 20))
    mask = cv2.erode(mask, np.ones((2 * edge + 1, 2 * edge + 1), np.uint8))
    mask = cv2.GaussianBlur(mask, (2 * edge + 1, 2 * edge + 1), 0)
    mask[mask < 1e-3] = 0.0
    return mask


def match_colour(restored: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Restored face with the original face's colour: same mean lightness, same mean and
    spread of the colour channels (in Lab), measured over the face itself, not the hair or
    background of the crop. Lightness contrast is left alone: a blurry original has less."""
    import cv2

    size = restored.shape[0]
    weight = np.zeros(restored.shape[:2], np.uint8)
    scale = size / FACE_SIZE
    centre = (round(_FACE_CENTRE[0] * scale), round(_FACE_CENTRE[1] * scale))
    axes = (round(_FACE_AXES[0] * scale), round(_FACE_AXES[1] * scale))
    cv2.ellipse(weight, centre, axes, 0, 0, 360, 1, -1)
    inside = weight.astype(bool)
    lab_r = cv2.cvtColor(restored, cv2.COLOR_RGB2Lab)
    lab_o = cv2.cvtColor(original, cv2.COLOR_RGB2Lab)
    for c in range(3):
        r, o = lab_r[..., c], lab_o[..., c]
        mean_r, mean_o = float(r[inside].mean()), float(o[inside].mean())
        ratio = 1.0
        if c > 0:
            std_r, std_o = float(r[inside].std()), float(o[inside].std())
            ratio = float(np.clip(std_o / std_r, 0.5, 2.0)) if std_r > 1e-3 else 1.0
        lab_r[..., c] = (r - mean_r) * ratio + mean_o
    out = cv2.cvtColor(lab_r, cv2.COLOR_Lab2RGB)
    return np.clip(out, 0.0, 1.0)


def warp_back(face: np.ndarray, to_image: np.ndarray, width: int, height: int) -> PastedFace | None:
    """The restored crop (size x size float32 RGB) on its rectangle of a width x height image,
    with its soft mask; None when it falls outside the image."""
    import cv2

    size = face.shape[0]
    region = face_region(to_image, width, height, size)
    if region is None:
        return None
    x0, y0, x1, y1 = region
    to_region = compose(translated(-x0, -y0), to_image)
    w, h = x1 - x0, y1 - y0
    pixels = cv2.warpAffine(
        face, to_region, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )
    mask = soft_mask(to_region, w, h, size)
    if not mask.any():
        return None
    return PastedFace(x0, y0, np.clip(pixels, 0.0, 1.0), mask)


def composite(
    image: np.ndarray, faces: list[PastedFace], strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Blend the faces into `image` (H, W, 3) float32 in [0, 1], one after another.

    Returns the blended colour and the coverage (H, W) float32: how much of each pixel comes
    from a restored face (0 where none reaches).
    """
    out = image.copy()
    coverage = np.zeros(image.shape[:2], np.float32)
    for face in faces:
        h, w = face.mask.shape
        sl = (slice(face.y0, face.y0 + h), slice(face.x0, face.x0 + w))
        m = face.mask * strength
        out[sl] = out[sl] * (1 - m[..., None]) + face.pixels * m[..., None]
        coverage[sl] = 1 - (1 - coverage[sl]) * (1 - m)
    return out, coverage
