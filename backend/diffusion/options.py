"""The parameters every diffusion task shares, and the checks and loading they have in common.

No torch here: the task specs (and so `restora --help` and /v1/tasks) import this module.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from backend.errors import InvalidParameterError, OutOfMemoryError
from backend.tasks.spec import ModelSlot, Preset, param

COLOUR_FIXES = ("wavelet", "adain", "none")
SCHEDULERS = ("dpmpp_2m_karras", "dpmpp_2m", "euler", "euler_a", "ddim", "unipc")
DEFAULT_PROMPT = "high quality photo, sharp focus, natural detail, faithful colours"
DEFAULT_NEGATIVE = (
    "blurry, lowres, jpeg artifacts, noise, oversharpened, painting, cartoon, deformed, "
    "watermark, text"
)
MAX_SEED = 2**32 - 1
INSTALL_HINT = (
    "Install them with `pip install 'restora[diffusion]'` in Restora's environment, or run "
    "the installer again with --diffusion."
)
REQUIRES = ("diffusers", "transformers")
MISSING_HINT = (
    "Put a Stable Diffusion 1.5, 2.1 or SDXL checkpoint (.safetensors) in the checkpoints "
    "folder (or a diffusers folder), or download one from the catalog."
)

ILLUSTRATION_PROMPT = "clean illustration, crisp line art, flat colours, sharp edges"
ILLUSTRATION_NEGATIVE = "photo, blurry, lowres, jpeg artifacts, noise, watermark, text"
OLD_PHOTO_PROMPT = "restored old photograph, sharp focus, natural skin, fine detail"
#: what both diffusion tasks offer; each sets the prompts too, so switching presets never
#: keeps another preset's words
PRESETS = (
    Preset(
        "photo",
        "Photo",
        "Restores photographic detail at low strength: the picture stays, textures and edges "
        "are redrawn.",
        {"prompt": DEFAULT_PROMPT, "negative_prompt": DEFAULT_NEGATIVE, "strength": 0.3},
    ),
    Preset(
        "old-photo",
        "Old photo",
        "Gentler, with words for an old photograph, so faces and grain are not repainted.",
        {"prompt": OLD_PHOTO_PROMPT, "negative_prompt": DEFAULT_NEGATIVE, "strength": 0.25},
    ),
    Preset(
        "illustration",
        "Illustration",
        "Words for drawings: crisp lines and flat colours instead of photographic texture.",
        {
            "prompt": ILLUSTRATION_PROMPT,
            "negative_prompt": ILLUSTRATION_NEGATIVE,
            "strength": 0.35,
        },
    ),
    Preset(
        "fast",
        "Fast",
        "Half the sampler steps: about twice as quick, with a little less detail.",
        {"steps": 10},
    ),
)

MODEL_SLOT = ModelSlot(
    folders=("checkpoints", "diffusion_models"),
    purposes=("Diffusion",),
    default=None,
    missing_hint=MISSING_HINT,
    catalog_task="refine",
)


@dataclass
class DiffusionParams:
    prompt: str = param(
        DEFAULT_PROMPT,
        "Prompt",
        help="What the image shows; at low strength it steers detail, not content.",
        widget="prompt",
        maximum=2000,
    )
    negative_prompt: str = param(
        DEFAULT_NEGATIVE,
        "Negative prompt",
        help="What to keep out of the result.",
        widget="prompt",
        maximum=2000,
        advanced=True,
    )
    strength: float = param(
        0.3,
        "Strength",
        help="How much is redrawn: 0 keeps the input, 0.2-0.35 restores detail, above 0.5 "
        "the model repaints.",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        widget="slider",
    )
    steps: int = param(
        20,
        "Steps",
        help="Sampler steps actually run (the schedule is stretched by 1/strength).",
        minimum=1,
        maximum=150,
        unit="steps",
        advanced=True,
    )
    guidance: float = param(
        5.0,
        "Guidance",
        help="How strongly the prompt is followed (classifier-free guidance scale).",
        minimum=0.0,
        maximum=30.0,
        step=0.5,
        advanced=True,
    )
    sampler: str = param(
        "dpmpp_2m_karras",
        "Sampler",
        help="The sampler (scheduler) over the model's noise schedule.",
        choices=SCHEDULERS,
        choice_labels=("DPM++ 2M Karras", "DPM++ 2M", "Euler", "Euler a", "DDIM", "UniPC"),
        advanced=True,
    )
    seed: int | None = param(
        None,
        "Seed",
        help="The same seed, image and options give the same result; empty picks one and "
        "reports it.",
        minimum=0,
        maximum=MAX_SEED,
        widget="seed",
        none_label="random",
    )
    colour_fix: str = param(
        "wavelet",
        "Colour fix",
        help="Keep the input's colours: wavelet takes its low frequencies, AdaIN its mean "
        "and spread per channel.",
        choices=COLOUR_FIXES,
        choice_labels=("wavelet", "AdaIN", "none"),
        advanced=True,
    )
    lora: str | None = param(
        None,
        "LoRA",
        help="A LoRA from the loras folder, applied for this job.",
        widget="model",
        folders=("loras",),
        purposes=("LoRA",),
        none_label="none",
        advanced=True,
    )
    lora_weight: float = param(
        0.8,
        "LoRA weight",
        help="How strongly the LoRA applies.",
        minimum=-2.0,
        maximum=2.0,
        step=0.05,
        advanced=True,
    )
    vae: str | None = param(
        None,
        "VAE",
        help="A VAE from the vae folder instead of the model's own.",
        widget="model",
        folders=("vae",),
        purposes=("VAE",),
        none_label="the model's own",
        advanced=True,
    )

    def check_common(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise InvalidParameterError(f"strength must be 0..1, not {self.strength}.", "")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise InvalidParameterError(f"seed must be 0..{MAX_SEED}, not {self.seed}.", "")
        if self.colour_fix not in COLOUR_FIXES:
            raise InvalidParameterError(f"colour_fix must be one of {COLOUR_FIXES}.", "")

    def chosen_seed(self) -> int:
        return self.seed if self.seed is not None else secrets.randbelow(MAX_SEED + 1)


def check_memory(entry: Any, what: str) -> None:
    """Refuse, before queueing, a model no memory here can hold, saying what it needs."""
    from backend.devices import free_memory, resolve_device
    from backend.models.manager.memory import megabytes

    need = int(getattr(entry, "memory_bytes", 0) or 0)
    if not need:
        return
    device = resolve_device("auto")
    host = free_memory(resolve_device("cpu"))
    gpu = free_memory(device) if device.type != "cpu" else 0
    if device.type == "cpu":
        need *= 2  # fp32 on a CPU
    if need > host + gpu:
        raise OutOfMemoryError(
            f"{what} with {entry.name} needs {megabytes(need)}; this computer has "
            f"{megabytes(host)} of memory free"
            + (f" and the GPU {megabytes(gpu)}." if gpu else "."),
            "Close other programs, or use a smaller model (SD 1.5 needs about 3 GB).",
        )


def place(ctx: Any, model: Any, extra_bytes: int = 0) -> str:
    """Ask the model manager for the memory tier that fits now, and apply it; `extra_bytes`:
    further weights that run beside the model (a ControlNet)."""
    total, largest = model.weight_bytes()
    total += extra_bytes
    tier = ctx.models.tier(total, largest) if ctx.models is not None else "resident"
    model.place(tier)
    return tier
