"""Scratches and dust on scanned prints, found without a model: a mask proposal to review.

A scratch is a thin bar, 1-4 px wide, laid over the picture: brighter (emulsion scraped off) or
darker (a crack, a hair) than what is on both sides of it, and unrelated to the picture, so it
runs on, straight or gently curved, across whatever it crosses, in the same ink. Picture detail
that looks like that up close (a highlight along a rim, a tripod leg, the outline of a tower) is
told apart by what lies around it: an edge a few pixels off, a dark border on both sides, a
different level on each side. The steps:

1. Bar evidence at 12 orientations: the luminance averaged along a short line (ALONG px),
   compared with the same average a little to each side (NEAR). "lax" is the bar's contrast
   against both near sides. "strict" also asks the band further out (BAND) to be plain on both
   sides and the two sides to be alike, and takes what falls short (beyond what the grain
   explains) off the contrast, so only a bar on a plain background answers strongly.
2. Seeds: connected stretches where the strict evidence stands out from the grain (a noise level
   measured on the same line averages), at least SEED_LENGTH px long and thin.
3. Each seed is followed from both ends along the lax evidence, bright or dark (a dark scratch
   over black shows bright there), in its own direction and in the same ink (a scratch keeps
   its own brightness while the picture under it changes), across gaps of up to MAX_GAP px: that
   is how a scratch is kept where it crosses busy picture. A seed that is only a plain stretch of
   a long ridge of the picture (a rim, a leg) is dropped: its followed line hardly ever shows
   strict evidence.
4. Lines shorter than `min_length` are dropped, except that a line the picture's edge cuts needs
   only CUT_SHARE of it.
5. Dust: a pixel brighter (darker) than the ring around it (all but its brightest (darkest) arc,
   so a speck on a hair still counts), by more than the ring itself varies, in a blob no wider
   than `max_speck`, with few other such blobs around it (a crowd of them is the picture's:
   highlights on metal, pores of wood).
6. The proposal, grown by `grow` px so an inpaint covers the defects' fringes.

Sensitivity scales every contrast threshold: 1.6 times the default at 0, 0.4 times at 1. Lower
finds only the plainest defects; higher finds fainter ones, and takes more of the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

#: orientations the bar evidence is measured at (every 15 degrees)
ANGLES = 12
#: px a bar is averaged over along itself: long enough to beat the grain, short enough for curves
ALONG = 11
#: px from the centre line where the sides are sampled: bars up to about 4 px wide
NEAR = (2.0, 3.0)
#: px from the centre line, the band beyond the sides that must be plain for a seed
BAND = (4, 13)
#: how much of the band's unevenness is taken off a seed's contrast
FLAT_WEIGHT = 2.5
#: how much of the difference between the two near sides is taken off a seed's contrast
ASYMMETRY = 0.5
#: unevenness of the band up to this many times the grain is the grain's own, not taken off
GRAIN_UNEVEN = 3.0
#: contrast (8-bit levels) below which no seed counts, however plain the surroundings
MIN_CONTRAST = 24.0
#: how many times the grain a seed stands out by; its fringe, half of that
SEED_NOISE = 8.0
#: a seed's shortest stretch (px), and its mean width (px) at most: wider is a blob
SEED_LENGTH = 11.0
SEED_WIDTH = 5.0
#: the lax evidence a followed scratch needs: this share of MIN_CONTRAST, or times the grain
FOLLOW_SHARE = 0.4
FOLLOW_NOISE = 4.0
#: px a followed scratch may be invisible for (over picture of its own shade) and still go on
MAX_GAP = 16
#: how quickly the followed direction turns towards where the evidence is (0: never)
TURN = 0.2
#: a followed scratch keeps its own ink within this share of its contrast, plus INK_SLACK levels
INK_SHARE = 0.3
INK_SLACK = 12.0
#: the share of a seed and its followed line that must show strict evidence, unless the seed
#: stands out by TRUSTED times its threshold or more
CHAIN_SHARE = 0.2
TRUSTED = 1.25
#: the share of min_length a line needs where the picture's edge cuts it
CUT_SHARE = 0.3
#: dust: rings (inner radius, px) a speck must stand out from, each RING_WIDTH px wide
RINGS = (2.0, 3.0, 4.0)
RING_WIDTH = 1.5
#: the ring is cut into this many arcs, of which the OPEN_SECTORS most like the speck are let off
SECTORS = 8
OPEN_SECTORS = 1
#: a level no pixel has: what an arc past the picture's edge is taken to hold
OUTSIDE = 1e4
#: how much of the ring's own unevenness is taken off a speck's contrast
RING_FLAT = 0.5
#: a speck's contrast at least, and times the picture's fine grain, and times the local level of
#: speck-like answers (in textured picture every other pixel stands out a little)
SPECK_CONTRAST = 30.0
SPECK_NOISE = 5.0
SPECK_TEXTURE = 4.0
#: a speck with more than CROWD small blobs (itself included) within CROWD_WINDOW px is picture
CROWD = 3
CROWD_WINDOW = 47
#: the window (px) over which the grain and the speck-like answers are measured
LEVEL_WINDOW = 31
SPECK_WINDOW = 15
#: rows of the picture the bar evidence is worked out for at once: bounds a large scan's memory
STRIP = 1024


@dataclass(frozen=True)
class DefectSettings:
    sensitivity: float = 0.5  # 0: only the most obvious defects, 1: everything faint too
    scratches: bool = True
    specks: bool = True
    max_speck: int = 8  # px across: larger blobs are picture, not dust
    min_length: int = 61  # px: a thin line shorter than this is picture detail
    grow: int = 1  # px the proposal is grown by


@dataclass
class LineEvidence:
    """One polarity's bar evidence, each (H, W), at the orientation where `lax` is largest."""

    strict: np.ndarray  # float32 levels: contrast over a plain band, its unevenness taken off
    lax: np.ndarray  # float32 levels: contrast against the near sides only
    angle: np.ndarray  # uint8: the orientation's index, 0..ANGLES-1 (angle = index * pi/ANGLES)
    ink: np.ndarray  # float32 levels: the bar's own brightness there


