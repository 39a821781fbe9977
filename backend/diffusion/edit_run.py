"""One instruction edit through a diffusers pipeline, at a size the caller chose, aligned.

Each pipeline resizes its input by rules of its own: Qwen-Image-Edit-2509 sends every picture
to the VAE at about 1 MP (`VAE_IMAGE_SIZE`) and to the vision-language encoder at about
384x384 (`CONDITION_IMAGE_SIZE`), the first Qwen-Image-Edit at 1 MP whatever the output size,
FLUX.1 Kontext snaps to its preferred resolutions. Here the layer's picture goes in already at
the working size and the pipeline's own resizes are set to that same size for the call (under
a lock: they are module constants), so the reference latents and the output share one grid
and the result maps back onto the input pixel for pixel by one resize.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from backend.diffusion import edit_families as ef
from backend.diffusion.edit_loading import EditModel
from backend.tasks.context import TaskContext

#: the area the vision-language encoder of Qwen-Image-Edit-2509 sees each picture at (its own
#: 384x384); a test may lower it, the product keeps the model's
CONDITION_AREA = 384 * 384
_SIZES = threading.Lock()


@dataclass(frozen=True)
class EditCall:
    instruction: str
    negative_prompt: str
    steps: int
    guidance: float
    image_guidance: float
    seed: int


def working_shape(height: int, width: int, area: int, multiple: int) -> tuple[int, int]:
    """(h, w) of about `area` pixels at the input's aspect ratio, sides multiples of
    `multiple` (Qwen's own rounding: to the nearest multiple)."""
    ratio = width / height
    w = math.sqrt(area * ratio)
    h = w / ratio
    return max(multiple, round(h / multiple) * multiple), max(
        multiple, round(w / multiple) * multiple
    )


def to_pil(rgb: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(np.rint(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8), "RGB")


@contextlib.contextmanager
def _pipeline_sizes(model: EditModel, area: int) -> Iterator[None]:
    """The pipeline module's own resize targets set to `area` for one call."""
    import importlib

    name = type(model.pipe).__module__
    module = importlib.import_module(name)
    with _SIZES:
        names = ("VAE_IMAGE_SIZE", "CONDITION_IMAGE_SIZE", "calculate_dimensions")
        saved = {k: getattr(module, k) for k in names if hasattr(module, k)}
        try:
            if model.family in (ef.QWEN_PLUS, ef.QWEN_2511):
                module.VAE_IMAGE_SIZE = area
                module.CONDITION_IMAGE_SIZE = CONDITION_AREA
            elif model.family == ef.QWEN_V1:
                original = saved["calculate_dimensions"]
                module.calculate_dimensions = lambda _target, ratio: original(area, ratio)
            yield
        finally:
            for k, v in saved.items():
                setattr(module, k, v)


def edit(
    model: EditModel,
    image: np.ndarray,
    references: list[np.ndarray],
    call: EditCall,
    ctx: TaskContext,
) -> np.ndarray:
    """`image` (HxWx3 float 0..1, its sides already multiples of the family's rounding)
    edited by `call.instruction`; the same size. `references` go in as Picture 2, 3 (the
    families that take one picture ignore them: the task says so)."""
    pipe = model.pipe
    h, w = image.shape[:2]
    kind = model.info.guidance_kind
    generator = torch.Generator("cpu").manual_seed(call.seed)
    args: dict[str, Any] = {
        "prompt": call.instruction,
        "num_inference_steps": call.steps,
        "generator": generator,
        "output_type": "np",
        "callback_on_step_end": ctx.diffusers_callback(call.steps),
        "callback_on_step_end_tensor_inputs": ["latents"],
    }
    main = to_pil(image)
    if model.family in (ef.QWEN_PLUS, ef.QWEN_2511):
        pictures = [main] + [to_pil(r) for r in references[: model.info.max_images - 1]]
        args.update(image=pictures, height=h, width=w)
    elif model.family == ef.KONTEXT:
        # max_area = h * w makes the pipeline keep (h, w) exactly; no snapping to its list
        args.update(image=main, height=h, width=w, max_area=h * w, _auto_resize=False)
    elif model.family == ef.QWEN_V1:
        args.update(image=main, height=h, width=w)
    else:  # InstructPix2Pix: the output has the input's size
        args.update(image=main, image_guidance_scale=call.image_guidance)
    if kind == "true_cfg":
        # Qwen runs its second (negative) pass only with a negative prompt, even a blank one
        args["true_cfg_scale"] = call.guidance
        if call.guidance > 1.0:
            args["negative_prompt"] = call.negative_prompt or " "
    elif kind == "distilled":
        args["guidance_scale"] = call.guidance
        if call.negative_prompt:
            args.update(negative_prompt=call.negative_prompt, true_cfg_scale=1.5)
    else:
        args["guidance_scale"] = call.guidance
        if call.negative_prompt:
            args["negative_prompt"] = call.negative_prompt
    try:
        with _pipeline_sizes(model, h * w), ctx.pipeline_run(pipe), torch.no_grad():
            out = pipe(**args)
    except BaseException:
        from backend.models.manager.memory import release_memory

        release_memory(model.device)  # a cancelled or failed run gives its activations back
        raise
    result = np.asarray(out.images[0], dtype=np.float32)
    if result.shape[:2] != (h, w):
        from backend.imaging import resize

        result = resize(result, w, h)  # InstructPix2Pix rounds sides down to multiples of 8
    return result
