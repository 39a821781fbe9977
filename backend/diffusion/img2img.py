"""One img2img pass over float RGB pixels, with an optional soft denoise mask.

The image is encoded once (the latent distribution's mean: no sampling noise, so a strength
near 0 gives the input back), handed to the pipeline as its latents, and denoised for
`steps` sampler steps whatever the strength (the schedule is stretched by 1/strength, as
A1111 and Krita do). A mask is applied as differential diffusion: after each step, a latent
pixel whose mask value is below the step's threshold is put back to the input noised to that
step, so mask 1 is denoised from the start, 0 never, and values between join part way.

With a ControlNet (`control`), its condition image is given beside the latents and the
ControlNet img2img pipeline runs instead; everything else (the mask, the stretched schedule,
progress and cancel) is the same. Before the image is encoded the VAE is told whether to work
in tiles at this size (vae_plan.py), from the memory the model manager says is left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from backend.diffusion import vae_plan
from backend.diffusion.controlnet import Control
from backend.diffusion.loading import DiffusionModel, make_scheduler
from backend.diffusion.vae_plan import VaePlan
from backend.tasks.context import TaskContext


@dataclass(frozen=True)
class Sampling:
    prompt: str
    negative_prompt: str
    strength: float
    steps: int
    guidance: float
    scheduler: str
    seed: int
    #: "epsilon" or "v_prediction" instead of the model's own; "" or "auto": the model's
    prediction: str = ""


def denoise(
    model: DiffusionModel,
    image: np.ndarray,
    sampling: Sampling,
    ctx: TaskContext,
    mask: np.ndarray | None = None,
    vae: Any = None,
    stage: str = "denoising",
    control: Control | None = None,
    report: dict[str, Any] | None = None,
) -> np.ndarray:
    """`image` (HxWx3 float32 0..1, sides multiples of the VAE's factor) refined; the same size.
    `report` gets the VAE plan ("vae": "whole" or "tiled (N px)")."""
    pipe = model.pipeline(vae, None if control is None else control.net)
    pipe.scheduler = make_scheduler(pipe, sampling.scheduler)
    if sampling.prediction not in ("", "auto"):
        pipe.scheduler = type(pipe.scheduler).from_config(
            pipe.scheduler.config, prediction_type=sampling.prediction
        )
    total = max(1, math.ceil(sampling.steps / sampling.strength - 1e-9))
    device = pipe._execution_device
    vae_model = pipe.vae
    chosen = plan_vae(vae_model, image.shape[0], image.shape[1], ctx, model.tier)
    if report is not None:
        report["vae"] = chosen.describe()
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    pixels = (pixels * 2 - 1).to(device, vae_model.dtype)
    with torch.no_grad():
        init = vae_model.encode(pixels).latent_dist.mean * vae_model.config.scaling_factor
    generator = torch.Generator("cpu").manual_seed(sampling.seed)
    noise = torch.randn(init.shape, generator=torch.Generator("cpu").manual_seed(sampling.seed + 1))
    noise = noise.to(device, init.dtype)
    soft = None
    if mask is not None:
        h, w = init.shape[-2:]
        soft = torch.nn.functional.interpolate(
            torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None, None],
            size=(h, w), mode="area",
        ).to(device, init.dtype)  # fmt: skip
    report = ctx.diffusers_callback(sampling.steps, stage)
    done = [0]

    def on_step_end(p: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        done[0] += 1
        if soft is not None:
            latents = kwargs["latents"]
            known = _noised_to_next(p.scheduler, init, noise, timestep)
            threshold = 1.0 - done[0] / sampling.steps
            keep = (soft > threshold).to(latents.dtype)
            kwargs["latents"] = latents * keep + known * (1 - keep)
        report(p, min(done[0], sampling.steps) - 1, timestep, kwargs)
        return kwargs

    extra: dict[str, Any] = {}
    if control is not None:
        cond = torch.from_numpy(np.ascontiguousarray(control.image.transpose(2, 0, 1)))[None]
        extra = {
            "control_image": cond.float(),
            "controlnet_conditioning_scale": float(control.scale),
            "control_guidance_start": float(control.start),
            "control_guidance_end": float(control.end),
            "height": image.shape[0],
            "width": image.shape[1],
        }
    with ctx.pipeline_run(pipe), torch.no_grad():
        out = pipe(
            prompt=sampling.prompt,
            negative_prompt=sampling.negative_prompt or None,
            image=init,
            strength=sampling.strength,
            num_inference_steps=total,
            guidance_scale=sampling.guidance,
            generator=generator,
            output_type="np",
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=["latents"],
            **extra,
        )
    return np.asarray(out.images[0], dtype=np.float32)


def plan_vae(vae: Any, height: int, width: int, ctx: TaskContext, tier: str = "") -> VaePlan:
    """Tile the VAE's encode and decode at this size when the memory left calls for it."""
    models = getattr(ctx, "models", None)
    if models is not None and hasattr(models, "work_bytes"):
        free = models.work_bytes()
    else:
        from backend.devices import free_memory

        free = free_memory(next(iter(vae.parameters())).device)
    chosen = vae_plan.for_vae(vae, height, width, free, tier)
    vae_plan.apply(vae, chosen)
    return chosen


def _noised_to_next(
    scheduler: Any, init: torch.Tensor, noise: torch.Tensor, t: Any
) -> torch.Tensor:
    """The input's latents noised to the timestep after `t` (the input itself after the last)."""
    steps = scheduler.timesteps
    where = (steps == t).nonzero()
    index = int(where[0]) + 1 if len(where) else len(steps)
    if index >= len(steps):
        return init
    return scheduler.add_noise(init, noise, steps[index : index + 1])
