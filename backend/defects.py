"""Scratches and dust on scanned prints, found without a model: a mask proposal to review.

Steps: 1. the luminance in 8-bit levels, 2. white and black top-hats at several scales (what a
morphological opening or closing removes: structures thinner than the element, brighter or
darker than their surroundings), 3. each response measured against the local texture level
(a median, which a scratch does not move), so a scratch across a smooth sky and one across
grass are judged alike, 4. thin lines kept where the Hessian says "ridge" (strongly curved
across, hardly along: every orientation and gentle curves at once) and their connected parts
are long and thin, small specks kept where they stand out from a quiet neighbourhood, 5. the
proposal grown by a pixel or two so an inpaint covers the defects' fringes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: top-hat element diameters (px): scratches and specks up to about 3 px, and their halos
SCALES = (5, 9)
#: a ridge bends at most this much along itself for each unit it bends across
RIDGE_RATIO = 0.35
#: the window (px) over which the texture level is measured
LEVEL_WINDOW = 31
#: contrast in levels below which nothing counts, however smooth the surroundings
MIN_CONTRAST = 20.0
#: how many times the local texture level a defect stands out by, at sensitivity 0.5
LEVEL_FACTOR = 6.0
#: a scratch's mean width (px, gaps bridged) at most
THIN_WIDTH = 9.0


@dataclass(frozen=True)
class DefectSettings:
    sensitivity: float = 0.5  # 0: only the most obvious defects, 1: everything faint too
    scratches: bool = True
    specks: bool = True
    max_speck: int = 8  # px across: larger blobs are picture, not dust
    min_length: int = 41  # px: a thin line shorter than this is texture
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
    """How strongly the picture itself answers around each pixel: the local median of the
    response (a scratch, however strong, covers too little of the window to move it)."""
    import cv2

    quantised = np.clip(np.rint(response), 0, 255).astype(np.uint8)
    level = cv2.medianBlur(quantised, LEVEL_WINDOW).astype(np.float32)
    return cv2.GaussianBlur(level, (0, 0), LEVEL_WINDOW / 4) + np.float32(1.0)


def ridges(y: np.ndarray, sigmas: tuple[float, ...] = (1.0, 2.0)) -> tuple[np.ndarray, ...]:
    """(bright, dark) (H, W) bool: pixels on a line-like ridge at one of the scales, from the
    Hessian's eigenvalues: curved strongly across (a thin line), hardly along it. Every
    orientation at once, curves included."""
    import cv2

    bright = np.zeros(y.shape, bool)
    dark = np.zeros(y.shape, bool)
    for sigma in sigmas:
        g = cv2.GaussianBlur(y, (0, 0), sigma)
        gxx = cv2.Sobel(g, cv2.CV_32F, 2, 0, ksize=3)
        gyy = cv2.Sobel(g, cv2.CV_32F, 0, 2, ksize=3)
        gxy = cv2.Sobel(g, cv2.CV_32F, 1, 1, ksize=3)
        half = (gxx + gyy) / 2
        root = np.sqrt(((gxx - gyy) / 2) ** 2 + gxy**2)
        across, along = half - root, half + root  # across <= along
        bright |= (across < 0) & (np.abs(along) < RIDGE_RATIO * -across)
        dark |= (along > 0) & (np.abs(across) < RIDGE_RATIO * along)
    return bright, dark


def _thresholds(sensitivity: float) -> float:
    """How many times the texture level a defect must stand out by."""
    return LEVEL_FACTOR * (1.6 - 1.2 * sensitivity)  # 1.6x the factor at 0, 0.4x at 1


def propose(pixels: np.ndarray, settings: DefectSettings | None = None) -> np.ndarray:
    """(H, W) bool: the pixels that look like scratches or dust."""
    import cv2

    s = settings or DefectSettings()
    y = luminance(pixels)
    found = np.zeros(y.shape, bool)
    factor = _thresholds(min(max(s.sensitivity, 0.0), 1.0))
    contrast = MIN_CONTRAST * (1.6 - 1.2 * s.sensitivity)
    for response, ridge in zip(top_hats(y), ridges(y), strict=True):
        level = texture_level(response)
        standout = (response > level * factor) & (response > contrast)
        if s.scratches:
            found |= _scratches(standout & ridge, s.min_length)
        if s.specks:
            found |= _specks(standout, response > level * factor * 0.5, s.max_speck)
    if s.grow > 0 and found.any():
        grown = cv2.dilate(found.astype(np.uint8), _disk(2 * s.grow + 1))
        found = grown.astype(bool)
    return found


def _components(binary: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    import cv2

    return cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)[:3]


def _scratches(lines: np.ndarray, min_length: int) -> np.ndarray:
    """Line pixels in long thin connected parts; gaps of a pixel are bridged first."""
    import cv2

    bridged = cv2.dilate(lines.astype(np.uint8), np.ones((3, 3), np.uint8))
    n, labels, stats = _components(bridged)
    if n <= 1:
        return np.zeros(lines.shape, bool)
    w, h, area = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT], stats[:, 4]
    length = np.hypot(w, h)
    good = (length >= min_length) & (area <= length * THIN_WIDTH)
    good[0] = False
    return good[labels] & lines


def _specks(standout: np.ndarray, around: np.ndarray, max_speck: int) -> np.ndarray:
    """Small blobs standing out from a quiet neighbourhood: dust. Larger ones, or ones that
    touch more response around them, are picture."""
    import cv2

    n, labels, stats = _components(around)
    if n <= 1:
        return np.zeros(standout.shape, bool)
    w, h, area = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT], stats[:, 4]
    small = (w <= max_speck) & (h <= max_speck) & (area >= 2)
    cores = np.bincount(labels[standout], minlength=n)
    good = small & (cores >= 1)
    good[0] = False
    return good[labels] & standout
