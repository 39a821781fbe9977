#!/usr/bin/env python3
"""HYPIR benchmark with the tiny random-weight SD 2.1-style base and LoRA the tests use.

    .venv/bin/python bench/hypir.py [--runs 5] [--size 192] [--precision fp32] [--threads 1]
                                    [--sd21-unet]

Prints, as medians: seconds per patch of the hypir task (64 px patches at stride 32 over a
SIZE x SIZE image: encode, UNet and decode, and each pass on its own), against the baseline of
the same three calls on one patch done directly, and one plain UNet call at the patch's size
(the merged LoRA costs nothing at run time, so HYPIR's UNet call is the base's). The tiny model
shows the machinery's overhead, not a real model's speed: `--sd21-unet` also times one call
of a UNet of SD 2.1's real architecture (random weights, from the shipped configuration) on a
512 px patch, fp32 against bf16, which is what a CPU spends per patch on the UNet.
One thread by default: on a busy shared machine a second thread mostly waits for the first
(single calls then vary 50-fold), so one thread gives figures that repeat.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TILE, STRIDE = 64, 32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sd21-unet", action="store_true", help="also time SD 2.1's real UNet")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from backend.devices import cpu_model
    from backend.executor import run_task
    from backend.model_cache import ModelCache
    from backend.models.registry import Registry
    from backend.tasks import hypir
    from backend.tasks.context import Progress, TaskContext
    from backend.tasks.spec import TaskInputs
    from bench.timing import median_seconds
    from tests import diffusion_zoo

    root = diffusion_zoo.hypir_models(Path(tempfile.mkdtemp(prefix="restora-bench-hypir-")))
    registry = Registry([root], index_file=root / "index.json")
    cache = ModelCache(device="cpu", precision=args.precision, max_models=None)
    entry = registry.find("HYPIR_sd2")
    model = cache.get(entry)
    rng = np.random.default_rng(0)
    image = (rng.random((args.size, args.size, 3)) * 255).astype(np.uint8)
    params = hypir.SPEC.parse_params({"tile": TILE, "stride": STRIDE})

    def one_run() -> tuple[float, int, dict[str, float]]:
        stamps: list[tuple[float, Progress]] = []
        ctx = TaskContext(lambda p: stamps.append((time.perf_counter(), p)))
        start = time.perf_counter()
        result = run_task(hypir.SPEC, TaskInputs(image), params, {"model": entry}, cache, ctx)
        total = time.perf_counter() - start
        passes = {}
        for stage in ("encoding", "restoring", "decoding"):
            times = [t for t, p in stamps if p.stage.startswith(stage + " tile")]
            passes[stage] = statistics.median(np.diff(times)) if len(times) > 1 else 0.0
        return total, result.details["tiles"], passes

    one_run()  # warm-up: kernel selection, the prompt's embedding
    runs = [one_run() for _ in range(args.runs)]
    tiles = runs[0][1]
    per_patch = statistics.median(total / n for total, n, _ in runs)
    per_pass = {k: statistics.median(r[2][k] for r in runs) for k in runs[0][2]}

    # the baselines: one patch's three calls done directly, and one plain UNet call
    f = model.vae_factor
    x = torch.rand(1, 3, TILE, TILE, dtype=model.dtype) * 2 - 1
    z = torch.randn(1, 4, TILE // f, TILE // f, dtype=model.dtype)
    emb = model.text_embedding("")
    t = torch.tensor([200])

    def direct() -> None:
        with torch.inference_mode():
            latent = model.vae.encode(x).latent_dist.mean
            out = model.unet(latent, t, encoder_hidden_states=emb).sample
            model.vae.decode(out)

    def unet_call() -> None:
        with torch.inference_mode():
            model.unet(z, t, encoder_hidden_states=emb)

    direct_s = median_seconds(direct, args.runs)
    unet_s = median_seconds(unet_call, args.runs)

    print(f"machine: {platform.node()}, {cpu_model()}, {torch.get_num_threads()} threads")
    print(
        f"tiny SD 2.1-style base + rank-{model.rank} LoRA ({model.adapted_layers} layers, "
        f"merged), {model.precision_label} CPU, medians of {args.runs} runs"
    )
    print(f"hypir over {args.size}x{args.size}: {tiles} patches of {TILE} px, stride {STRIDE}")
    print(f"seconds per patch, whole task:           {per_patch:.4f}")
    for stage, seconds in per_pass.items():
        print(f"  of which {stage:10} per patch:      {seconds:.4f}")
    print(f"baseline, one patch's 3 calls directly:  {direct_s:.4f}")
    print(f"baseline, one plain UNet call ({TILE // f}x{TILE // f}):    {unet_s:.4f}")
    print(f"task per patch / direct calls:           {per_patch / direct_s:.2f}x")
    if args.sd21_unet:
        sd21_unet(torch, emb_width=1024)
    return 0


def sd21_unet(torch, emb_width: int) -> None:
    """One call of SD 2.1's UNet architecture on a 512 px patch (64x64 latent), fp32 and bf16."""
    from diffusers import UNet2DConditionModel

    from backend.diffusion.loading import CONFIGS
    from bench.timing import median_seconds

    unet = UNet2DConditionModel.from_config(
        UNet2DConditionModel.load_config(CONFIGS / "sd21", subfolder="unet")
    ).eval()
    n = sum(p.numel() for p in unet.parameters())
    z, t = torch.randn(1, 4, 64, 64), torch.tensor([200])
    text = torch.randn(1, 77, emb_width)
    for dtype in (torch.float32, torch.bfloat16):
        torch.nn.Module.to(unet, dtype)

        def call(dtype=dtype) -> None:
            with torch.inference_mode():
                unet(z.to(dtype), t, encoder_hidden_states=text.to(dtype))

        seconds = median_seconds(call, 1)
        print(f"SD 2.1 UNet ({n / 1e6:.0f} M params), one 512 px patch, {dtype}: {seconds:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
