"""Tiles cover the image, blend to a partition of unity, and leave no seam on a real model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from backend.tiling import balanced_tile, blend_weights, tile_spans, tiled_apply


@pytest.mark.parametrize("length", [1, 2, 63, 64, 65, 100, 127, 129, 300, 1000, 1037])
@pytest.mark.parametrize(("tile", "overlap"), [(64, 16), (64, 32), (128, 32), (96, 8)])
def test_spans_cover_axis_with_overlap(length: int, tile: int, overlap: int) -> None:
    spans = tile_spans(length, tile, overlap)
    assert spans[0].start == 0 and spans[-1].end == length
    assert all(s.size == min(tile, length) for s in spans)
    for a, b in itertools.pairwise(spans):
        assert a.end - b.start >= min(overlap, tile // 2)  # enough overlap to blend
        assert b.start > a.start


@pytest.mark.parametrize("length", [2, 63, 100, 300, 528, 1000, 1037, 2500, 4112])
@pytest.mark.parametrize(("tile", "overlap"), [(64, 16), (96, 48), (512, 32)])
@pytest.mark.parametrize("multiple", [1, 16])
def test_balanced_tile_covers_in_as_many_tiles_with_as_much_overlap(
    length: int, tile: int, overlap: int, multiple: int
) -> None:
    side = balanced_tile(length, tile, overlap, multiple)
    spans, full = tile_spans(length, side, overlap), tile_spans(length, tile, overlap)
    assert side <= tile and len(spans) == len(full)
    assert side == min(tile, length) or side % multiple == 0
    for a, b in itertools.pairwise(spans):
        assert a.end - b.start >= min(overlap, tile // 2)


def test_balanced_tile_does_not_run_an_image_twice() -> None:
    assert balanced_tile(528, 512, 32) < 300  # not two 512 px tiles overlapping by 496
    assert balanced_tile(144, 512, 32) == 144


@pytest.mark.parametrize("length", [65, 100, 200, 333])
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_weights_cover_every_pixel(length: int, scale: int) -> None:
    spans = tile_spans(length, 64, 32)
    total = np.zeros(length * scale, np.float32)
    for i, s in enumerate(spans):
        total[s.start * scale : s.end * scale] += blend_weights(spans, i, scale, length)
    assert total.min() > 0.4  # every output pixel has weight, so normalising never divides by 0


def _nearest_x2(tile: np.ndarray) -> np.ndarray:
    return tile.repeat(2, axis=0).repeat(2, axis=1)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3])
def test_pointwise_model_tiles_exactly(dtype: type, channels: int) -> None:
    rng = np.random.default_rng(1)
    maxval = np.iinfo(dtype).max
    img = rng.integers(0, maxval, size=(150, 211, channels), dtype=dtype)
    progress: list[tuple[int, int]] = []
    out = tiled_apply(
        img, _nearest_x2, 2, tile=64, overlap=16, progress=lambda d, t: progress.append((d, t))
    )
    assert out.dtype == dtype and out.shape == (300, 422, channels)
    expected = img.repeat(2, axis=0).repeat(2, axis=1)
    assert np.abs(out.astype(np.int64) - expected.astype(np.int64)).max() <= 1
    assert [d for d, _ in progress] == list(range(len(progress)))
    assert progress[-1][0] == progress[-1][1]


def _tiled_vs_whole(real_models, name: str, img: np.ndarray, tile: int, overlap: int):
    from backend.models.registry import Registry
    from backend.models.runtime import load_model
    from backend.tasks import upscale

    model = load_model(Registry([real_models]).find(name), "cpu", "fp32")
    whole = upscale.run(img, model, upscale.UpscaleParams(tile=0))
    tiled = upscale.run(img, model, upscale.UpscaleParams(tile=tile, overlap=overlap))
    diff = np.abs(whole.astype(np.float64) - tiled.astype(np.float64))
    print(f"{name} tile {tile}/{overlap}: mean {diff.mean():.3f}/255, max {diff.max():.0f}")
    return diff


def _assert_no_seam(diff: np.ndarray, size: int, tile: int, overlap: int) -> None:
    """A seam is a line of larger error along a tile border: compare border columns and rows
    with the typical error of the image."""
    from backend.tasks.upscale import BORDER  # mirrored around the image before tiling

    border = BORDER
    spans = tile_spans(size + 2 * border, tile, overlap)
    cuts = {(s.start - border) * 4 for s in spans[1:]} | {(s.end - border) * 4 for s in spans[:-1]}
    for axis in (0, 1):
        profile = diff.mean(axis=(axis, 2))
        typical = np.median(profile)
        for c in sorted(cuts):
            if 2 <= c < len(profile) - 2:
                assert profile[c - 2 : c + 2].max() <= max(3 * typical, 1.0), (axis, c)


def test_compact_model_tiled_equals_whole(real_models, astronaut) -> None:
    img = np.ascontiguousarray(astronaut[40:200, 140:300])
    diff = _tiled_vs_whole(real_models, "realesr-animevideov3-x4", img, 64, 32)
    assert diff.mean() <= 1.0
    _assert_no_seam(diff, 160, 64, 32)


def test_rrdb_model_tiles_without_seams(real_models, astronaut) -> None:
    """realesrgan-x4plus sees far: tiles of 96 px differ slightly everywhere, never at seams."""
    img = np.ascontiguousarray(astronaut[60:188, 170:298])
    diff = _tiled_vs_whole(real_models, "realesrgan-x4plus", img, 96, 32)
    assert diff.mean() <= 1.0
    _assert_no_seam(diff, 128, 96, 32)


def _strip_assembly(colour: np.ndarray, fn, scale: int, tile: int, overlap: int) -> np.ndarray:
    """The assembly tiled_apply replaced, kept as the reference: a float32 strip of a whole row
    of tiles and its weights at full width, normalised once the next tile row starts, all in
    NumPy."""
    height, width, channels = colour.shape
    maxval = 65535.0 if colour.dtype == np.uint16 else 255.0
    out = np.empty((height * scale, width * scale, channels), dtype=colour.dtype)
    rows, cols = tile_spans(height, tile, overlap), tile_spans(width, tile, overlap)
    col_weights = [blend_weights(cols, i, scale, width) for i in range(len(cols))]
    out_w, strip_top = width * scale, 0
    strip = np.zeros((0, out_w, channels), dtype=np.float32)
    strip_w = np.zeros((0, out_w, 1), dtype=np.float32)
    for r, row in enumerate(rows):
        row_weights = blend_weights(rows, r, scale, height)[:, None, None]
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
            xs, ys = slice(col.start * scale, col.end * scale), slice(y0, y0 + row.size * scale)
            strip[ys, xs] += result * weight
            strip_w[ys, xs] += weight
        final_end = rows[r + 1].start * scale if r + 1 < len(rows) else height * scale
        n_final = final_end - strip_top
        if n_final > 0:
            block = strip[:n_final] / np.maximum(strip_w[:n_final], 1e-8)
            out[strip_top:final_end] = _quantize(block, maxval, out.dtype)
            strip, strip_w = strip[n_final:], strip_w[n_final:]
            strip_top = final_end
    return out


def _quantize(block: np.ndarray, maxval: float, dtype: type) -> np.ndarray:
    np.clip(block, 0.0, 1.0, out=block)
    block *= maxval
    block += 0.5
    return block.astype(dtype)


def _textured_x2(tile: np.ndarray) -> np.ndarray:
    """Not pointwise: each tile's output depends on where it sits, so overlaps disagree and
    the blend has something to do."""
    up = tile.repeat(2, axis=0).repeat(2, axis=1)
    ripple = np.sin(np.arange(up.shape[0])[:, None, None] * 0.37 + up.shape[1]) * 0.05
    return np.clip(up + ripple, 0, 1).astype(np.float32)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3])
# 1000 px in tiles of 96 overlapping by 48: three tiles cover some pixels along each axis;
# 150x211 in one tile of 256 takes the lone tile's path (no weights, no division)
@pytest.mark.parametrize(
    ("shape", "tile", "overlap"),
    [((150, 211), 64, 16), ((300, 1000), 96, 48), ((150, 211), 256, 16)],
)
def test_streamed_assembly_is_bit_identical_to_strips(
    dtype: type, channels: int, shape: tuple[int, int], tile: int, overlap: int
) -> None:
    rng = np.random.default_rng(7)
    img = rng.integers(0, np.iinfo(dtype).max, size=(*shape, channels), dtype=dtype)
    expected = _strip_assembly(img, _textured_x2, 2, tile, overlap)
    assert np.array_equal(tiled_apply(img, _textured_x2, 2, tile, overlap), expected)
    trimmed = tiled_apply(img, _textured_x2, 2, tile, overlap, trim=5)
    assert trimmed.flags.c_contiguous  # the result itself, not a view of a larger one
    assert np.array_equal(trimmed, expected[10:-10, 10:-10])


def _nearest_x4(tile: np.ndarray) -> np.ndarray:
    return tile.repeat(4, axis=0).repeat(4, axis=1)


def _peak_bytes(run) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_tiled_peak_memory_is_thin_bands_not_strips() -> None:
    """Besides the result, tiling holds one tile's float output and the bands of rows that two
    tile rows share: a wide image in short tiles shows the difference from whole strips.
    Counted in bytes allocated (numpy reports its buffers to tracemalloc), not timed."""
    tile, overlap, scale = 64, 16, 4
    img = np.random.default_rng(0).integers(0, 255, size=(160, 1200, 3), dtype=np.uint8)
    out = np.empty((160 * scale, 1200 * scale, 3), np.uint8)  # allocated before counting
    out_w = out.shape[1]
    floats = 4 * (3 + 1)  # weighted colour and weight, float32
    band = overlap * scale * out_w * floats
    tile_out = (tile * scale) ** 2 * floats
    peak = _peak_bytes(lambda: tiled_apply(img, _nearest_x4, scale, tile, overlap, out=out))
    strips = _peak_bytes(lambda: _strip_assembly(img, _nearest_x4, scale, tile, overlap))
    mb = [round(n / 1e6, 1) for n in (peak, strips, out.nbytes)]
    print("peak {} MB, whole strips {} MB, the output {} MB".format(*mb))
    assert peak <= 2 * band + 4 * tile_out  # the band in use, the next one and the tile
    assert peak < 0.5 * (strips - out.nbytes)  # the strips held several times more
