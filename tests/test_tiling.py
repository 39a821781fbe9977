"""Tiles cover the image, blend to a partition of unity, and leave no seam on a real model."""

from __future__ import annotations

import numpy as np
import pytest

from backend.tiling import blend_weights, tile_spans, tiled_apply


@pytest.mark.parametrize("length", [1, 2, 63, 64, 65, 100, 127, 129, 300, 1000, 1037])
@pytest.mark.parametrize(("tile", "overlap"), [(64, 16), (64, 32), (128, 32), (96, 8)])
def test_spans_cover_axis_with_overlap(length: int, tile: int, overlap: int) -> None:
    spans = tile_spans(length, tile, overlap)
    assert spans[0].start == 0 and spans[-1].end == length
    assert all(s.size == min(tile, length) for s in spans)
    for a, b in zip(spans, spans[1:]):
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
    out = tiled_apply(img, _nearest_x2, 2, tile=64, overlap=16,
                      progress=lambda d, t: progress.append((d, t)))
    assert out.dtype == dtype and out.shape == (300, 422, channels)
    expected = img.repeat(2, axis=0).repeat(2, axis=1)
    assert np.abs(out.astype(np.int64) - expected.astype(np.int64)).max() <= 1
    assert [d for d, _ in progress] == list(range(1, len(progress) + 1))
    assert progress[-1][0] == progress[-1][1]


def test_tiled_matches_whole_image_on_real_model(real_models, face_crop) -> None:
    """realesrgan-x4plus (large receptive field): tiled vs one pass, no seam at tile borders."""
    from backend.models.registry import Registry
    from backend.models.runtime import load_model
    from backend.tasks import upscale

    entry = Registry([real_models]).find("realesrgan-x4plus")
    model = load_model(entry, precision="fp32")
    img = face_crop[:80, :80]
    whole = upscale.run(img, model, upscale.UpscaleParams(tile=0))
    tiled = upscale.run(img, model, upscale.UpscaleParams(tile=48, overlap=24))
    diff = np.abs(whole.astype(np.float64) - tiled.astype(np.float64))
    print(f"tiled vs whole: mean {diff.mean():.4f}/255, max {diff.max():.0f}")
    assert diff.mean() <= 1.0
    # a seam shows as a line of larger error along a tile border: compare the worst column
    # and row profile with the average error
    spans = tile_spans(80, 48, 24)
    borders = sorted({s.start * 4 for s in spans[1:]} | {s.end * 4 for s in spans[:-1]})
    col_err, row_err = diff.mean(axis=(0, 2)), diff.mean(axis=(1, 2))
    for b in borders:
        assert col_err[b - 2 : b + 2].max() <= 2.0, (b, col_err[b - 2 : b + 2])
        assert row_err[b - 2 : b + 2].max() <= 2.0, (b, row_err[b - 2 : b + 2])