def luminance(pixels: np.ndarray) -> np.ndarray:
    """(H, W) float32 luma in 8-bit levels (BT.601) of an 8/16-bit gray or colour image."""
    top = 65535.0 if pixels.dtype == np.uint16 else 255.0
    colours = pixels.shape[2] - (pixels.shape[2] in (2, 4))
    x = pixels[:, :, :colours].astype(np.float32) * np.float32(255.0 / top)
    if colours == 1:
        return np.ascontiguousarray(x[:, :, 0])
    return x[:, :, 0] * 0.299 + x[:, :, 1] * 0.587 + x[:, :, 2] * 0.114


def _disk(diameter: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (diameter, diameter))


@cache
def _along_kernel(index: int) -> np.ndarray:
    """A normalised ALONG px segment through the centre at orientation `index`, its weight
    spread bilinearly so every orientation averages the same length."""
    angle = np.pi * index / ANGLES
    kernel = np.zeros((ALONG, ALONG), np.float32)
    c, half = ALONG // 2, (ALONG - 1) / 2
    for t in np.linspace(-half, half, 8 * ALONG):
        x, y = c + t * np.cos(angle), c + t * np.sin(angle)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        shares = ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy))
        for dx, dy, w in (*shares, (1, 1, fx * fy)):
            if x0 + dx < ALONG and y0 + dy < ALONG:
                kernel[y0 + dy, x0 + dx] += w
    return kernel / kernel.sum()


@cache
def _band_kernel(index: int, side: int) -> np.ndarray:
    """Picks the pixels BAND px off the centre line on one side (`side` +1 or -1), across the
    orientation `index`: a dilation (erosion) with it is the band's largest (smallest) value."""
    angle = np.pi * index / ANGLES
    nx, ny = -np.sin(angle) * side, np.cos(angle) * side
    size = 2 * BAND[1] + 1
    kernel = np.zeros((size, size), np.uint8)
    for t in np.arange(BAND[0], BAND[1] + 0.5, 0.5):
        kernel[BAND[1] + round(t * ny), BAND[1] + round(t * nx)] = 1
    return kernel


