"""Scratches and dust on scanned prints, found without a model: a mask proposal to review.

Steps: 1. the luminance in 8-bit levels, 2. white and black top-hats at several scales (what a
morphological opening or closing removes: structures thinner than the element, brighter or
darker than their surroundings), 3. each response measured against the local texture level,
so a scratch across a smooth sky and one across grass are judged alike, 4. thin lines kept by
oriented line openings (a response that persists along a straight segment at one of several
angles) and by the shape of their connected parts (long and thin), small isolated specks kept
when they stand out strongly, 5. hysteresis: weak pixels join a defect only when connected to a
strong one, 6. the proposal grown by a pixel or two so an inpaint covers the defects' fringes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: top-hat element diameters (px): scratches and specks up to about 3 px, and their halos
SCALES = (5, 7)
#: angles of the line openings (degrees); 12 steps of 15 degrees cover every direction
ANGLES = tuple(range(0, 180, 15))
#: the window (px) over which the texture level is measured
LEVEL_WINDOW = 31
#: contrast in levels below which nothing counts, however smooth the surroundings
MIN_CONTRAST = 20.0


@dataclass(frozen=True)
class DefectSettings:
    sensitivity: float = 0.5  # 0: only the most obvious defects, 1: everything faint too
    scratches: bool = True
    specks: bool = True
    max_speck: int = 8  # px across: larger blobs are picture, not dust
    min_length: int = 31  # px: a thin line shorter than this is texture
    grow: int = 1  # px the proposal is grown by


def luminance(pixels: np.ndarray) -> np.ndarray:
    """(H, W) float32 luma in 8-bit levels (BT.601) of an 8/16-bit gray or colour image."""
    top = 65535.0 if pixels.dtype == np.uint16 else 255.0
    colours = pixels.shape[2] - (pixels.shape[2] in (2, 4))
    x = pixels[:, :, :colours].astype(np.float32) * np.float32(255.0 / top)
    if colours == 1:
        return x[:, :, 0]
    return x[:, :, 0] * 0.299 + x[:, :, 1] * 0.587 + x[:, :, 2] * 0.114


def _disk(diameter: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (diameter, diameter))


def _line(length: int, angle: float) -> np.ndarray:
    """A one-pixel straight segment of `length` at `angle` degrees, as a structuring element."""
    import cv2

    se = np.zeros((length, length), np.uint8)
    c = (length - 1) / 2.0
    dx, dy = np.cos(np.radians(angle)) * c, -np.sin(np.radians(angle)) * c
    cv2.line(se, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1, 1)
    return se


def top_hats(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bright, dark) responses: the largest over the scales of what an opening (closing)
    removes."""
    import cv2

    bright = np.zeros_like(y)
    dark = np.zeros_like(y)
    for d in SCALES:
        se = _disk(d)
        np.maximum(bright, cv2.morphologyEx(y, cv2.MORPH_TOPHAT, se), out=bright)
        np.maximum(dark, cv2.morphologyEx(y, cv2.MORPH_BLACKHAT, se), out=dark)
    return bright, dark


def texture_level(response: np.ndarray) -> np.ndarray:
    """How strongly the picture itself answers around each pixel: a local mean of the
    response, which sparse defects barely raise."""
    import cv2

    level = cv2.blur(response, (LEVEL_WINDOW, LEVEL_WINDOW))
    return cv2.GaussianBlur(level, (0, 0), LEVEL_WINDOW / 4)


def line_response(response: np.ndarray, length: int) -> np.ndarray:
    """The largest over the angles of an opening with a straight segment: only responses that
    persist along `length` pixels in one direction survive (a thin scratch; a curve, piece
    by piece)."""
    import cv2

    # a 3x3 dilation first, so a curve or a one-pixel line that wanders between rows still
    # fills a straight segment locally
    widened = response
    best = np.zeros_like(response)
    for angle in ANGLES:
        np.maximum(best, cv2.morphologyEx(widened, cv2.MORPH_OPEN, _line(length, angle)), out=best)
    return np.minimum(best, response)


def _thresholds(sensitivity: float) -> tuple[float, float]:
    """(strong, weak) contrast over the texture level, in multiples of it."""
    strong = 9.0 - 6.0 * sensitivity  # 9x at 0, 6x at 0.5, 3x at 1
    return strong, strong * 0.45


def propose(pixels: np.ndarray, settings: DefectSettings | None = None) -> np.ndarray:
    """(H, W) bool: the pixels that look like scratches or dust."""
    import cv2

    s = settings or DefectSettings()
    y = luminance(pixels)
    found = np.zeros(y.shape, bool)
    strong_k, weak_k = _thresholds(min(max(s.sensitivity, 0.0), 1.0))
    for response in top_hats(y):
        level = texture_level(response)
        floor = np.maximum(level, np.float32(MIN_CONTRAST / strong_k))
        strong = response > floor * strong_k
        weak = response > floor * weak_k
        keep = np.zeros(y.shape, bool)
        if s.scratches:
            lines = line_response(response, s.min_length)
            keep |= _scratches(lines > floor * weak_k, strong, s.min_length)
        if s.specks:
            keep |= _specks(weak, strong, s.max_speck)
        found |= keep
    if s.grow > 0 and found.any():
        grown = cv2.dilate(found.astype(np.uint8), _disk(2 * s.grow + 1))
        found = grown.astype(bool)
    return found


def _components(binary: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    import cv2

    return cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)[:3]


def _scratches(lines: np.ndarray, strong: np.ndarray, min_length: int) -> np.ndarray:
    """Line pixels in long thin connected parts that hold a strong pixel (hysteresis)."""
    import cv2

    n, labels, stats = _components(lines)
    if n <= 1:
        return np.zeros(lines.shape, bool)
    w, h, area = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT], stats[:, 4]
    length = np.hypot(w, h)
    thin = (length >= min_length) & (area <= length * 5.0)
    has_strong = np.bincount(labels[strong], minlength=n) >= 3
    good = thin & has_strong
    good[0] = False
    return good[labels]


def _specks(weak: np.ndarray, strong: np.ndarray, max_speck: int) -> np.ndarray:
    """Small isolated blobs with a strong core: dust. Anything larger, or touching much other
    response, is picture."""
    import cv2

    n, labels, stats = _components(weak)
    if n <= 1:
        return np.zeros(weak.shape, bool)
    w, h, area = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT], stats[:, 4]
    small = (w <= max_speck) & (h <= max_speck) & (area >= 2)
    cores = np.bincount(labels[strong], minlength=n)
    good = small & (cores >= np.maximum(1, area // 3))
    good[0] = False
    return good[labels]
