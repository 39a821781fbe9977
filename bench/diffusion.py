#!/usr/bin/env python3
"""Diffusion benchmark with the tiny random-weight SD 1.5 checkpoint the tests use.

    .venv/bin/python bench/diffusion.py [--runs 3] [--size 256]

Prints, as medians: seconds per sampler step (refine at the tiny model's native 64 px),
seconds per tile of tiled refine (2 steps per tile), the same with the tiny tile ControlNet
(a copy of the UNet's encoder run beside it at every step, as a real one is), and the
overhead of tiling: tiled refine over a SIZE x SIZE image at scale 1 (tiles of 64, padding
16) against one img2img pass over the same SIZE x SIZE area with the same steps. Runs with
and without the ControlNet alternate, so a busy machine slows both alike. Face protection is
off in the timings (it costs one face detection per job, not per tile). Speed depends on the
architecture and size, not on the weights; the tiny model only shows the machinery's overhead.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STEPS = 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()

    import torch

    from backend.devices import cpu_model
    from backend.diffusion.img2img import Sampling, denoise
    from backend.executor import run_task
    from backend.model_cache import ModelCache
    from backend.models.registry import Registry
    from backend.tasks import refine, tiled_refine
    from backend.tasks.context import Progress, TaskContext
    from backend.tasks.spec import TaskInputs
    from tests import diffusion_zoo

    root = Path(tempfile.mkdtemp(prefix="restora-bench-diffusion-"))
    diffusion_zoo.sd15_checkpoint(root)
    diffusion_zoo.sd15_controlnet(root, "tiny-sd15-tile")
    registry = Registry([root], index_file=root / "index.json")
    cache = ModelCache(device="cpu", precision="fp32", max_models=None)
    entry = registry.find("tiny-sd15")
    control_entry = registry.find("tiny-sd15-tile")
    model = cache.get(entry)
    rng = np.random.default_rng(0)
    image = (rng.random((args.size, args.size, 3)) * 255).astype(np.uint8)

    def stamps(spec, params: dict, pixels: np.ndarray) -> list[float]:
        times: list[tuple[float, Progress]] = []
        ctx = TaskContext(lambda p: times.append((time.perf_counter(), p)))
        parsed = spec.parse_params({"seed": 1, "face_protection": "off", **params})
        entries = {"model": entry}
        if parsed.controlnet:
            entries["controlnet"] = control_entry
        run_task(spec, TaskInputs(pixels), parsed, entries, cache, ctx)
        steps = [t for t, p in times if p.step is not None and p.stage.startswith(("den", "tile"))]
        return [b - a for a, b in itertools.pairwise(steps)]

    per_step, per_tile, per_tile_cn, tiled, whole = [], [], [], [], []
    tiled_params = {"steps": STEPS, "scale": 1.0, "tile": 64, "padding": 16, "strength": 0.5,
                    "sampler": "euler"}  # fmt: skip
    sampling = Sampling("", "", 0.5, STEPS, 5.0, "euler", 1)
    floats = image.astype(np.float32) / 255
    for _ in range(args.runs):
        per_step.append(statistics.median(stamps(refine.SPEC, {"steps": 10}, image[:64, :64])))
        tiles = (args.size // 64) ** 2
        start = time.perf_counter()
        stamps(tiled_refine.SPEC, tiled_params, image)
        tiled.append(time.perf_counter() - start)
        per_tile.append(tiled[-1] / tiles)
        start = time.perf_counter()
        stamps(tiled_refine.SPEC, {**tiled_params, "controlnet": "tiny-sd15-tile"}, image)
        per_tile_cn.append((time.perf_counter() - start) / tiles)
        start = time.perf_counter()
        denoise(model, floats, sampling, TaskContext())
        whole.append(time.perf_counter() - start)

    med = statistics.median
    print(f"machine: {platform.node()}, {cpu_model()}, {torch.get_num_threads()} threads")
    print(f"tiny SD 1.5 (UNet 32/64 channels), fp32 CPU, medians of {args.runs} runs")
    print(f"seconds per sampler step at 64x64:          {med(per_step):.3f}")
    print(f"seconds per tile (64 px + 16 padding, {STEPS} steps): {med(per_tile):.3f}")
    print(f"  with the tile ControlNet:                 {med(per_tile_cn):.3f} "
          f"({med(per_tile_cn) / med(per_tile):.2f}x)")  # fmt: skip
    print(f"tiled refine {args.size}x{args.size}:                  {med(tiled):.2f} s")
    print(f"one img2img pass {args.size}x{args.size}:              {med(whole):.2f} s")
    print(f"tiling overhead (tiled / one pass):         {med(tiled) / med(whole):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
