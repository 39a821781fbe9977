"""Colour fidelity after diffusion, and how far a result moved from its input.

Wavelet colour fix (as SUPIR, HYPIR and SeedVR2 do): the result's high frequencies over the
input's low ones, so tones and colours stay while the new detail is kept. AdaIN: each
channel's mean and spread taken from the input. Both work on float RGB in 0..1, HxWx3.
"""

from __future__ import annotations

import math

import numpy as np

COLOUR_FIXES = ("wavelet", "adain", "none")
#: levels of the wavelet decomposition: the low band keeps structures above ~2^5 px
WAVELET_LEVELS = 5
#: a pixel "changed" when a channel moved by more than this many 8-bit levels
CHANGED_LEVELS = 3
#: the PSNR reported for a result equal to its input
MAX_PSNR = 100.0


def _blur(x: np.ndarray, radius: int) -> np.ndarray:
    """The a-trous wavelet's 3x3 binomial kernel with holes of `radius` px, edges replicated."""
    pad = np.pad(x, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    h, w = x.shape[:2]
    weights = ((0, 0.25), (radius, 0.5), (2 * radius, 0.25))
    rows = sum(wt * pad[off : off + h, :, :] for off, wt in weights)
    return sum(wt * rows[:, off : off + w, :] for off, wt in weights)


def wavelet_split(x: np.ndarray, levels: int = WAVELET_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) with high + low == x."""
    low = x
    for i in range(levels):
        low = _blur(low, 2**i)
    return x - low, low


def wavelet_fix(result: np.ndarray, source: np.ndarray) -> np.ndarray:
    high, _ = wavelet_split(result)
    _, low = wavelet_split(source)
    return np.clip(high + low, 0.0, 1.0)


def adain_fix(result: np.ndarray, source: np.ndarray) -> np.ndarray:
    axes = (0, 1)
    mean_r, std_r = result.mean(axes), result.std(axes) + 1e-6
    mean_s, std_s = source.mean(axes), source.std(axes)
    return np.clip((result - mean_r) / std_r * std_s + mean_s, 0.0, 1.0)


def colour_fix(result: np.ndarray, source: np.ndarray, mode: str) -> np.ndarray:
    if mode == "wavelet":
        return wavelet_fix(result, source)
    if mode == "adain":
        return adain_fix(result, source)
    return result


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al.: Gaussian window, sigma 1.5) over the channels, 0..255 values."""
    import cv2

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def fidelity(result: np.ndarray, source: np.ndarray, top: float) -> dict[str, float]:
    """How far `result` moved from `source` (same size, same channels, values up to `top`):
    PSNR (dB; MAX_PSNR when equal: JSON cannot carry infinity), SSIM, and the share of pixels
    changed by more than a few 8-bit levels."""
    a = source.astype(np.float32) * (255.0 / top)
    b = result.astype(np.float32) * (255.0 / top)
    mse = float(np.mean((a - b) ** 2))
    psnr = MAX_PSNR if mse == 0 else min(MAX_PSNR, 10 * math.log10(255.0**2 / mse))
    changed = np.abs(a - b).max(axis=2) > CHANGED_LEVELS
    return {
        "psnr_db": round(psnr, 2),
        "ssim": round(_ssim(a, b), 4),
        "changed_share": round(float(changed.mean()), 4),
    }


def fidelity_lines(details: dict) -> list[str]:
    """The command line's summary of a diffusion result."""
    f = details.get("fidelity") or {}
    lines = []
    if "seed" in details:
        lines.append(f"seed {details['seed']} (pass --seed {details['seed']} to reproduce)")
    if f:
        psnr = f["psnr_db"]
        shown = "identical" if psnr >= MAX_PSNR else f"PSNR {psnr:.1f} dB"
        lines.append(
            f"moved from the input: {shown}, SSIM {f['ssim']:.3f}, "
            f"{f['changed_share'] * 100:.1f}% of pixels changed by more than "
            f"{CHANGED_LEVELS} levels"
        )
    return lines
