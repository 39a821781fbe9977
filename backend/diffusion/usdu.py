"""The Ultimate SD Upscale tile plan: tiles in linear or chess order, then the seam fixes.

Every job is a rectangle to change and a mask over it (1 where it is redrawn): the main tiles
are blurred rectangles; band pass puts a band of `width` px with a mirrored linear gradient
on each inner tile border; half tile puts tile-sized gradient masks centred on the borders;
intersections adds radial masks on the corners where four tiles meet. A job is run on its
rectangle plus padding (later jobs see earlier results) and composited through its mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ORDERS = ("linear", "chess")
SEAM_FIXES = ("none", "band_pass", "half_tile", "half_tile_intersections")

Rect = tuple[int, int, int, int]  # top, bottom, left, right


@dataclass(frozen=True)
class Job:
    rect: Rect
    kind: str  # "tile", "band_v", "band_h", "half_v", "half_h", "corner"
    seam: bool = False


def _grid(length: int, tile: int) -> list[int]:
    return [i * tile for i in range(math.ceil(length / tile))]


def main_jobs(h: int, w: int, tile: int, order: str) -> list[Job]:
    cells = [(r, c) for r in range(len(_grid(h, tile))) for c in range(len(_grid(w, tile)))]
    if order == "chess":  # every other tile first, so no tile starts beside a fresh one
        cells = [rc for rc in cells if sum(rc) % 2 == 0] + [rc for rc in cells if sum(rc) % 2]
    return [
        Job((r * tile, min((r + 1) * tile, h), c * tile, min((c + 1) * tile, w)), "tile")
        for r, c in cells
    ]


def seam_jobs(h: int, w: int, tile: int, mode: str, width: int) -> list[Job]:
    xs, ys = _grid(w, tile)[1:], _grid(h, tile)[1:]  # the inner borders
    jobs: list[Job] = []
    if mode == "band_pass":
        half = width // 2
        for x in xs:
            for y in _grid(h, tile):
                jobs.append(
                    Job((y, min(y + tile, h), max(x - half, 0), min(x + half, w)), "band_v", True)
                )
        for y in ys:
            for x in _grid(w, tile):
                jobs.append(
                    Job((max(y - half, 0), min(y + half, h), x, min(x + tile, w)), "band_h", True)
                )
    elif mode in ("half_tile", "half_tile_intersections"):
        half = tile // 2
        for x in xs:
            for y in _grid(h, tile):
                jobs.append(
                    Job((y, min(y + tile, h), max(x - half, 0), min(x + half, w)), "half_v", True)
                )
        for y in ys:
            for x in _grid(w, tile):
                jobs.append(
                    Job((max(y - half, 0), min(y + half, h), x, min(x + tile, w)), "half_h", True)
                )
        if mode == "half_tile_intersections":
            for y in ys:
                for x in xs:
                    rect = (max(y - half, 0), min(y + half, h), max(x - half, 0), min(x + half, w))
                    jobs.append(Job(rect, "corner", True))
    return jobs


def job_mask(job: Job, crop: Rect, blur: float) -> np.ndarray:
    """The job's mask in the crop's coordinates (float32, 0..1)."""
    import cv2

    t, b, left, r = job.rect
    ct, cb, cl, cr = crop
    yy = np.arange(ct, cb, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(cl, cr, dtype=np.float32)[None, :] + 0.5
    inside = ((yy >= t) & (yy < b) & (xx >= left) & (xx < r)).astype(np.float32)
    cy, cx = (t + b) / 2, (left + r) / 2
    if job.kind in ("band_v", "half_v"):
        mask = inside * np.clip(1 - np.abs(xx - cx) / max((r - left) / 2, 1), 0, 1)
    elif job.kind in ("band_h", "half_h"):
        mask = inside * np.clip(1 - np.abs(yy - cy) / max((b - t) / 2, 1), 0, 1)
    elif job.kind == "corner":
        radius = max(min(b - t, r - left) / 2, 1)
        mask = np.clip(1 - np.hypot(yy - cy, xx - cx) / radius, 0, 1)
    else:
        mask = np.broadcast_to(inside, (cb - ct, cr - cl)).copy()
    mask = np.ascontiguousarray(np.broadcast_to(mask, (cb - ct, cr - cl)), np.float32)
    if blur > 0:
        # replicated borders: a tile on the image's edge stays whole up to the edge
        mask = cv2.GaussianBlur(mask, (0, 0), blur / 2, borderType=cv2.BORDER_REPLICATE)
    return mask


def crop_of(rect: Rect, padding: int, h: int, w: int) -> Rect:
    t, b, left, r = rect
    return max(t - padding, 0), min(b + padding, h), max(left - padding, 0), min(r + padding, w)


#: run one job: (crop pixels HxWx3 float, its mask, job index, job count) -> refined crop
Refiner = Callable[[np.ndarray, np.ndarray, int, int, Job], np.ndarray]


def run_jobs(
    image: np.ndarray, jobs: list[Job], refine: Refiner, padding: tuple[int, int],
    blur: tuple[float, float],
) -> np.ndarray:  # fmt: skip
    """Every job in order over `image` (changed in place and returned); (main, seam) pairs of
    padding and blur."""
    h, w = image.shape[:2]
    for index, job in enumerate(jobs):
        crop = crop_of(job.rect, padding[job.seam], h, w)
        t, b, left, r = crop
        mask = job_mask(job, crop, blur[job.seam])
        if not mask.any():
            continue
        before = image[t:b, left:r].copy()
        after = refine(before, mask, index, len(jobs), job)
        image[t:b, left:r] = before + (after - before) * mask[:, :, None]
    return image