@cache
def _shift_kernel(dx: float, dy: float) -> np.ndarray:
    """A small correlation kernel that samples (x + dx, y + dy) bilinearly."""
    r = int(np.ceil(max(abs(dx), abs(dy)))) + 1
    kernel = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    x0, y0 = int(np.floor(dx)), int(np.floor(dy))
    fx, fy = dx - x0, dy - y0
    for ddx, ddy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy)):
        kernel[r + y0 + ddy, r + x0 + ddx] += w
    kernel[r + y0 + 1, r + x0 + 1] += fx * fy
    return kernel


def _shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """image sampled at (x + dx, y + dy), bilinear, the border mirrored. A filter with four
    taps: several times quicker than warpAffine for the same answer."""
    import cv2

    kernel = _shift_kernel(round(dx, 6), round(dy, 6))
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def line_evidence(y: np.ndarray, noise: np.ndarray) -> tuple[LineEvidence, LineEvidence]:
    """(bright, dark) bar evidence of the luminance, every orientation at once; `noise` is the
    grain, of which GRAIN_UNEVEN times is unevenness any background has. Worked out STRIP rows
    at a time (with the context the filters reach), so a large scan needs little memory."""
    h = y.shape[0]
    out = tuple(
        LineEvidence(
            np.empty(y.shape, np.float32),
            np.empty(y.shape, np.float32),
            np.empty(y.shape, np.uint8),
            np.empty(y.shape, np.float32),
        )
        for _ in range(2)
    )
    reach = BAND[1] + ALONG // 2 + 2
    for top in range(0, h, STRIP):
        bottom = min(top + STRIP, h)
        lo, hi = max(top - reach, 0), min(bottom + reach, h)
        inner = slice(top - lo, bottom - lo)
        for whole, part in zip(out, _line_evidence(y[lo:hi], noise[lo:hi]), strict=True):
            for name in ("strict", "lax", "angle", "ink"):
                getattr(whole, name)[top:bottom] = getattr(part, name)[inner]
    return out[0], out[1]


def _line_evidence(y: np.ndarray, noise: np.ndarray) -> tuple[LineEvidence, LineEvidence]:
    import cv2

    low = np.float32(-1e6)
    out = [
        LineEvidence(
            np.full(y.shape, low, np.float32),
            np.full(y.shape, low, np.float32),
            np.zeros(y.shape, np.uint8),
            np.zeros(y.shape, np.float32),
        )
        for _ in range(2)
    ]
    weight, asymmetry = np.float32(FLAT_WEIGHT), np.float32(ASYMMETRY)
    expected = noise * np.float32(GRAIN_UNEVEN)
    border = cv2.BORDER_REFLECT
    for index in range(ANGLES):
        angle = np.pi * index / ANGLES
        nx, ny = -np.sin(angle), np.cos(angle)
        m = cv2.filter2D(y, -1, _along_kernel(index), borderType=border)
        a_hi = cv2.dilate(m, _band_kernel(index, 1), borderType=border)
        a_lo = cv2.erode(m, _band_kernel(index, 1), borderType=border)
        b_hi = cv2.dilate(m, _band_kernel(index, -1), borderType=border)
        b_lo = cv2.erode(m, _band_kernel(index, -1), borderType=border)
        band_hi, band_lo = np.maximum(a_hi, b_hi), np.minimum(a_lo, b_lo)
        # how uneven the band is on either side, beyond what the grain makes of any background
        # (the near samples stay out of it: for a 4 px bar they are its fringe)
        uneven = np.maximum(np.maximum(a_hi - a_lo, b_hi - b_lo) - expected, 0) * weight
        this = np.full(y.shape, index, np.uint8)
        best: list[list[np.ndarray]] = [[], []]  # per polarity: lax, strict, at the best NEAR
        for s in NEAR:
            a, b = _shifted(m, s * nx, s * ny), _shifted(m, -s * nx, -s * ny)
            near_hi, near_lo = np.maximum(a, b), np.minimum(a, b)
            # a highlight along an object's edge has the object on one side, something else
            # on the other; a scratch has the same picture on both sides, mostly
            penalty = uneven + (near_hi - near_lo) * asymmetry
            for kept, lax, strict in (
                (best[0], m - near_hi, m - np.maximum(near_hi, band_hi) - penalty),
                (best[1], near_lo - m, np.minimum(near_lo, band_lo) - m - penalty),
            ):
                if kept:
                    np.maximum(kept[0], lax, out=kept[0])
                    np.maximum(kept[1], strict, out=kept[1])
                else:
                    kept += [lax, strict]
        for ev, (lax, strict) in zip(out, best, strict=True):
            np.maximum(ev.strict, strict, out=ev.strict)
            # OpenCV's masked copies: numpy's boolean indexing is several times slower here
            better = cv2.compare(lax, ev.lax, cv2.CMP_GT)
            cv2.copyTo(lax, better, ev.lax)
            cv2.copyTo(this, better, ev.angle)
            cv2.copyTo(m, better, ev.ink)
    return out[0], out[1]


