"""Tiles cover the image, blend to a partition of unity, and leave no seam on a real model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from backend.tiling import blend_weights, tile_spans, tiled_apply


@pytest.mark.parametrize("length", [1, 2, 63, 64, 65, 100, 127, 129, 300, 1000, 1037])
@pytest.mark.parametrize(("tile", "overlap"), [(64, 16), (64, 32), (128, 32), (96, 8)])
def test_spans_cover_axis_with_overlap(length: int, tile: int, overlap: int) -> None:
    spans = tile_spans(length, tile, overlap)
    assert spans[0].start == 0 and spans[-1].end == length
    assert all(s.size == min(tile, length) for s in spans)
    for a, b in itertools.pairwise(spans):
        assert a.end - b.start >= min(overlap, tile // 2)  # enough overlap to blend
        assert b.start > a.start


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
