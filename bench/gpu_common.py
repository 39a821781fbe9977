"""What the GPU scripts (gpu_upscale.py, gpu_diffusion.py, gpu_checks.py) share: the photo they
run on, waiting for the GPU, its peak memory, and PSNR. Nothing here needs more than NumPy,
OpenCV and PyTorch, which the lent GPU machine has."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def sample_photo(side: int) -> np.ndarray:
    """A photo-like RGB image: the repository's sample photo (a crop of scikit-image's
    astronaut, her face in it), resized to side x side (scikit-image is not on that machine)."""
    import cv2

    img = cv2.imread(str(REPO / "docs" / "sample.png"), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit("docs/sample.png is missing")
    img = cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(img[:, :, ::-1])


def synchronize(device: Any) -> None:
    """Wait for the GPU's queued work, so a timer measures it (nothing to wait for on a CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: Any) -> None:
    """Start the GPU's peak-memory count afresh."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: Any) -> float:
    """The most PyTorch allocated on the GPU since reset_peak, MB (0 on a CPU)."""
    import torch

    if device.type != "cuda":
        return 0.0
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 1e6


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two 8-bit images, dB; inf when they are equal."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(diff * diff))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
