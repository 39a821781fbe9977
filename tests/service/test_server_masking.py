"""Feathered selection masks: nothing changes outside the selection, its inside is opaque."""

from __future__ import annotations

import numpy as np
import pytest

from backend.errors import InvalidParameterError
from backend.masking import apply_selection, feather_mask, resolve_feather, selection_bounds
from shared.geometry import Bounds


def rect_mask(
    h: int = 80, w: int = 100, box: tuple[int, int, int, int] = (20, 10, 60, 50), value: int = 255
) -> np.ndarray:
    mask = np.zeros((h, w, 1), np.uint8)
    x, y, bw, bh = box
    mask[y : y + bh, x : x + bw] = value
    return mask


def test_outside_is_transparent_and_deep_inside_opaque() -> None:
    mask = rect_mask()
    alpha = feather_mask(mask, radius=8)
    assert (alpha[mask[:, :, 0] == 0] == 0).all()
    assert (alpha[18:52, 28:72] == 1).all()  # 8 px or more inside the edge
    edge = alpha[35, 20:30]  # from the left edge inwards
    assert 0 < edge[0] < edge[3] < edge[6] < 1
    assert (np.diff(alpha[35, 20:40]) >= 0).all()


def test_soft_selection_keeps_its_softness() -> None:
    alpha = feather_mask(rect_mask(value=128), radius=4)
    assert alpha.max() == pytest.approx(128 / 255)
    assert (
        feather_mask(rect_mask(value=128), radius=0)
        == rect_mask(value=128)[:, :, 0] / np.float32(255)
    ).all()


def test_selection_at_the_image_edge_stays_opaque_there() -> None:
    mask = rect_mask(box=(0, 0, 50, 40))
    alpha = feather_mask(mask, radius=6)
    assert alpha[0, 0] == 1 and alpha[20, 0] == 1


def test_default_feather_follows_the_selection() -> None:
    mask = rect_mask(box=(20, 10, 60, 50))
    assert selection_bounds(mask) == Bounds(20, 10, 60, 50)
    assert resolve_feather(mask, None) == round(0.08 * (60**2 + 50**2) ** 0.5)
    assert resolve_feather(mask, 3) == 3
    with pytest.raises(InvalidParameterError, match="selects nothing"):
        resolve_feather(np.zeros((4, 4, 1), np.uint8), None)
    with pytest.raises(InvalidParameterError, match="feather"):
        resolve_feather(mask, -1)


@pytest.mark.parametrize(
    "channels, dtype", [(3, np.uint8), (4, np.uint8), (1, np.uint16), (2, np.uint16)]
)
def test_apply_selection_adds_or_multiplies_alpha(channels: int, dtype: type) -> None:
    top = np.iinfo(dtype).max
    pixels = np.full((80, 100, channels), top // 2, dtype)
    if channels in (2, 4):
        pixels[:, :, -1] = top
        pixels[:, 50:, -1] = top // 2  # the image's own alpha is kept, multiplied
    out = apply_selection(pixels, rect_mask(), 8)
    assert out.shape == (80, 100, channels + (channels in (1, 3))) and out.dtype == dtype
    np.testing.assert_array_equal(out[:, :, :-1], pixels[:, :, : out.shape[2] - 1])
    assert out[0, 0, -1] == 0 and out[35, 40, -1] == top
    if channels in (2, 4):
        assert abs(int(out[35, 60, -1]) - top // 2) <= 1


def test_apply_selection_on_an_upscaled_result() -> None:
    mask = rect_mask()
    out = apply_selection(np.zeros((160, 200, 3), np.uint8), mask, 8)
    big = np.repeat(np.repeat(mask[:, :, 0], 2, 0), 2, 1)
    assert (out[:, :, 3][big == 0] == 0).all()
    assert (out[36:104, 56:144, 3] == 255).all()  # 16 output px = 8 input px inside
