#!/usr/bin/env python3
"""Edit benchmark with the tiny random-weight pipelines the tests use.

    .venv/bin/python bench/edit.py [--runs 3] [--steps 4] [--size 64]

For each family (Qwen-Image-Edit-2509 in ComfyUI's split files, FLUX.1 Kontext and
InstructPix2Pix as diffusers folders) prints, as medians over the runs: seconds per sampler
step of `restora edit` (through the executor, at a SIZE x SIZE working size) against a plain
diffusers pipeline call in the same process with default settings (the same picture, output
size and steps given; the model's default guidance, and Qwen's own 1 MP reference latents),
and the whole call's seconds. Speed depends on the architecture and the sizes, not on the
weights; the tiny models show the machinery's overhead and the cost of the sizes chosen.
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


def _per_step(stamps: list[float]) -> float:
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.median(gaps) if gaps else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    import torch

    from backend.devices import cpu_model
    from backend.diffusion.edit_run import to_pil
    from backend.executor import run_task
    from backend.model_cache import ModelCache
    from backend.models.registry import Registry
    from backend.tasks import edit
    from backend.tasks.context import Progress, TaskContext
    from backend.tasks.spec import TaskInputs
    from tests import edit_zoo

    root = Path(tempfile.mkdtemp(prefix="restora-bench-edit-"))
    edit_zoo.qwen_split_files(root)
    edit_zoo.kontext_folder(root)
    edit_zoo.ip2p_folder(root)
    registry = Registry([root], index_file=root / "index.json")
    cache = ModelCache(device="cpu", precision="fp32", max_models=None)
    rng = np.random.default_rng(0)
    image = (rng.random((args.size, args.size, 3)) * 255).astype(np.uint8)
    print(f"CPU: {cpu_model() or platform.processor()}, torch threads {torch.get_num_threads()}")
    print(f"{args.steps} steps at {args.size}x{args.size}, median of {args.runs} runs")
    head = ("model", "restora s/step", "plain s/step", "restora s", "plain s")
    print(f"{head[0]:<24} {head[1]:>15} {head[2]:>13} {head[3]:>10} {head[4]:>9}")

    for name in ("tiny-qwen-edit-2509", "tiny-flux-kontext", "tiny-instruct-pix2pix"):
        entry = registry.find(name)
        model = cache.get(entry)
        ours, plain, ours_total, plain_total = [], [], [], []
        for run in range(args.runs + 1):  # the first run warms up and is not counted
            stamps: list[float] = []

            def seen(p: Progress, stamps: list[float] = stamps) -> None:
                if p.stage == "denoising":
                    stamps.append(time.perf_counter())

            params = edit.SPEC.parse_params(
                {"steps": args.steps, "seed": 1, "working_size": args.size}
            )
            start = time.perf_counter()
            run_task(edit.SPEC, TaskInputs(image), params, {"model": entry}, cache,
                     TaskContext(seen))  # fmt: skip
            total = time.perf_counter() - start
            base: list[float] = []

            def step_end(pipe, i, t, kw, base: list[float] = base):
                base.append(time.perf_counter())
                return kw

            call = {"prompt": "Colorize this photo", "num_inference_steps": args.steps,
                    "generator": torch.Generator("cpu").manual_seed(1), "output_type": "np",
                    "callback_on_step_end": step_end}  # fmt: skip
            picture = to_pil(image.astype(np.float32) / 255)
            if model.family != "InstructPix2Pix":
                call.update(height=args.size, width=args.size)
            start = time.perf_counter()
            with torch.no_grad():
                model.pipe(image=picture, **call)
            base_total = time.perf_counter() - start
            if run:
                ours.append(_per_step(stamps))
                plain.append(_per_step(base))
                ours_total.append(total)
                plain_total.append(base_total)
        med = statistics.median
        print(f"{name:<24} {med(ours):>15.4f} {med(plain):>13.4f} {med(ours_total):>10.3f} "
              f"{med(plain_total):>9.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
