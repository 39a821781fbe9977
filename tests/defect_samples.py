"""Scratches and dust drawn on a real photograph, and how well a mask finds them.

Drawn as a scanned print shows them, anti-aliased: long scratches 1-4 px wide, straight or gently
curved, near white (the emulsion scratched off) or near black (a crack, a scratch on the
negative), some worn so they hide only part of what is under them; hairs, 1 px dark curves that
wander; and dust specks 1-6 px across, round or a little oblong, mostly dark.
The truth is the drawn pixels that differ from the photograph by at least TRUTH_CONTRAST levels
(a white scratch across a white area is no defect anyone sees or needs filled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

TRUTH_CONTRAST = 24
#: a found pixel this close to a drawn one counts as right, and the other way round
TOLERANCE = 2
#: defects are drawn this many times finer, then averaged down: anti-aliased, and as wide as said
SUPER = 4


def draw_defects(photo: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(damaged copy of an 8-bit RGB or gray photo, (H, W) bool truth)."""
    damaged, truth, _ = draw_defects_with_cover(photo, seed)
    return damaged, truth


def draw_defects_with_cover(
    photo: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(damaged copy, (H, W) bool truth, (H, W) bool drawn): `drawn` is every pixel a defect
    covers by half or more, seen or not, which score() does not count against a mask."""

    rng = np.random.default_rng(seed)
    h, w = photo.shape[:2]
    gray = photo.ndim == 2 or photo.shape[2] == 1
    base = photo.reshape(h, w, -1).astype(np.float32)
    cover = np.zeros((h, w), np.float32)  # how much of each pixel the defects hide
    colour = np.zeros((h, w), np.float32)
    per_512 = h * w / 512**2
    for i in range(max(4, round(10 * per_512))):
        # scratches: emulsion scraped off (near white) or a crack, a scratch on the negative
        # (near black); worn ones only partly cover what is under them
        value = rng.uniform(215, 255) if i % 2 == 0 else rng.uniform(0, 45)
        width = rng.uniform(1.0, 4.0)
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.25, 0.6) * max(h, w)
        bend = rng.uniform(-0.25, 0.25) * length if i % 3 else 0.0  # a curve, or a line
        t = np.linspace(0, 1, 64)
        xs = x0 + np.cos(angle) * length * t - np.sin(angle) * bend * 4 * t * (1 - t)
        ys = y0 + np.sin(angle) * length * t + np.cos(angle) * bend * 4 * t * (1 - t)
        layer = _polyline((h, w), xs, ys, width)
        _add(cover, colour, layer, value, rng.uniform(0.75, 1.0))
    for _ in range(max(1, round(3 * per_512))):
        # hairs and fibres on the print or the scanner's glass: dark, 1 px, shorter and more
        # curved than a scratch, their heading wandering along them
        length = rng.uniform(0.1, 0.3) * max(h, w)
        t = np.linspace(0, 1, 128)
        turn, wave = rng.uniform(-1.5, 1.5), rng.uniform(0.2, 0.8)
        cycles, phase = rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
        heading = (
            rng.uniform(0, 2 * np.pi) + turn * t + wave * np.sin(2 * np.pi * cycles * t + phase)
        )
        step = length / (len(t) - 1)
        xs = rng.uniform(0, w) + np.concatenate([[0], np.cumsum(np.cos(heading[1:]) * step)])
        ys = rng.uniform(0, h) + np.concatenate([[0], np.cumsum(np.sin(heading[1:]) * step)])
        _add(cover, colour, _polyline((h, w), xs, ys, 1.0), rng.uniform(0, 50), 1.0)
    for i in range(max(10, round(30 * per_512))):
        # dust: dark on a print (it shades the paper), some bright (a hole in the emulsion);
        # round or a little oblong, 1 to 6 px across
        value = rng.uniform(0, 35) if i % 3 else rng.uniform(225, 255)
        centre = rng.uniform(4, w - 4), rng.uniform(4, h - 4)
        radius = rng.uniform(0.6, 3.0)
        axes = radius, radius * rng.uniform(0.6, 1.0)
        layer = _ellipse((h, w), centre, axes, rng.uniform(0, 180))
        _add(cover, colour, layer, value, 1.0)
    damaged = base * (1 - cover[..., None]) + colour[..., None] * cover[..., None]
    damaged = np.clip(np.rint(damaged), 0, 255).astype(np.uint8)
    luma = base if gray else base @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
    after = (
        damaged.astype(np.float32)
        if gray
        else damaged @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
    )
    drawn = cover > 0.5
    truth = drawn & (np.abs(after - luma)[..., 0] >= TRUTH_CONTRAST)
    return (damaged[..., 0] if photo.ndim == 2 else damaged), truth, drawn


def _polyline(shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray, width: float) -> np.ndarray:
    """An open curve through the points, `width` px wide, as an 8-bit coverage layer."""
    import cv2

    def draw(canvas: np.ndarray, x0: int, y0: int) -> None:
        points = np.stack([xs - x0 + 0.5, ys - y0 + 0.5], axis=1) * (SUPER * 16)
        thickness = max(1, round(width * SUPER))
        cv2.polylines(canvas, [points.astype(np.int32)], False, 255, thickness, cv2.LINE_8, 4)

    reach = width / 2 + 2
    box = (xs.min() - reach, ys.min() - reach, xs.max() + reach, ys.max() + reach)
    return _supersampled(shape, box, draw)


def _ellipse(
    shape: tuple[int, int], centre: tuple[float, float], axes: tuple[float, float], angle: float
) -> np.ndarray:
    """A filled ellipse (semi-axes in px, turned by `angle` degrees) as an 8-bit coverage layer."""
    import cv2

    def draw(canvas: np.ndarray, x0: int, y0: int) -> None:
        c = (round((centre[0] - x0 + 0.5) * SUPER * 16), round((centre[1] - y0 + 0.5) * SUPER * 16))
        a = (round(axes[0] * SUPER * 16), round(axes[1] * SUPER * 16))
        cv2.ellipse(canvas, c, a, angle, 0, 360, 255, -1, cv2.LINE_8, 4)

    reach = max(axes) + 2
    box = (centre[0] - reach, centre[1] - reach, centre[0] + reach, centre[1] + reach)
    return _supersampled(shape, box, draw)


def _supersampled(
    shape: tuple[int, int], box: tuple[float, float, float, float], draw: Any
) -> np.ndarray:
    """Coverage drawn SUPER times finer and averaged down: OpenCV's own anti-aliasing makes
    thick lines about twice as wide as asked, so widths would not be what the docstring says.
    Pixel centres are at whole coordinates. Only the defect's box is drawn, so a long scratch
    on a large scan costs little."""
    import cv2

    h, w = shape
    layer = np.zeros(shape, np.uint8)
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    if x1 <= x0 or y1 <= y0:
        return layer
    canvas = np.zeros(((y1 - y0) * SUPER, (x1 - x0) * SUPER), np.uint8)
    draw(canvas, x0, y0)
    layer[y0:y1, x0:x1] = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return layer


def _add(
    cover: np.ndarray, colour: np.ndarray, layer: np.ndarray, value: float, opacity: float
) -> None:
    """Lays one defect over the ones before it: `opacity` of what is under it hidden at most."""
    a = layer.astype(np.float32) * np.float32(opacity / 255.0)
    colour[:] = np.where(
        a > 0,
        (colour * cover * (1 - a) + value * a) / np.maximum(cover * (1 - a) + a, 1e-6),
        colour,
    )
    cover[:] = cover + a * (1 - cover)


@dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    flagged: float  # fraction of all pixels flagged


def score(
    found: np.ndarray,
    truth: np.ndarray,
    drawn: np.ndarray | None = None,
    tolerance: int = TOLERANCE,
) -> Score:
    """Precision: found pixels within `tolerance` of a drawn one; recall: pixels of the truth
    within `tolerance` of a found one.

    With `drawn` (every pixel a defect covers, seen or not), a found pixel near a drawn one that
    is too faint for the truth is not counted wrong: it is damage, only damage nobody needs
    filled, so it neither helps recall nor hurts precision."""
    import cv2

    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1,) * 2)
    damage = truth if drawn is None else truth | drawn
    near_damage = cv2.dilate(damage.astype(np.uint8), se).astype(bool)
    near_found = cv2.dilate(found.astype(np.uint8), se).astype(bool)
    precision = float((found & near_damage).sum() / max(found.sum(), 1))
    recall = float((truth & near_found).sum() / max(truth.sum(), 1))
    return Score(precision, recall, float(found.mean()))
