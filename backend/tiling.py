"""Tiled inference with overlapping tiles blended so that no seam shows.

Tiles overlap by `overlap` input pixels. Inside each overlap, a tile's weight is zero for the
`overlap // 4` pixels nearest its edge (where convolutions see padding instead of image) and
then rises linearly; weights are normalised, so any tile layout blends to a partition of unity.
The output is assembled one row of tiles at a time: only the rows still open to later tiles
are held in float32, the finished rows go straight into the uint8/uint16 result. A 4096x4096
x4 upscale therefore needs the result itself plus one strip, not a float copy of the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: A function from a float32 (h, w, 3) tile in [0, 1] to its upscaled float32 (h*s, w*s, 3).
TileFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Span:
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def tile_spans(length: int, tile: int, overlap: int) -> list[Span]:
    """Evenly spaced spans of `tile` pixels covering [0, length), overlapping by >= overlap."""
    if length <= tile:
        return [Span(0, length)]
    overlap = min(overlap, tile // 2)
    count = math.ceil((length - overlap) / (tile - overlap))
    last = length - tile
    return [
        Span(round(i * last / (count - 1)), round(i * last / (count - 1)) + tile)
        for i in range(count)
    ]


def blend_weights(spans: list[Span], index: int, scale: int, length: int) -> np.ndarray:
    """1-D weights, in output pixels, for span `index` of `spans` over an axis of `length`."""
    span = spans[index]
    n = span.size * scale
    pos = np.arange(n, dtype=np.float32) + 0.5
    weights = np.ones(n, dtype=np.float32)
    if index > 0:  # rising edge where the previous tile still covers
        overlap = (spans[index - 1].end - span.start) * scale
        weights = np.minimum(weights, _ramp(pos, overlap))
    if index < len(spans) - 1:
        overlap = (span.end - spans[index + 1].start) * scale
        weights = np.minimum(weights, _ramp(n - pos, overlap))
    return weights


def _ramp(distance: np.ndarray, overlap: int) -> np.ndarray:
    dead = overlap // 4
    width = max(overlap - 2 * dead, 1)
    return np.clip((distance - dead) / width, 0.0, 1.0)


def tiled_apply(
    colour: np.ndarray,
    fn: TileFn,
    scale: int,
    tile: int,
    overlap: int = 32,
    out: np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Run `fn` over `colour` (H, W, C uint8/uint16, C = 1 or 3) tile by tile.

    Gray input is given to the model as three equal channels and averaged back. Returns
    (H*scale, W*scale, C) of the input's dtype; `out` may be passed to write into a view.
    """
    height, width, channels = colour.shape
    maxval = 65535.0 if colour.dtype == np.uint16 else 255.0
    if out is None:
        out = np.empty((height * scale, width * scale, channels), dtype=colour.dtype)
    rows, cols = tile_spans(height, tile, overlap), tile_spans(width, tile, overlap)
    col_weights = [blend_weights(cols, i, scale, width) for i in range(len(cols))]
    total, done = len(rows) * len(cols), 0
    if progress:
        progress(0, total)  # announces the tile count before the first (maybe long) tile
    out_w = width * scale

    strip_top = 0  # output row where the open strip begins
    strip = np.zeros((0, out_w, channels), dtype=np.float32)
    strip_w = np.zeros((0, out_w, 1), dtype=np.float32)
    for r, row in enumerate(rows):
        row_weights = blend_weights(rows, r, scale, height)[:, None, None]
        # grow the strip down to this row's bottom
        grow = row.end * scale - (strip_top + strip.shape[0])
        if grow > 0:
            strip = np.concatenate([strip, np.zeros((grow, out_w, channels), np.float32)])
            strip_w = np.concatenate([strip_w, np.zeros((grow, out_w, 1), np.float32)])
        y0 = row.start * scale - strip_top
        for c, col in enumerate(cols):
            patch = colour[row.start : row.end, col.start : col.end].astype(np.float32) / maxval
            if channels == 1:
                patch = np.repeat(patch, 3, axis=2)
            result = fn(patch)
            if channels == 1:
                result = result.mean(axis=2, keepdims=True)
            weight = row_weights * col_weights[c][None, :, None]
            xs = slice(col.start * scale, col.end * scale)
            ys = slice(y0, y0 + row.size * scale)
            strip[ys, xs] += result * weight
            strip_w[ys, xs] += weight
            done += 1
            if progress:
                progress(done, total)
        # rows above the next tile row's start are final
        final_end = rows[r + 1].start * scale if r + 1 < len(rows) else height * scale
        n_final = final_end - strip_top
        if n_final > 0:
            block = strip[:n_final] / np.maximum(strip_w[:n_final], 1e-8)
            out[strip_top:final_end] = _quantize(block, maxval, out.dtype)
            strip, strip_w = strip[n_final:], strip_w[n_final:]
            strip_top = final_end
    return out


def _quantize(block: np.ndarray, maxval: float, dtype: np.dtype) -> np.ndarray:
    np.clip(block, 0.0, 1.0, out=block)
    block *= maxval
    block += 0.5
    return block.astype(dtype)
