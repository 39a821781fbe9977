"""Scratches and dust drawn on a real photograph, and how well a mask finds them.

Drawn as a scanned print shows them: thin lines and curves 1-3 px wide, near white (the
emulsion scratched off) or near black (fibres, cracks), anti-aliased, plus small round specks.
The truth is the drawn pixels that differ from the photograph by at least TRUTH_CONTRAST levels
(a white scratch across a white area is no defect anyone sees or needs filled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRUTH_CONTRAST = 24
#: a found pixel this close to a drawn one counts as right, and the other way round
TOLERANCE = 2


def draw_defects(photo: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(damaged copy of an 8-bit RGB or gray photo, (H, W) bool truth)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = photo.shape[:2]
    gray = photo.ndim == 2 or photo.shape[2] == 1
    base = photo.reshape(h, w, -1).astype(np.float32)
    cover = np.zeros((h, w), np.float32)  # how much of each pixel the defects hide
    colour = np.zeros((h, w), np.float32)
    n_lines = max(4, round(10 * h * w / 512**2))
    for i in range(n_lines):
        layer = np.zeros((h, w), np.uint8)
        value = rng.uniform(225, 255) if i % 2 == 0 else rng.uniform(0, 35)
        width = int(rng.integers(1, 4))
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.25, 0.6) * max(h, w)
        bend = rng.uniform(-0.25, 0.25) * length if i % 3 else 0.0  # a curve, or a line
        t = np.linspace(0, 1, 64)
        xs = x0 + np.cos(angle) * length * t - np.sin(angle) * bend * 4 * t * (1 - t)
        ys = y0 + np.sin(angle) * length * t + np.cos(angle) * bend * 4 * t * (1 - t)
        points = np.stack([xs, ys], axis=1) * 16
        cv2.polylines(layer, [points.astype(np.int32)], False, 255, width, cv2.LINE_AA, 4)
        _add(cover, colour, layer, value)
    for i in range(max(10, round(30 * h * w / 512**2))):
        layer = np.zeros((h, w), np.uint8)
        value = rng.uniform(0, 35) if i % 3 else rng.uniform(225, 255)
        centre = (int(rng.uniform(4, w - 4) * 16), int(rng.uniform(4, h - 4) * 16))
        radius = int(rng.uniform(0.8, 2.5) * 16)
        cv2.circle(layer, centre, radius, 255, -1, cv2.LINE_AA, 4)
        _add(cover, colour, layer, value)
    damaged = base * (1 - cover[..., None]) + colour[..., None] * cover[..., None]
    damaged = np.clip(np.rint(damaged), 0, 255).astype(np.uint8)
    luma = base if gray else base @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
    after = (
        damaged.astype(np.float32)
        if gray
        else damaged @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
    )
    truth = (cover > 0.5) & (np.abs(after - luma)[..., 0] >= TRUTH_CONTRAST)
    return (damaged[..., 0] if photo.ndim == 2 else damaged), truth


def _add(cover: np.ndarray, colour: np.ndarray, layer: np.ndarray, value: float) -> None:
    a = layer.astype(np.float32) / 255.0
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


def score(found: np.ndarray, truth: np.ndarray, tolerance: int = TOLERANCE) -> Score:
    """Precision: found pixels within `tolerance` of a drawn one; recall: drawn pixels within
    `tolerance` of a found one."""
    import cv2

    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1,) * 2)
    near_truth = cv2.dilate(truth.astype(np.uint8), se).astype(bool)
    near_found = cv2.dilate(found.astype(np.uint8), se).astype(bool)
    precision = float((found & near_truth).sum() / max(found.sum(), 1))
    recall = float((truth & near_found).sum() / max(truth.sum(), 1))
    return Score(precision, recall, float(found.mean()))
