"""Tiled inference with overlapping tiles blended so that no seam shows.

Tiles overlap by `overlap` input pixels. Inside each overlap, a tile's weight is zero for the
`overlap // 4` pixels nearest its edge (where convolutions see padding instead of image) and
then rises linearly; weights are normalised, so any tile layout blends to a partition of unity.
The output is streamed into the uint8/uint16 result as tiles finish: the only float sums held
are those of the pixels a later tile still adds to (the band of output rows shared with the
next row of tiles, at full width, and the columns shared with the next tile in the row). A
4096x4096 x4 upscale therefore needs the result itself, one tile's float output and two thin
bands, never a float copy of a whole strip of tiles.

The passes over a tile's output (weighting, normalising, rounding into the result) run as
PyTorch's in-place operations on views of the same arrays: the same float32 arithmetic as
NumPy's, so the same bits, but vectorised over the strided views the models return and on
all of PyTorch's threads (in NumPy they were 8% of a fast model's 1024 px upscale).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def balanced_tile(length: int, tile: int, overlap: int, multiple: int = 1) -> int:
    """The smallest tile, at most `tile` and a multiple of `multiple`, that covers `length` in
    as many spans as `tile` does, overlapping as much.

    Without it an image a little larger than the tile is covered by full tiles that overlap
    almost entirely: 528 px in tiles of 512 runs the network over 1024 px, in tiles of 280
    over 560."""
    spans = tile_spans(length, tile, overlap)
    if len(spans) == 1:
        return min(tile, length)
    count, least = len(spans), min(overlap, tile // 2)
    # evenly spaced spans of t px overlap by t - (length - t) / (count - 1), rounded down;
    # +1 keeps the rounding of the span starts from eating into the overlap
    side = -(-(length + least * (count - 1)) // count) + 1
    side = -(-side // multiple) * multiple
    if side >= tile or len(tile_spans(length, side, overlap)) != count:
        return tile
    return side


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
    tile: int | tuple[int, int],
    overlap: int = 32,
    out: np.ndarray | None = None,
    progress: ProgressFn | None = None,
    trim: int = 0,
) -> np.ndarray:
    """Run `fn` over `colour` (H, W, C uint8/uint16, C = 1 or 3) in tiles of `tile` pixels
    (or (rows, columns) pixels).

    Gray input is given to the model as three equal channels and averaged back. Returns
    ((H - 2*trim)*scale, (W - 2*trim)*scale, C) of the input's dtype: `trim` input pixels are
    left off every side (a border mirrored around the image only for the network to see), so
    the result is never a view into a larger array. `out` may be passed to write into a view.
    """
    height, width, channels = colour.shape
    maxval = 65535.0 if colour.dtype == np.uint16 else 255.0
    if out is None:
        shape = ((height - 2 * trim) * scale, (width - 2 * trim) * scale, channels)
        out = np.empty(shape, dtype=colour.dtype)
    sink = _Sink(out, trim * scale, maxval)
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    rows, cols = tile_spans(height, tile_h, overlap), tile_spans(width, tile_w, overlap)
    col_weights = [blend_weights(cols, i, scale, width) for i in range(len(cols))]
    total, done = len(rows) * len(cols), 0
    if progress:
        progress(0, total)  # announces the tile count before the first (maybe long) tile
    band = _Band.empty(0, 0, width * scale, channels)  # sums later tile rows add to
    for r, row in enumerate(rows):
        row_weights = blend_weights(rows, r, scale, height)[:, None, None]
        top = row.start * scale
        # output rows above the next tile row's start are final once this row is done
        final_end = rows[r + 1].start * scale if r + 1 < len(rows) else height * scale
        next_band = band.continued(final_end, row.end * scale)
        pending: _Band | None = None  # columns the next tile in this row adds to
        for c, col in enumerate(cols):
            patch = colour[row.start : row.end, col.start : col.end].astype(np.float32) / maxval
            if channels == 1:
                patch = np.repeat(patch, 3, axis=2)
            result = np.require(fn(patch), np.float32, "W")
            del patch
            if channels == 1:
                result = result.mean(axis=2, keepdims=True)
            if total == 1:  # the whole image in one tile: weights of 1, nothing to blend
                sink.finish(result, None, 0, 0)
                del result
                done += 1
                if progress:
                    progress(done, total)
                continue
            weight = row_weights * col_weights[c][None, :, None]
            _t(result).mul_(_t(weight))
            left, right = col.start * scale, col.end * scale
            split = final_end - top
            next_band.add(result[split:], weight[split:], left)
            acc, wsum = result[:split], weight[:split]
            _add_earlier(acc, wsum, band, pending, left)
            # columns from the next tile's start stay open; those left of it are final
            keep = (cols[c + 1].start * scale if c + 1 < len(cols) else right) - left
            pending = _Band(left + keep, acc[:, keep:].copy(), wsum[:, keep:].copy())
            sink.finish(acc[:, :keep], wsum[:, :keep], top, left)
            del result, weight, acc, wsum
            done += 1
            if progress:
                progress(done, total)
        band = next_band
    return out


@dataclass
class _Band:
    """Float sums (weighted colour and weight) of pixels that later tiles still add to.

    `start` is the first output row of a full-width band of rows, or the first output column
    of the columns one tile leaves to the next in the same row."""

    start: int
    acc: np.ndarray  # (rows, columns, C)
    wsum: np.ndarray  # (rows, columns, 1)

    @classmethod
    def empty(cls, start: int, rows: int, width: int, channels: int) -> _Band:
        return cls(
            start,
            np.zeros((rows, width, channels), np.float32),
            np.zeros((rows, width, 1), np.float32),
        )

    @property
    def end(self) -> int:
        return self.start + self.acc.shape[0]

    def continued(self, start: int, end: int) -> _Band:
        """The band of rows [start, end) the next tile row shares, holding what this band
        already summed there (only where tile rows overlap by more than half)."""
        band = _Band.empty(start, end - start, self.acc.shape[1], self.acc.shape[2])
        if self.end > start:
            band.acc[: self.end - start] = self.acc[start - self.start :]
            band.wsum[: self.end - start] = self.wsum[start - self.start :]
        return band

    def add(self, acc: np.ndarray, wsum: np.ndarray, left: int) -> None:
        """Add a tile's weighted rows of this band, the tile starting at column `left`."""
        if len(acc):
            _t(self.acc[:, left : left + acc.shape[1]]).add_(_t(acc))
            _t(self.wsum[:, left : left + acc.shape[1]]).add_(_t(wsum))