def grain(y: np.ndarray) -> np.ndarray:
    """(H, W) float32: the local noise of the bar evidence, in levels: the median, over
    LEVEL_WINDOW px, of how far a short line average stands out from its sides at 0 and 90
    degrees (the smaller of the two, so an edge does not count as grain). A scratch covers too
    little of the window to move it."""
    import cv2

    smallest = None
    for index in (0, ANGLES // 2):
        angle = np.pi * index / ANGLES
        nx, ny = -np.sin(angle), np.cos(angle)
        m = cv2.filter2D(y, -1, _along_kernel(index), borderType=cv2.BORDER_REFLECT)
        bar = np.abs(m - 0.5 * (_shifted(m, 2 * nx, 2 * ny) + _shifted(m, -2 * nx, -2 * ny)))
        smallest = bar if smallest is None else np.minimum(smallest, bar)
    return _local_median(smallest, LEVEL_WINDOW, 8.0) + np.float32(0.5)


def _local_median(x: np.ndarray, window: int, scale: float, coarse: bool = False) -> np.ndarray:
    """The median over a window, smoothed; x is quantised to 1/scale levels (OpenCV's large
    median needs 8 bits), which is plenty for a noise level. `coarse`: at half the resolution,
    a quarter of the work, for a level that need not be sharp."""
    import cv2

    h, w = x.shape
    coarse = coarse and min(h, w) >= 2 * window
    if coarse:
        x = cv2.resize(x, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_NEAREST)
    quantised = np.clip(np.rint(x * scale), 0, 255).astype(np.uint8)
    small = window // 2 | 1 if coarse else window
    level = cv2.medianBlur(quantised, small).astype(np.float32) * np.float32(1 / scale)
    if coarse:
        level = cv2.resize(level, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(level, (0, 0), window / 4)


def _either(bright: LineEvidence, dark: LineEvidence) -> LineEvidence:
    """The stronger of the two at each pixel: a dark scratch over black turns bright there, and
    is followed on by its ink."""
    import cv2

    out = LineEvidence(
        np.maximum(bright.strict, dark.strict),
        bright.lax.copy(),
        bright.angle.copy(),
        bright.ink.copy(),
    )
    darker = cv2.compare(dark.lax, bright.lax, cv2.CMP_GT)
    cv2.copyTo(dark.lax, darker, out.lax)
    cv2.copyTo(dark.angle, darker, out.angle)
    cv2.copyTo(dark.ink, darker, out.ink)
    return out


def _bin_distance(angle_index: int, direction_bins: float) -> float:
    return abs((angle_index - direction_bins + ANGLES / 2) % ANGLES - ANGLES / 2)


def _follow(
    ev: LineEvidence,
    ok: np.ndarray,
    taken: np.ndarray,
    start: np.ndarray,
    direction: np.ndarray,
    ink: float,
    tolerance: float,
) -> list[tuple[int, int]]:
    """(row, column) pixels of the line followed from `start` along `direction`: each step goes
    one pixel on, to whichever of the three pixels across has the most evidence at about this
    orientation and with about this ink; an invisible stretch is bridged for up to MAX_GAP px
    (and kept only if the line shows again). Stops at the border or at a line already taken."""
    h, w = ok.shape
    # plain floats: numpy's per-call overhead would dominate this pixel-by-pixel walk
    px, py = float(start[0]), float(start[1])
    dx, dy = float(direction[0]), float(direction[1])
    points: list[tuple[int, int]] = []
    pending: list[tuple[int, int]] = []
    for _ in range(2 * (h + w)):
        qx, qy = px + dx, py + dy
        bins = (math.atan2(dy, dx) % math.pi) / math.pi * ANGLES
        best, best_lax = None, -math.inf
        for j in (-1.0, 0.0, 1.0):
            cx, cy = qx - j * dy, qy + j * dx
            x, y = round(cx), round(cy)
            if not (0 <= x < w and 0 <= y < h) or not ok[y, x]:
                continue
            lax = float(ev.lax[y, x])
            if (
                lax > best_lax
                and _bin_distance(int(ev.angle[y, x]), bins) <= 1.5
                and abs(float(ev.ink[y, x]) - ink) <= tolerance
            ):
                best, best_lax = (cx, cy), lax
        if best is None:
            x, y = round(qx), round(qy)
            if not (0 <= x < w and 0 <= y < h) or len(pending) >= MAX_GAP:
                break
            pending.append((y, x))
            px, py = qx, qy
            continue
        x, y = round(best[0]), round(best[1])
        if taken[y, x]:
            points += pending
            break
        sx, sy = best[0] - px, best[1] - py
        size = max(math.hypot(sx, sy), 1e-6)
        dx, dy = dx + TURN * (sx / size - dx), dy + TURN * (sy / size - dy)
        size = math.hypot(dx, dy)
        dx, dy = dx / size, dy / size
        px, py = best
        points += pending
        pending = []
        points.append((y, x))
    return points


def _ends(rows: np.ndarray, cols: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """A seed's two ends: ((x, y), outward unit direction), each from the last dozen pixels."""
    pts = np.stack([cols, rows], axis=1).astype(float)
    centre = pts.mean(axis=0)
    axis = np.linalg.eigh(np.cov((pts - centre).T))[1][:, 1]
    along = (pts - centre) @ axis
    ends = []
    for sign in (1.0, -1.0):
        reach = along * sign
        tip = pts[np.argmax(reach)]
        last = pts[reach >= reach.max() - 12]
        direction = axis
        if len(last) >= 3:
            direction = np.linalg.eigh(np.cov((last - last.mean(axis=0)).T))[1][:, 1]
        if direction @ axis * sign < 0:
            direction = -direction
        ends.append((tip, direction))
    return ends


def _scratches(ev: LineEvidence, noise: np.ndarray, factor: float, min_length: int) -> np.ndarray:
    """The scratches, bright and dark: seeds, followed; returns (H, W) bool."""
    import cv2

    seed_t = np.maximum(SEED_NOISE * noise, MIN_CONTRAST) * factor
    fringe_t = seed_t * 0.5
    follow_t = np.maximum(FOLLOW_NOISE * noise, MIN_CONTRAST * FOLLOW_SHARE) * factor
    strong = ev.strict > fringe_t
    n, labels, stats = _components(strong)
    if n <= 1:
        return np.zeros(ev.lax.shape, bool)
    seeded = np.bincount(labels[ev.strict > seed_t], minlength=n) > 0
    length = np.hypot(stats[:, 2], stats[:, 3])
    seeded &= (length >= SEED_LENGTH) & (stats[:, cv2.CC_STAT_AREA] <= SEED_WIDTH * length)
    seeded[0] = False
    found = seeded[labels]
    ok = ev.lax > follow_t
    followed = np.zeros(found.shape, bool)
    taken = found.copy()  # found | followed, kept up to date rather than worked out per seed
    # longest seeds first: a shorter one on the same scratch then stops where they meet
    for i in np.flatnonzero(seeded)[np.argsort(-length[seeded])]:
        x, y, w, h = stats[i, :4]
        rows, cols = np.nonzero(labels[y : y + h, x : x + w] == i)
        rows, cols = rows + y, cols + x
        clear = float(np.median(ev.strict[rows, cols] / seed_t[rows, cols]))
        # the ink and contrast of the seed's centre line, not of its flanks
        lax = ev.lax[rows, cols]
        centre = lax >= np.percentile(lax, 75)
        ink = float(np.median(ev.ink[rows, cols][centre]))
        tolerance = INK_SHARE * float(np.median(lax[centre])) + INK_SLACK
        chain: list[tuple[int, int]] = []
        for tip, direction in _ends(rows, cols):
            chain += _follow(ev, ok, taken, tip, direction, ink, tolerance)
        plain = sum(1 for r, c in chain if strong[r, c])
        share = (length[i] + plain) / (length[i] + len(chain))
        if share < CHAIN_SHARE and clear < TRUSTED:
            found[rows, cols] = False  # a plain stretch of a long ridge of the picture
            taken[rows, cols] = followed[rows, cols]
            continue
        if chain:
            points = tuple(np.array(chain).T)
            followed[points] = True
            taken[points] = True
    if followed.any():
        # the followed centre line and what beside it still belongs to the bar
        beside = cv2.dilate(followed.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        found |= followed | (beside & (ev.lax > follow_t * 0.7))
    joined = cv2.dilate(found.astype(np.uint8), np.ones((3, 3), np.uint8))
    n, labels, stats = _components(joined)
    x, y, w, h = (stats[:, i] for i in range(4))
    # a scratch that runs out of the picture is cut short by its edge: CUT_SHARE of it will do
    cut = (x <= 1) | (y <= 1) | (x + w >= found.shape[1] - 1) | (y + h >= found.shape[0] - 1)
    long = np.hypot(w, h) >= np.where(cut, min_length * CUT_SHARE, min_length)
    long[0] = False
    return long[labels] & found


@cache
def _ring_sectors(radius: float) -> tuple[np.ndarray, ...]:
    """The ring between radius and radius + RING_WIDTH, cut into SECTORS equal arcs."""
    size = int(np.ceil(radius + RING_WIDTH)) * 2 + 1
    c = size // 2
    yy, xx = np.mgrid[:size, :size]
    d = np.hypot(yy - c, xx - c)
    ring = (d >= radius) & (d <= radius + RING_WIDTH)
    sector = np.floor((np.arctan2(yy - c, xx - c) + np.pi) / (2 * np.pi) * SECTORS) % SECTORS
    return tuple((ring & (sector == k)).astype(np.uint8) for k in range(SECTORS))


def speck_evidence(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bright, dark) (H, W) float32: how far each pixel stands out from the ring around it,
    less part of how much the ring itself varies, at the ring that suits it best. The ring is
    cut into arcs and the brightest (darkest) OPEN_SECTORS arcs are let off, so a speck on a
    scratch or a hair still answers; an edge fills half of the ring, so it does not."""
    import cv2

    bright = np.full(y.shape, -1e6, np.float32)
    dark = bright.copy()
    for radius in RINGS:
        # the (OPEN_SECTORS+1)-th brightest arc's brightest pixel, and the darkest alike,
        # kept as running ranks so no stack of arcs is held
        # past the picture's edge an arc sees nothing: it is "brighter than anything" for the
        # bright ranks and "darker than anything" for the dark ones, so it is let off first
        top = [np.full(y.shape, -OUTSIDE, np.float32) for _ in range(OPEN_SECTORS + 1)]
        bottom = [np.full(y.shape, OUTSIDE, np.float32) for _ in range(OPEN_SECTORS + 1)]
        for se in _ring_sectors(radius):
            hi = cv2.dilate(y, se, borderType=cv2.BORDER_CONSTANT, borderValue=OUTSIDE)
            lo = cv2.erode(y, se, borderType=cv2.BORDER_CONSTANT, borderValue=-OUTSIDE)
            _insert(top, hi, np.maximum, np.minimum)
            _insert(bottom, lo, np.minimum, np.maximum)
        hi, lo = top[-1], bottom[-1]
        seen = (hi < OUTSIDE / 2) & (lo > -OUTSIDE / 2)  # enough of the ring inside the picture
        uneven = (hi - lo) * np.float32(RING_FLAT)
        np.maximum(bright, np.where(seen, y - hi - uneven, -1e6), out=bright)
        np.maximum(dark, np.where(seen, lo - y - uneven, -1e6), out=dark)
    return bright, dark


def _insert(ranks: list[np.ndarray], value: np.ndarray, better: Any, worse: Any) -> None:
    """Keeps ranks[0] >= ranks[1] >= ... (by `better`) per pixel as `value` comes in."""
    for rank in ranks:
        kept = better(rank, value)
        value = worse(rank, value)
        rank[...] = kept


def fine_grain(y: np.ndarray) -> np.ndarray:
    """(H, W) float32: the picture's pixel-to-pixel noise in levels, a local median."""
    import cv2

    fine = np.abs(y - cv2.blur(y, (3, 3)))
    return _local_median(fine, LEVEL_WINDOW, 8.0, coarse=True) + np.float32(0.5)


def _specks(response: np.ndarray, noise: np.ndarray, factor: float, max_speck: int) -> np.ndarray:
    """Blobs no wider than max_speck whose core stands out: dust."""
    import cv2

    texture = _local_median(np.maximum(response, 0), SPECK_WINDOW, 2.0, coarse=True)
    threshold = np.maximum(np.maximum(SPECK_NOISE * noise, SPECK_CONTRAST), SPECK_TEXTURE * texture)
    threshold *= factor
    n, labels, stats = _components(response > threshold * 0.5)
    if n <= 1:
        return np.zeros(response.shape, bool)
    w, h = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    small = (w <= max_speck) & (h <= max_speck)
    small[0] = False
    good = small & (np.bincount(labels[response > threshold], minlength=n) > 0)
    if CROWD and good.any():
        # dust lies apart; speck-like spots in a crowd are the picture's (highlights on metal,
        # pores of wood): count the small blobs, strong or not, around each one
        centres = np.zeros(response.shape, np.float32)
        x = (stats[small, 0] + w[small] // 2).astype(int)
        y = (stats[small, 1] + h[small] // 2).astype(int)
        centres[y, x] = 1
        around = cv2.boxFilter(centres, -1, (CROWD_WINDOW, CROWD_WINDOW), normalize=False)
        cx = (stats[:, 0] + w // 2).astype(int)
        cy = (stats[:, 1] + h // 2).astype(int)
        good &= around[cy, cx] < CROWD + 0.5
    return good[labels]


def _components(binary: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    import cv2

    return cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)[:3]


def _factor(sensitivity: float) -> float:
    """What every contrast threshold is multiplied by: 1.6 at sensitivity 0, 1 at 0.5, 0.4 at 1."""
    return 1.6 - 1.2 * min(max(sensitivity, 0.0), 1.0)


def propose(pixels: np.ndarray, settings: DefectSettings | None = None) -> np.ndarray:
    """(H, W) bool: the pixels that look like scratches or dust."""
    import cv2

    s = settings or DefectSettings()
    y = luminance(pixels)
    factor = _factor(s.sensitivity)
    found = np.zeros(y.shape, bool)
    if s.scratches:
        noise = grain(y)
        found |= _scratches(_either(*line_evidence(y, noise)), noise, factor, s.min_length)
    if s.specks:
        noise = fine_grain(y)
        for response in speck_evidence(y):
            found |= _specks(response, noise, factor, s.max_speck)
    if s.grow > 0 and found.any():
        found = cv2.dilate(found.astype(np.uint8), _disk(2 * s.grow + 1)).astype(bool)
    return found
