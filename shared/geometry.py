"""Rectangles on the editor's canvas: pure value types shared by the backend and the plug-ins.

Standard library only: this file is copied into the Krita and GIMP plug-ins.
Coordinates are integer pixels; x grows to the right and y downwards, as in both editors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: The default feather is this fraction of the selection's diagonal ...
FEATHER_FRACTION = 0.08
#: ... but never narrower than this many pixels, so a small selection still blends.
MIN_FEATHER = 4


@dataclass(frozen=True)
class Extent:
    """A size in pixels."""

    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def diagonal(self) -> float:
        return math.hypot(self.width, self.height)

    def scaled(self, sx: float, sy: float | None = None) -> Extent:
        return Extent(round(self.width * sx), round(self.height * (sx if sy is None else sy)))

    def to_json(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Extent:
        return cls(int(data["width"]), int(data["height"]))


@dataclass(frozen=True)
class Bounds:
    """A rectangle on the canvas: its top-left corner and its size."""

    x: int
    y: int
    width: int
    height: int

    @property
    def extent(self) -> Extent:
        return Extent(self.width, self.height)

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def is_empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    @staticmethod
    def of(extent: Extent) -> Bounds:
        return Bounds(0, 0, extent.width, extent.height)

    def scaled_to(self, width: int, height: int) -> Bounds:
        """These bounds on a canvas scaled so that this rectangle becomes width x height.

        The corner is scaled by the same factors, so a layer upscaled alone lands where it was
        on a canvas upscaled by the same amount.
        """
        sx, sy = width / self.width, height / self.height
        return Bounds(round(self.x * sx), round(self.y * sy), width, height)

    def padded(self, padding: int, within: Extent | None = None) -> Bounds:
        """Grown by `padding` on every side, clipped to the canvas when one is given."""
        grown = Bounds(
            self.x - padding, self.y - padding, self.width + 2 * padding, self.height + 2 * padding
        )
        return grown.clipped(within) if within is not None else grown

    def clipped(self, canvas: Extent) -> Bounds:
        return self.intersection(Bounds.of(canvas)) or Bounds(0, 0, 0, 0)

    def intersection(self, other: Bounds) -> Bounds | None:
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.right, other.right), min(self.bottom, other.bottom)
        if x1 <= x0 or y1 <= y0:
            return None
        return Bounds(x0, y0, x1 - x0, y1 - y0)

    def contains(self, other: Bounds) -> bool:
        return (
            self.x <= other.x
            and self.y <= other.y
            and other.right <= self.right
            and other.bottom <= self.bottom
        )

    def relative_to(self, origin: Bounds) -> Bounds:
        """The same rectangle in the coordinates of `origin`'s top-left corner."""
        return Bounds(self.x - origin.x, self.y - origin.y, self.width, self.height)

    def to_json(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Bounds:
        return cls(int(data["x"]), int(data["y"]), int(data["width"]), int(data["height"]))


def default_feather(selection: Extent) -> int:
    """The feather radius (pixels) used when a job does not give one: 8% of the diagonal, >= 4."""
    return max(MIN_FEATHER, round(FEATHER_FRACTION * selection.diagonal))


def selection_crop(selection: Bounds, canvas: Extent, feather: int | None = None) -> Bounds:
    """The region a plug-in sends for a selection restore: the selection plus context, clipped.

    The padding is the feather radius (at least 16 pixels), so the model sees the pixels around
    the selection's edge and tiles never start exactly at it.
    """
    radius = default_feather(selection.extent) if feather is None else feather
    return selection.padded(max(16, radius), within=canvas)
