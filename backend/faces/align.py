"""Face alignment: five landmarks to the FFHQ 512x512 template by a similarity transform.

Face restoration models are trained on faces cut out this way (eyes, nose and mouth corners at
fixed places), so a face is warped into the template, restored, and warped back with the
inverse transform. Affines are 2x3 float64 arrays mapping source pixel coordinates (pixel
centres at integers, as OpenCV uses them) to destination coordinates.
"""

from __future__ import annotations

import numpy as np

FACE_SIZE = 512
#: the five points in a 512x512 face as FFHQ-trained restorers expect them: the eye on the
#: image's left, the eye on the image's right, the nose tip, the mouth corners left and right
FFHQ_TEMPLATE = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
)


def template(size: int = FACE_SIZE) -> np.ndarray:
    return FFHQ_TEMPLATE * (size / FACE_SIZE)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The rotation + uniform scale + translation that best maps `src` points onto `dst`
    (least squares, Umeyama's closed form); a 2x3 affine."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N, 2) point sets, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    var = (s**2).sum() / len(src)
    if var <= 1e-12:
        raise ValueError("the source points coincide")
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1  # a reflection is not a similarity: flip the weakest axis instead
    rotation = u @ sign @ vt
    scale = (sigma * np.diag(sign)).sum() / var
    affine = np.empty((2, 3))
    affine[:, :2] = scale * rotation
    affine[:, 2] = dst_mean - affine[:, :2] @ src_mean
    return affine


def align_affine(landmarks: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """Image -> face crop: the similarity taking five landmarks to the template."""
    return similarity(np.asarray(landmarks, np.float64).reshape(5, 2), template(size))


def box_affine(x0: float, y0: float, x1: float, y1: float, size: int = FACE_SIZE) -> np.ndarray:
    """Image -> face crop for a region the user chose as a face: its square around the
    region's centre fills the crop."""
    side = max(x1 - x0, y1 - y0, 1.0)
    scale = size / side
    cx, cy = (x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5  # pixel-centre coordinates
    return np.array(
        [[scale, 0.0, size / 2 - 0.5 - scale * cx], [0.0, scale, size / 2 - 0.5 - scale * cy]]
    )


def invert(affine: np.ndarray) -> np.ndarray:
    linear = np.linalg.inv(affine[:, :2])
    return np.hstack([linear, -(linear @ affine[:, 2])[:, None]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The affine applying `inner`, then `outer`."""
    return np.hstack(
        [outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]]
    )


def scaled(factor_x: float, factor_y: float | None = None) -> np.ndarray:
    """Pixel-centre coordinates of an image to those of the same image resized by a factor."""
    fy = factor_x if factor_y is None else factor_y
    return np.array([[factor_x, 0.0, 0.5 * (factor_x - 1)], [0.0, fy, 0.5 * (fy - 1)]])


def translated(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points @ affine[:, :2].T + affine[:, 2]


def warp(image: np.ndarray, affine: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resample `image` (H, W, C) float32 through `affine` (source -> destination) onto a
    width x height canvas; outside the source, the image's edge is mirrored."""
    import cv2

    # shrinking by much aliases with bilinear sampling: area-average first
    scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    if scale < 0.5:
        height_in, width_in = image.shape[:2]
        small_w = max(1, round(width_in * scale * 1.5))
        small_h = max(1, round(height_in * scale * 1.5))
        image = _keep_channels(
            cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA), image.shape[2]
        )
        to_small = scaled(small_w / width_in, small_h / height_in)
        affine = compose(affine, invert(to_small))
    out = cv2.warpAffine(
        image,
        affine,
        (width, height),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT101,
    )
    return _keep_channels(out, image.shape[2])


def _keep_channels(out: np.ndarray, channels: int) -> np.ndarray:
    return out if out.ndim == 3 else out.reshape(*out.shape, channels)
