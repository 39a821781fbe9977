"""Which pixels a selection restore sends: the selection's box plus context, and its mask.

The box is padded so the model sees what surrounds the selection's edge (the server feathers
the result inside the selection only, so the padding never shows), and clipped to the canvas.
"""

from __future__ import annotations

from ..shared.geometry import Bounds, Extent, selection_crop
from .errors import NothingSelected
from .pixels import Bytes


def restore_region(selection: Bounds, canvas: Extent, padding: int | None = None,
                   feather: float | None = None) -> Bounds:
    """The rectangle to send for a selection: its bounds plus `padding` (None: the feather
    width, at least 16 pixels), clipped to the canvas."""
    inside = selection.clipped(canvas)
    if inside.is_empty:
        raise NothingSelected("The selection is outside the image.",
                              "Select a part of the image, then try again.")
    if padding is None:
        return selection_crop(inside, canvas, None if feather is None else round(feather))
    if padding < 0:
        raise ValueError(f"padding must not be negative, not {padding}")
    return inside.padded(padding, within=canvas)


def crop_plane(plane: Bytes, plane_bounds: Bounds, region: Bounds) -> bytearray:
    """One-byte-per-pixel `plane` (covering `plane_bounds`) cut to `region`; zero where the
    plane does not reach, as outside a selection."""
    out = bytearray(region.width * region.height)
    overlap = plane_bounds.intersection(region)
    if overlap is None:
        return out
    src = memoryview(plane)
    for y in range(overlap.y, overlap.bottom):
        s = (y - plane_bounds.y) * plane_bounds.width + overlap.x - plane_bounds.x
        d = (y - region.y) * region.width + overlap.x - region.x
        out[d:d + overlap.width] = src[s:s + overlap.width]
    return out


def plane_bounds(plane: Bytes, extent: Extent) -> Bounds | None:
    """The bounding box of the non-zero bytes of a one-byte-per-pixel plane, or None."""
    data = bytes(plane)
    rows = [y for y in range(extent.height)
            if data[y * extent.width:(y + 1) * extent.width].count(0) != extent.width]
    if not rows:
        return None
    left, right = extent.width, 0
    for y in rows:
        line = data[y * extent.width:(y + 1) * extent.width]
        stripped = line.lstrip(b"\0")
        left = min(left, extent.width - len(stripped))
        right = max(right, len(line.rstrip(b"\0")))
    return Bounds(left, rows[0], right - left, rows[-1] - rows[0] + 1)
