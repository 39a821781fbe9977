#!/usr/bin/env python3
"""GPU diffusion benchmark: Restora's refine (img2img at low strength) against diffusers' own
img2img pipeline on the same Stable Diffusion 1.5 weights, in the same run.

    python bench/gpu_diffusion.py [--device cuda] [--size 512] [--tiled 1024] [--steps 20]
        [--strength 0.3] [--runs 3] [--out FILE.json]

The model is SD 1.5 at its real size (UNet 860M, VAE 84M, CLIP-L text encoder 123M
parameters) built from the configurations Restora ships, with random weights, saved as a
diffusers folder in checkpoints/ and loaded through Restora's registry: speed depends on the
architecture and the image size, not on the weights. On a --size photo: Restora's refine task
(its default sampler, DPM++ 2M Karras; face protection off, as faces cost one detection per
job) and diffusers' StableDiffusionImg2ImgPipeline with the same sampler, steps, strength and
guidance at the same working size (refine works at the model's native size, 512 px for SD
1.5, whatever the image's: the baseline is given the photo at that size), what a plain
diffusers script runs: seconds for the whole call (encode, sampling, decode), seconds per
sampler step, and the peak GPU memory PyTorch allocated. Then Restora's tiled refine (the
"Ultimate SD upscale", 512 px tiles) doubling a --tiled photo. Figures are medians.

`--device cpu --tiny --size 64 --tiled 64 --steps 2 --runs 1` runs the same code on the tests'
tiny SD 1.5 (to check the script on a CPU, not for figures).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gpu_common import peak_mb, reset_peak, synchronize  # noqa: E402
from bench.gpu_common import sample_photo as photo  # noqa: E402

CONFIGS = REPO / "backend" / "diffusion" / "configs"


def real_sd15(root: Path, device: Any) -> Path:
    """checkpoints/sd15-random: SD 1.5 at its real size, random weights, fp16 on disk."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    with torch.device(device):  # random initialisation where it is fast
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(CONFIGS / "sd15" / "unet")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIGS / "sd15" / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(CONFIGS / "sd15" / "text_encoder"))
    scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(CONFIGS / "sd15" / "scheduler"))
    pipe = StableDiffusionPipeline(
        unet=unet.half(),
        vae=vae.half(),
        text_encoder=text.half(),
        tokenizer=CLIPTokenizer.from_pretrained(CONFIGS / "clip_tokenizer"),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path = root / "checkpoints" / "sd15-random"
    pipe.save_pretrained(path)
    del pipe, unet, vae, text
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=512, help="the refine photo's side")
    parser.add_argument("--tiled", type=int, default=1024, help="the tiled refine photo's side")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps actually run")
    parser.add_argument("--strength", type=float, default=0.3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny SD 1.5 instead")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()

    import os

    import torch

    from backend.devices import resolve_device
    from backend.diffusion.loading import make_scheduler
    from backend.executor import run_task
    from backend.model_cache import ModelCache
    from backend.models.registry import Registry
    from backend.tasks import refine, tiled_refine
    from backend.tasks.context import Progress, TaskContext
    from backend.tasks.spec import TaskInputs

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (script check)"
    print(f"{name}; torch {torch.__version__}; medians of {args.runs}", flush=True)
    found: dict[str, Any] = {"device": name, "rows": []}
    with tempfile.TemporaryDirectory(prefix="restora-gpu-diffusion-") as tmp:
        root = Path(tmp)
        os.environ["RESTORA_HOME"] = str(root / "home")
        start = time.perf_counter()
        if args.tiny:
            from tests import diffusion_zoo

            folder = diffusion_zoo.sd15_folder(root, "sd15-random")
        else:
            folder = real_sd15(root, device)
        print(f"  built and saved the model in {time.perf_counter() - start:.1f} s", flush=True)
        registry = Registry([root], index_file=root / "index.json")
        entry = registry.find(folder.name)
        cache = ModelCache(device=args.device, precision="auto", max_models=None)
        cache.get(entry)
        common = {"seed": 1, "face_protection": "off", "steps": args.steps,
                  "strength": args.strength}  # fmt: skip

        def restora(spec: Any, params: dict[str, Any], image: np.ndarray) -> tuple[float, float]:
            """Seconds of the whole task and the median seconds between sampler steps."""
            stamps: list[tuple[float, Progress]] = []
            ctx = TaskContext(lambda p: stamps.append((time.perf_counter(), p)))
            parsed = spec.parse_params({**common, **params})
            synchronize(device)
            t0 = time.perf_counter()
            run_task(spec, TaskInputs(image), parsed, {"model": entry}, cache, ctx)
            synchronize(device)
            total = time.perf_counter() - t0
            steps = [
                t for t, p in stamps if p.step is not None and p.stage.startswith(("den", "tile"))
            ]
            gaps = [b - a for a, b in itertools.pairwise(steps)]
            return total, statistics.median(gaps) if gaps else float("nan")

        # diffusers' own pipeline on the same folder, the same sampler
        from diffusers import StableDiffusionImg2ImgPipeline

        dtype = torch.float16 if device.type == "cuda" else torch.float32
        plain = StableDiffusionImg2ImgPipeline.from_pretrained(
            folder, dtype=dtype, safety_checker=None, requires_safety_checker=False
        ).to(device)
        plain.set_progress_bar_config(disable=True)
        plain.scheduler = make_scheduler(plain, "dpmpp_2m_karras")
        parsed = refine.SPEC.parse_params(common)

        def diffusers_run(image: np.ndarray) -> tuple[float, float]:
            from PIL import Image

            stamps: list[float] = []

            def on_step(_p: Any, _i: int, _t: Any, kwargs: dict) -> dict:
                synchronize(device)
                stamps.append(time.perf_counter())
                return kwargs

            synchronize(device)
            t0 = time.perf_counter()
            plain(
                prompt=parsed.prompt,
                negative_prompt=parsed.negative_prompt or None,
                image=Image.fromarray(image),
                strength=args.strength,
                num_inference_steps=int(np.ceil(args.steps / args.strength - 1e-9)),
                guidance_scale=parsed.guidance,
                generator=torch.Generator("cpu").manual_seed(1),
                output_type="np",
                callback_on_step_end=on_step,
            )
            synchronize(device)
            total = time.perf_counter() - t0
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            return total, statistics.median(gaps) if gaps else float("nan")

        from backend.tasks.refine import native_shape

        # the photo at refine's working size is what the baseline is given (a square photo,
        # so a square working size)
        model = cache.get(entry)
        side = args.size
        image = photo(side)
        nh, nw = native_shape(side, side, model.native_size, model.vae_factor)
        working = photo(nh)
        for label, fn in (
            ("Restora refine", lambda: restora(refine.SPEC, {}, image)),
            ("diffusers img2img", lambda: diffusers_run(working)),
        ):
            fn()  # warm-up: kernel choice, allocation
            reset_peak(device)
            figures = [fn() for _ in range(args.runs)]
            peak = peak_mb(device)
            total = statistics.median(t for t, _ in figures)
            step = statistics.median(s for _, s in figures)
            print(
                f"  {side}x{side} (worked at {nh}x{nw}), {args.steps} steps: {label}: "
                f"{total:.3f} s, {step * 1e3:.1f} ms per step, peak {peak:.0f} MB",
                flush=True,
            )
            found["rows"].append(
                {"size": side, "what": label, "seconds": total, "step_seconds": step,
                 "peak_mb": peak}
            )  # fmt: skip
            if args.out:  # as it goes, so a run cut short still leaves its figures
                args.out.write_text(json.dumps(found, indent=1))
        plain.to("cpu")  # its GPU memory back before the tiled run
        if device.type == "cuda":
            torch.cuda.empty_cache()

        # tiled refine doubling a larger photo: tiles of the model's native size
        side = args.tiled
        image = photo(side)
        params = {"scale": 2.0}
        restora(tiled_refine.SPEC, params, image)
        reset_peak(device)
        times = [restora(tiled_refine.SPEC, params, image)[0] for _ in range(args.runs)]
        total = statistics.median(times)
        print(
            f"  tiled refine {side}x{side} -> {2 * side}x{2 * side}: {total:.3f} s, "
            f"peak {peak_mb(device):.0f} MB",
            flush=True,
        )
        found["rows"].append(
            {
                "size": side,
                "what": "Restora tiled refine x2",
                "seconds": total,
                "peak_mb": peak_mb(device),
            }
        )
        if args.out:
            args.out.write_text(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
