"""Alignment to the FFHQ template, the inverse warp, the soft mask and the paste-back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backend.faces import align, paste
from tests.conftest import psnr


def _rotation(angle_deg: float, scale: float, dx: float, dy: float) -> np.ndarray:
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    return np.array([[c, -s, dx], [s, c, dy]])


def test_similarity_recovers_a_known_transform_exactly() -> None:
    known = _rotation(17.0, 0.37, 120.5, -40.25)
    src = np.array([[10.0, 20.0], [300.0, 45.0], [150.0, 400.0], [77.0, 77.0], [5.0, 250.0]])
    found = align.similarity(src, align.apply(known, src))
    np.testing.assert_allclose(found, known, atol=1e-9)


def test_similarity_never_reflects() -> None:
    src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mirrored = src * [-1.0, 1.0]
    found = align.similarity(src, mirrored)
    assert np.linalg.det(found[:, :2]) > 0


def test_similarity_refuses_degenerate_points() -> None:
    with pytest.raises(ValueError, match="coincide"):
        align.similarity(np.zeros((5, 2)), align.template())


def test_landmarks_land_on_the_template() -> None:
    # five landmarks of a tilted face: the template moved into an image, then aligned back
    to_image = _rotation(-12.0, 0.25, 180.0, 70.0)
    landmarks = align.apply(to_image, align.template())
    to_face = align.align_affine(landmarks)
    np.testing.assert_allclose(align.apply(to_face, landmarks), align.template(), atol=1e-6)
    np.testing.assert_allclose(align.compose(to_face, to_image)[:, :2], np.eye(2), atol=1e-9)


def test_alignment_then_inverse_round_trips_a_real_face(astronaut: np.ndarray) -> None:
    image = astronaut.astype(np.float32) / 255
    # the astronaut's face put into the template at a slight tilt, as a detector would give it
    to_image = _rotation(8.0, 0.22, 160.0, 45.0)
    to_face = align.align_affine(align.apply(to_image, align.template()))
    crop = align.warp(image, to_face, 512, 512)
    back = paste.warp_back(crop, align.invert(to_face), 512, 512)
    assert back is not None
    inside = back.mask >= 0.999
    h, w = back.mask.shape
    original = image[back.y0 : back.y0 + h, back.x0 : back.x0 + w]
    assert inside.sum() > 5000
    # the crop is 4.5x larger than the face in the photo, so the round trip loses very little
    assert psnr(back.pixels[inside] * 255, original[inside] * 255) > 38


def test_upscaled_paste_matches_a_resized_original(astronaut: np.ndarray) -> None:
    image = astronaut.astype(np.float32) / 255
    to_face = align.box_affine(170, 60, 250, 156)
    crop = align.warp(image, to_face, 512, 512)
    to_big = align.compose(align.scaled(2.0), align.invert(to_face))
    back = paste.warp_back(crop, to_big, 1024, 1024)
    assert back is not None
    import cv2

    big = cv2.resize(image, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    h, w = back.mask.shape
    inside = back.mask >= 0.999
    region = big[back.y0 : back.y0 + h, back.x0 : back.x0 + w]
    # the face lands where the resized photo has it (a shifted paste would score far lower)
    assert psnr(back.pixels[inside] * 255, region[inside] * 255) > 30
    assert 2 * 170 - 10 < back.x0 + w / 2 - (250 - 170) < 2 * 250


def test_box_affine_centres_the_region() -> None:
    to_face = align.box_affine(100, 50, 180, 170)  # 80x120: the square is 120 wide
    corners = align.apply(to_face, [[80 - 0.5, 50 - 0.5], [200 - 0.5, 170 - 0.5]])
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [511.5, 511.5]], atol=1e-9)


def test_soft_mask_fades_in_proportion_to_the_face_size() -> None:
    def fade_width(side: int) -> int:
        to_region = align.compose(align.translated(20, 20), align.scaled(side / 512))
        mask = paste.soft_mask(to_region, side + 40, side + 40)
        row = mask[side // 2 + 20]
        assert row[20] == 0.0 and row[side // 2 + 20] == pytest.approx(1.0)
        return int(np.argmax(row >= 0.999) - np.argmax(row > 0))

    small, large = fade_width(128), fade_width(512)
    assert small >= 2
    assert 3 <= large / small <= 5  # sqrt(area) grows 4x


def test_paste_leaves_every_pixel_outside_the_mask_bit_identical(astronaut: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    image = astronaut.astype(np.float32) / 255
    restored = rng.random((512, 512, 3), dtype=np.float32)
    to_face = align.box_affine(170, 60, 250, 156)
    face = paste.warp_back(restored, align.invert(to_face), 512, 512)
    assert face is not None
    blended, coverage = paste.composite(image, [face], strength=1.0)
    outside = coverage == 0
    assert outside.sum() > 0.9 * outside.size
    assert np.array_equal(blended[outside], image[outside])
    assert (coverage > 0).sum() > 3000
    ys, xs = np.nonzero(coverage)
    # nothing spills beyond the face's square (170..250 wide, centred vertically on 60..156)
    assert xs.min() >= 160 and xs.max() <= 262 and ys.min() >= 50 and ys.max() <= 166


def test_strength_blends_linearly(astronaut: np.ndarray) -> None:
    image = astronaut.astype(np.float32) / 255
    restored = np.zeros((512, 512, 3), np.float32)
    face = paste.warp_back(restored, align.invert(align.box_affine(170, 60, 250, 156)), 512, 512)
    assert face is not None
    full, _ = paste.composite(image, [face], strength=1.0)
    half, cover = paste.composite(image, [face], strength=0.5)
    centre = cover >= 0.499
    np.testing.assert_allclose(half[centre], (image[centre] + full[centre]) / 2, atol=1e-5)


def test_colour_match_removes_a_cast_but_keeps_detail(astronaut: np.ndarray) -> None:
    import cv2

    image = astronaut.astype(np.float32) / 255
    crop = align.warp(image, align.box_affine(170, 60, 250, 156), 512, 512)
    cast = np.clip(crop * [1.0, 0.8, 0.6] + [0.1, 0.0, 0.0], 0, 1).astype(np.float32)
    sharp = cast + 0.2 * (cast - cv2.GaussianBlur(cast, (0, 0), 3))  # "restored": more detail
    fixed = paste.match_colour(np.clip(sharp, 0, 1).astype(np.float32), crop)
    lab = [
        cv2.cvtColor(x, cv2.COLOR_RGB2Lab)[156:356, 156:356].reshape(-1, 3).mean(0)
        for x in (crop, sharp.astype(np.float32), fixed)
    ]
    cast_error = np.abs(lab[1] - lab[0])[1:].max()
    fixed_error = np.abs(lab[2] - lab[0])[1:].max()
    assert cast_error > 5 and fixed_error < 1.0

    def lightness_detail(x: np.ndarray) -> float:
        light = cv2.cvtColor(np.clip(x, 0, 1).astype(np.float32), cv2.COLOR_RGB2Lab)[..., 0]
        return float(np.abs(light - cv2.GaussianBlur(light, (0, 0), 3)).mean())

    # the restored detail (lightness contrast) is kept: only the colour moves
    assert lightness_detail(fixed) == pytest.approx(lightness_detail(sharp), rel=0.05)