def _add_earlier(
    acc: np.ndarray, wsum: np.ndarray, band: _Band, pending: _Band | None, left: int
) -> None:
    """Add to a tile's rows that finish in this tile row what earlier tiles summed there:
    the previous tile in the row where it overlaps (it already holds the earlier rows' sums),
    and the band left by earlier tile rows for the columns seen first now.

    The tile's own share is added last, as a whole strip did it: the same float sums, so the
    same result to the bit."""
    seen = 0
    if pending is not None and pending.acc.shape[1]:
        seen = pending.acc.shape[1]
        _t(acc[:, :seen]).add_(_t(pending.acc))
        _t(wsum[:, :seen]).add_(_t(pending.wsum))
    rows = min(band.end - band.start, acc.shape[0])  # the band starts at this tile row's top
    if rows > 0:
        cols = slice(left + seen, left + acc.shape[1])
        _t(acc[:rows, seen:]).add_(_t(band.acc[:rows, cols]))
        _t(wsum[:rows, seen:]).add_(_t(band.wsum[:rows, cols]))


class _Sink:
    """Writes finished float sums into the integer result, less the trimmed border."""

    def __init__(self, out: np.ndarray, trim: int, maxval: float) -> None:
        self.out, self.trim, self.maxval = out, trim, maxval

    def finish(self, acc: np.ndarray, wsum: np.ndarray | None, top: int, left: int) -> None:
        """Normalise (in place) the sums of output rows from `top`, columns from `left`;
        `wsum` None: they are final already (a lone tile's weights are all 1, and x * 1 / 1
        is x: the same bits without two passes over the tile)."""
        t, (h, w) = self.trim, self.out.shape[:2]
        y0, y1 = max(top, t), min(top + acc.shape[0], t + h)
        x0, x1 = max(left, t), min(left + acc.shape[1], t + w)
        if y0 >= y1 or x0 >= x1:
            return
        block = _t(acc[y0 - top : y1 - top, x0 - left : x1 - left])
        if wsum is not None:
            block.div_(_t(wsum[y0 - top : y1 - top, x0 - left : x1 - left]).clamp_(min=1e-8))
        block.clamp_(0.0, 1.0).mul_(self.maxval).add_(0.5)
        # the cast to the integer result truncates, as NumPy's astype does
        _t(self.out[y0 - t : y1 - t, x0 - t : x1 - t]).copy_(block)


def _t(a: np.ndarray) -> Any:
    """A torch.Tensor over the same memory (no copy). torch is imported here, not with the
    module: tasks import the tiler, and a task module's import stays light."""
    import torch

    return torch.from_numpy(a)
