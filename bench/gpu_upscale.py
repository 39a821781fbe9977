#!/usr/bin/env python3
"""GPU upscale benchmark: Restora against a chaiNNer-style tile loop, in the same run.

    python bench/gpu_upscale.py [--device cuda] [--size 2048] [--runs 3]
        [--models rrdb,compact,swinir,hat] [--out FILE.json]

Each model is built at the size its released weights have (RealESRGAN_x4plus's RRDBNet,
realesr-general-x4v3's Compact, SwinIR-M x4 real-world, HAT x4) with seeded random weights,
saved as a .safetensors file in a ComfyUI-style models folder and loaded through Restora's
registry and spandrel, as a user's file is: random weights at the real size give the real
timings. Per model and configuration: median seconds for one photo-like image of --size
pixels a side (x4), input megapixels per second, the speed-up over the chaiNNer-style loop,
the peak GPU memory PyTorch allocated, and the agreement (PSNR) with the fp32 whole-image
result (Restora's own tiles, so fp16's error is what shows).

The rows:
- chaiNNer-style: the network in fp16 (bf16 where it has no fp16), 512 px tiles with a fixed
  16 px overlap whose centre is pasted, each tile converted on the host (uint8 -> float ->
  device -> float -> host -> uint8), as simple Python upscalers do;
- Restora, as it runs: `upscale.run` with the automatic tile and precision;
- Restora, channels-last and Restora, cudnn.benchmark (convolutional networks, the latter on
  CUDA only): the same with NHWC tensors, or with cuDNN choosing its algorithm by timing, to
  decide whether Restora should switch either on for CUDA.

The ceiling: the network's floating-point operations (PyTorch's FlopCounterMode over one
pass) divided by the GPU's dense fp16 (or bf16) matrix-multiply rate, measured in this run on
8192x8192 matrices: no convolution or attention runs faster than that, so "of peak" is how
much of the GPU's arithmetic the configuration uses.

`--device cpu --size 96 --chainner-tile 48 --precision fp32` runs the same code on a CPU
(slow, for checking the script, not for figures).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gpu_common import peak_mb, psnr, reset_peak, synchronize  # noqa: E402
from bench.gpu_common import sample_photo as photo  # noqa: E402

# --- the networks, at their released sizes ------------------------------------------------------


def _rrdb() -> Any:
    from spandrel.architectures.ESRGAN import ESRGAN

    return ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)


def _compact() -> Any:
    from spandrel.architectures.Compact import Compact

    return Compact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=32, upscale=4)


def _swinir() -> Any:
    from spandrel.architectures.SwinIR import SwinIR

    # 003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN
    return SwinIR(
        upscale=4,
        in_chans=3,
        img_size=64,
        window_size=8,
        img_range=1.0,
        depths=[6] * 6,
        embed_dim=180,
        num_heads=[6] * 6,
        mlp_ratio=2,
        upsampler="nearest+conv",
        resi_connection="1conv",
    )


def _hat() -> Any:
    from spandrel.architectures.HAT import HAT

    # HAT_SRx4 / Real_HAT_GAN_SRx4
    return HAT(
        upscale=4,
        in_chans=3,
        img_size=64,
        window_size=16,
        compress_ratio=3,
        squeeze_factor=30,
        conv_scale=0.01,
        overlap_ratio=0.5,
        img_range=1.0,
        depths=[6] * 6,
        embed_dim=180,
        num_heads=[6] * 6,
        mlp_ratio=2,
        upsampler="pixelshuffle",
        resi_connection="1conv",
    )


#: key -> (file stem, builder, convolutional: whether channels-last is worth a row)
NETWORKS: dict[str, tuple[str, Callable[[], Any], bool]] = {  # cheapest first
    "compact": ("realesr-general-x4v3-random", _compact, True),
    "rrdb": ("RealESRGAN_x4plus-random", _rrdb, True),
    "swinir": ("SwinIR-M_x4_GAN-random", _swinir, False),
    "hat": ("HAT_SRx4-random", _hat, False),
}


def save_network(key: str, models_root: Path) -> Path:
    """The network with seeded random weights, as a user's .safetensors in upscale_models/."""
    import torch
    from safetensors.torch import save_file

    stem, build, _ = NETWORKS[key]
    torch.manual_seed(0)
    net = build()
    with torch.no_grad():  # small weights, so 40 random layers in a row stay in range
        for p in net.parameters():
            if p.ndim > 1:
                p.mul_(0.5)
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    folder = models_root / "upscale_models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.safetensors"
    save_file(state, str(path))
    return path


# --- measuring ----------------------------------------------------------------------------------


def timed(fn: Callable[[], np.ndarray], device: Any, runs: int) -> tuple[float, np.ndarray, float]:
    """Median seconds of `runs` calls after one warm-up, the last output, and the peak MB."""
    out = fn()
    reset_peak(device)
    times = []
    for _ in range(runs):
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out, peak_mb(device)


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """fp32 that is fp32: CUDA runs fp32 convolutions in TF32 (a 10-bit mantissa) by
    default, which would make the reference itself a reduced precision."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def matmul_rate(device: Any, dtype: Any, side: int = 8192, runs: int = 10) -> float:
    """Dense matrix-multiply FLOP/s of this device in `dtype`, median of `runs`."""
    import torch

    a = torch.randn(side, side, device=device, dtype=dtype)
    b = torch.randn(side, side, device=device, dtype=dtype)
    times = []
    for i in range(runs + 2):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 2 * side**3 / statistics.median(times)


def flops_per_input_pixel(module: Any, device: Any, dtype: Any, side: int) -> float:
    """Floating-point operations of one pass over a side x side input, per input pixel."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from backend import cpu_fusion

    x = torch.rand(1, 3, side, side, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    # the network's own layers: the counter knows no fused oneDNN call (CPU only)
    with torch.inference_mode(), cpu_fusion.unfused(), counter:
        module(x)
    return counter.get_total_flops() / (side * side)


# --- the chaiNNer-style loop --------------------------------------------------------------------


def chainner_style(
    module: Any, img: np.ndarray, scale: int, dtype: Any, device: Any, tile: int, overlap: int = 16
) -> np.ndarray:
    """Fixed tiles with a fixed overlap, each converted on the host and its centre pasted."""
    import torch

    h, w = img.shape[:2]
    out = np.zeros((h * scale, w * scale, 3), np.uint8)
    with torch.inference_mode():
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                y0, x0 = max(0, y - overlap), max(0, x - overlap)
                y1, x1 = min(h, y + tile + overlap), min(w, x + tile + overlap)
                part = img[y0:y1, x0:x1].astype(np.float32) / 255.0
                t = torch.from_numpy(part).permute(2, 0, 1)[None].to(device, dtype)
                r = module(t).float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
                r = (r * 255.0).round().astype(np.uint8)
                ty, tx = (y - y0) * scale, (x - x0) * scale
                th, tw = min(tile, h - y) * scale, min(tile, w - x) * scale
                out[y * scale : y * scale + th, x * scale : x * scale + tw] = r[
                    ty : ty + th, tx : tx + tw
                ]
    return out


# --- one model ----------------------------------------------------------------------------------


@dataclass
class Row:
    model: str
    config: str
    seconds: float
    mp_per_s: float
    speedup: float
    peak_mb: float
    of_peak: float
    psnr_db: float
    note: str = ""


def bench_network(key: str, args: argparse.Namespace, models_root: Path, rate: float) -> list[Row]:
    import torch

    from backend.devices import free_memory
    from backend.models.registry import Registry
    from backend.models.runtime import load_model
    from backend.tasks import upscale

    path = save_network(key, models_root)
    registry = Registry([models_root], models_root / "index.json")
    entry = registry.find(path.stem)
    model = load_model(entry, args.device, args.precision, notify=lambda _m: None)
    device = model.device
    dtype = model.descriptor.dtype
    img = photo(args.size)
    mp = args.size * args.size / 1e6
    auto = model.auto_tile(free_memory(device))
    # what the automatic tile is sized by: compare it with the measured peak below (an
    # estimate far under it means out-of-memory retries on smaller GPUs)
    side_run = min(auto, args.size + 2 * upscale.BORDER)
    estimate_mb = side_run * side_run * model.bytes_per_input_pixel() / 1e6
    print(
        f"\n{key} ({entry.architecture}, {path.name}): {model.precision_label} "
        f"({model.precision_reason}); automatic tile {auto} (at most); Restora's memory "
        f"estimate for a {side_run} px tile {estimate_mb:.0f} MB",
        flush=True,
    )
    side = 64  # a multiple of every window here (8, 16)
    flops = flops_per_input_pixel(model.descriptor.model, device, dtype, side)
    print(f"  {flops / 1e6:.1f} MFLOP per input pixel", flush=True)

    # the chaiNNer-style loop: a fresh copy of the network, straight from spandrel
    base_s, base_out, base_mb = time_chainner(path, img, dtype, device, args)

    # the reference: Restora in fp32 (its automatic tiles), else the chaiNNer-style output
    reference, ref_name = base_out, "chaiNNer-style"
    if args.reference:
        fp32 = load_model(entry, args.device, "fp32", notify=lambda _m: None)
        with full_fp32():
            reference = upscale.run(img, fp32, upscale.UpscaleParams())
        ref_name = "fp32"
        fp32.descriptor.to("cpu")  # its GPU memory back before the timed rows
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def row(config: str, seconds: float, out: np.ndarray, peak: float, note: str = "") -> Row:
        r = Row(
            key,
            config,
            seconds,
            mp / seconds,
            base_s / seconds,
            peak,
            flops * args.size * args.size / seconds / rate,
            psnr(out, reference),
            note,
        )
        print(
            f"  {config}: {seconds:.3f} s, {r.mp_per_s:.3f} MP/s, {r.speedup:.2f}x, "
            f"peak {peak:.0f} MB, {r.of_peak:.0%} of peak, {r.psnr_db:.1f} dB vs {ref_name}",
            flush=True,
        )
        return r

    rows = [row(f"chaiNNer-style ({args.chainner_tile} px tiles)", base_s, base_out, base_mb)]

    def run() -> np.ndarray:
        return upscale.run(img, model, upscale.UpscaleParams())

    s, out, peak = timed(run, device, args.runs)
    rows.append(
        row(
            "Restora, automatic",
            s,
            out,
            peak,
            f"{model.precision_label}; estimate {estimate_mb:.0f} MB",
        )
    )
    if NETWORKS[key][2]:
        model.channels_last = True
        s, out, peak = timed(run, device, args.runs)
        rows.append(row("Restora, channels-last", s, out, peak))
        model.channels_last = False
    if NETWORKS[key][2] and device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # cuDNN times its algorithms per shape, once
        try:
            s, out, peak = timed(run, device, args.runs)
        finally:
            torch.backends.cudnn.benchmark = False
        rows.append(row("Restora, cudnn.benchmark", s, out, peak))
    model.descriptor.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def time_chainner(
    path: Path, img: np.ndarray, dtype: Any, device: Any, args: argparse.Namespace
) -> tuple[float, np.ndarray, float]:
    from backend.models.loading import load_descriptor

    plain = load_descriptor(path).model.to(device, dtype).eval()
    return timed(
        lambda: chainner_style(plain, img, 4, dtype, device, args.chainner_tile), device, args.runs
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=2048, help="input side, pixels")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default=",".join(NETWORKS))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--chainner-tile", type=int, default=512)
    parser.add_argument(
        "--no-reference", dest="reference", action="store_false", help="skip the fp32 reference"
    )
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()

    import torch

    from backend.devices import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
        half = torch.float16
    else:
        from backend.devices import cpu_model

        name, half = f"{cpu_model()} (CPU: checks the script, not a GPU figure)", torch.float32
    rate = matmul_rate(device, half, side=8192 if device.type == "cuda" else 1024)
    print(
        f"{name}; torch {torch.__version__}; {args.size}x{args.size} x4, medians of {args.runs}; "
        f"dense {str(half).split('.')[-1]} matmul {rate / 1e12:.1f} TFLOP/s",
        flush=True,
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="restora-gpu-bench-") as folder:
        os.environ.setdefault("RESTORA_HOME", folder)  # precision cache and model index
        for key in args.models.split(","):
            rows += bench_network(key, args, Path(folder), rate)
            if args.out:  # after each model, so a run cut short still leaves its figures
                found = {"device": name, "size": args.size, "rows": [asdict(r) for r in rows]}
                args.out.write_text(json.dumps(found, indent=1))

    width = max(len(r.config) for r in rows)
    print(
        f"\n{'model':8} {'configuration'.ljust(width)}  seconds    MP/s  speed-up  peak MB"
        "  of peak    PSNR"
    )
    for r in rows:
        print(
            f"{r.model:8} {r.config.ljust(width)}  {r.seconds:7.3f}  {r.mp_per_s:6.3f}  "
            f"{r.speedup:7.2f}x  {r.peak_mb:7.0f}  {r.of_peak:7.0%}  {r.psnr_db:6.1f}"
            + (f"  ({r.note})" if r.note else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
