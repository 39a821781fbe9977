"""Edit by instruction: "colorize this black-and-white photo", "remove the scratches", with
Qwen-Image-Edit (2509, 2511, the first), FLUX.1 Kontext or InstructPix2Pix.

Steps: 1. check the request and pick the seed, 2. the region: with a selection, its bounding
box plus context around it; without one, the whole layer, 3. the region resized to the
working size (about the model's preferred 1 MP, sides multiples of its rounding) and edited,
the pipeline's own resizes set to that same size so nothing shifts, 4. back to the region's
exact size; the fidelity options: wavelet colour fix, the input's detail kept ("keep
structure"), and for colorizing only the chroma taken from the model (the input's luminance
within one level), 5. pasted into the layer (outside the region every pixel is the input's;
the executor then blends the selection in through its feathered mask), 6. report the seed
and how many reference images the model looked at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.diffusion import options
from backend.diffusion.colour import COLOUR_FIXES, fidelity_lines
from backend.errors import InvalidParameterError, OutOfMemoryError
from backend.tasks.context import TaskContext
from backend.tasks.spec import (
    ImageInput,
    Limits,
    ModelSlot,
    Output,
    OutputSpec,
    Preset,
    TaskInputs,
    TaskResult,
    TaskSpec,
    check_ranges,
    param,
)

EDIT_PURPOSE = "Edit"  # backend.diffusion.edit_families.EDIT_PURPOSE, without importing it
DEFAULT_INSTRUCTION = (
    "Restore this old photo: remove scratches, dust and stains, keep the people, their faces "
    "and the composition exactly as they are."
)
MISSING_HINT = (
    "Put an instruction-editing model in diffusion_models/: a Qwen-Image-Edit-2509 diffusers "
    "folder, or ComfyUI's split files (the transformer, .safetensors or .gguf, in "
    "diffusion_models/, qwen_2.5_vl_7b in text_encoders/, qwen_image_vae in vae/); FLUX.1 "
    "Kontext and InstructPix2Pix work too. Or download them from the catalog."
)
#: an instruction that asks for colour: "keep the luminance" is then on by default
COLORIZE_WORDS = re.compile(
    r"colou?ri[sz]|\badd(ing)?\s+(natural\s+)?colou?rs?\b|\bin\s+colou?r\b", re.IGNORECASE
)
LUMINANCE_MODES = ("auto", "on", "off")
RESOLUTIONS = ("model", "input")
#: "input" resolution: the region's own size, but never above this many times the model's area
MAX_INPUT_AREA_SHARE = 2.0
#: context around a selection: this share of its longer side, at least MIN_CONTEXT px
CONTEXT_SHARE = 0.25
MIN_CONTEXT = 32
#: how many reference images the task takes (Qwen-Image-Edit-2509 reads up to three
#: pictures: the layer is Picture 1)
REFERENCES = ("reference_1", "reference_2")


@dataclass
class EditParams:
    instruction: str = param(
        DEFAULT_INSTRUCTION,
        "Instruction",
        help="What to do to the image, in plain words.",
        widget="prompt",
        maximum=2000,
    )
    negative_prompt: str = param(
        "",
        "Negative prompt",
        help="What to keep out of the result (Qwen: used with guidance above 1).",
        widget="prompt",
        maximum=2000,
        advanced=True,
    )
    steps: int | None = param(
        None,
        "Steps",
        help="Sampler steps; 4 or 8 with a Lightning LoRA.",
        minimum=1,
        maximum=150,
        unit="steps",
        none_label="the model's own (Qwen 40, Kontext 28, InstructPix2Pix 20)",
    )
    guidance: float | None = param(
        None,
        "Guidance",
        help="How strongly the instruction is followed: Qwen's true CFG (a second pass with "
        "the negative prompt; 1 turns it off), Kontext's guidance, InstructPix2Pix's text "
        "guidance.",
        minimum=0.0,
        maximum=30.0,
        step=0.5,
        none_label="the model's own (Qwen 4, Kontext 2.5, InstructPix2Pix 7.5)",
        advanced=True,
    )
    image_guidance: float = param(
        1.5,
        "Image guidance",
        help="How closely InstructPix2Pix keeps to the input image.",
        minimum=0.0,
        maximum=10.0,
        step=0.1,
        advanced=True,
        applies_to=("InstructPix2Pix",),
    )
    seed: int | None = param(
        None,
        "Seed",
        help="The same seed, image and options give the same result; empty picks one and "
        "reports it.",
        minimum=0,
        maximum=options.MAX_SEED,
        widget="seed",
        none_label="random",
    )
    resolution: str = param(
        "model",
        "Working resolution",
        help="The size the model edits at; the result is always scaled back to the layer's "
        "(or the selection's) exact size.",
        choices=RESOLUTIONS,
        choice_labels=("the model's own (about 1 MP)", "the image's own, up to 2 MP"),
        advanced=True,
    )
    working_size: int | None = param(
        None,
        "Working size",
        help="The side of a square of the working area, overriding the resolution.",
        minimum=64,
        maximum=2048,
        step=32,
        unit="px",
        none_label="by the working resolution",
        advanced=True,
    )
    context: int | None = param(
        None,
        "Context around a selection",
        help="How much of the image around a selection the model sees.",
        minimum=0,
        maximum=2048,
        unit="px",
        none_label="a quarter of the selection's size, at least 32 px",
        advanced=True,
    )
    keep_luminance: str = param(
        "auto",
        "Keep the original luminance",
        help="Take only the colour from the model, so every pixel keeps its brightness "
        "(within one level): right for colorizing.",
        choices=LUMINANCE_MODES,
        choice_labels=("when the instruction asks for colour", "always", "never"),
    )
    colour_fix: str = param(
        "none",
        "Colour fix",
        help="Keep the input's colours: wavelet takes its low frequencies, AdaIN its mean and "
        "spread per channel (not for colorizing).",
        choices=COLOUR_FIXES,
        choice_labels=("wavelet", "AdaIN", "none"),
        advanced=True,
    )
    keep_structure: float = param(
        0.0,
        "Keep structure",
        help="How much of the input's fine detail (edges, texture) replaces the model's: 0 "
        "the model's own, 1 the input's detail under the model's tones and colours.",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        widget="slider",
        advanced=True,
    )
    lora: str | None = param(
        None,
        "LoRA",
        help="A LoRA from the loras folder (a Lightning LoRA for 4 or 8 steps), for this job.",
        widget="model",
        folders=("loras",),
        purposes=("LoRA",),
        none_label="none",
        advanced=True,
    )
    lora_weight: float = param(
        1.0,
        "LoRA weight",
        help="How strongly the LoRA applies.",
        minimum=-2.0,
        maximum=2.0,
        step=0.05,
        advanced=True,
    )

    def validate(self) -> None:
        check_ranges(self, "edit")
        if not self.instruction.strip():
            raise InvalidParameterError(
                "The instruction is empty.", "Say what to do, or choose a preset."
            )

    def chosen_seed(self) -> int:
        import secrets

        return self.seed if self.seed is not None else secrets.randbelow(options.MAX_SEED + 1)

    def keeps_luminance(self) -> bool:
        if self.keep_luminance == "auto":
            return bool(COLORIZE_WORDS.search(self.instruction))
        return self.keep_luminance == "on"


# --- sizes and regions ------------------------------------------------------------------------


def region_of(mask: np.ndarray, context: int | None, h: int, w: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the selection's box grown by the context."""
    ys, xs = np.nonzero(mask[:, :, 0] > 0)
    if ys.size == 0:
        return 0, h, 0, w
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    pad = (
        context
        if context is not None
        else max(MIN_CONTEXT, round(CONTEXT_SHARE * max(y1 - y0, x1 - x0)))
    )
    return max(y0 - pad, 0), min(y1 + pad, h), max(x0 - pad, 0), min(x1 + pad, w)


def working_area(params: EditParams, native: int, h: int, w: int) -> int:
    if params.working_size is not None:
        return params.working_size**2
    if params.resolution == "input":
        return int(min(h * w, MAX_INPUT_AREA_SHARE * native * native))
    return native * native


def resize_float(x: np.ndarray, h: int, w: int) -> np.ndarray:
    from backend.imaging import resize

    return x if x.shape[:2] == (h, w) else resize(x, w, h)


# --- memory -----------------------------------------------------------------------------------


def check_fits(entry: Any, host_free: int, device_free: int, on_cpu: bool) -> None:
    """Refuse a model that no tier can hold (sequential offload needs its weights in the
    computer's memory and one layer on the device), saying what it needs and what would fit."""
    from backend.diffusion.edit_families import FIT_HINTS
    from backend.models.manager.memory import megabytes

    need = int(getattr(entry, "memory_bytes", 0) or 0)
    if not need:
        return
    if on_cpu and "gguf" not in getattr(entry, "path", "").lower():
        need *= 2  # a CPU runs in fp32
    if need <= host_free + device_free:
        return
    where = f"{megabytes(host_free)} of memory free" + (
        f" and the GPU {megabytes(device_free)}" if device_free else ""
    )
    hint = FIT_HINTS.get(getattr(entry, "architecture", ""), "Use a smaller model.")
    raise OutOfMemoryError(
        f"Edit with {entry.name} ({entry.architecture}) needs {megabytes(need)}; this computer "
        f"has {where}.",
        f"{hint} Close other programs to free memory.",
    )


def prepare(params: EditParams, inputs: TaskInputs, entry: Any, limits: Limits) -> None:
    params.validate()
    if entry is None:
        return
    from backend.devices import free_memory, resolve_device

    device = resolve_device("auto")
    host = free_memory(resolve_device("cpu"))
    gpu = free_memory(device) if device.type != "cpu" else 0
    check_fits(entry, host, gpu, device.type == "cpu")


# --- the run ----------------------------------------------------------------------------------


def _rgb(colour: np.ndarray, top: float) -> np.ndarray:
    rgb = colour.astype(np.float32) / np.float32(top)
    return np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb


def keep_structure(out: np.ndarray, source: np.ndarray, share: float) -> np.ndarray:
    """`share` of the result's fine detail (its wavelet high band) replaced by the input's."""
    from backend.diffusion.colour import wavelet_split

    if share <= 0:
        return out
    high_out, _ = wavelet_split(out)
    high_in, _ = wavelet_split(source)
    return np.clip(out + share * (high_in - high_out), 0.0, 1.0)


def with_luminance(out: np.ndarray, luma_top: np.ndarray, top: float) -> np.ndarray:
    """The model's chroma over the input's luma (both in 0..top units), in gamut: the
    colorize task's own recombination."""
    from backend.tasks.colorize import chroma, ycbcr_to_rgb

    return ycbcr_to_rgb(luma_top, chroma(out) * np.float32(top), top)


def run(ctx: TaskContext, inputs: TaskInputs, params: EditParams) -> TaskResult:
    from backend.diffusion.colour import colour_fix, fidelity
    from backend.diffusion.edit_run import EditCall, edit, working_shape
    from backend.diffusion.lora_edit import applied_lora
    from backend.imaging import max_value, split_alpha
    from backend.tasks.colorize import luma

    # 1. check
    params.validate()
    model = inputs.model
    if model is None:
        raise InvalidParameterError("Edit needs an instruction-editing model.", MISSING_HINT)
    info = model.info
    seed = params.chosen_seed()
    pixels = inputs.image
    colour, alpha = split_alpha(pixels)
    top = float(max_value(pixels.dtype))
    h, w = colour.shape[:2]
    ctx.progress(0.01, "preparing")
    ctx.check_cancel()

    # 2. the region
    y0, y1, x0, x1 = 0, h, 0, w
    if inputs.mask is not None and np.any(inputs.mask):
        y0, y1, x0, x1 = region_of(inputs.mask, params.context, h, w)
    source = _rgb(colour[y0:y1, x0:x1], top)
    rh, rw = source.shape[:2]

    # 3. at the working size
    area = working_area(params, info.native, rh, rw)
    wh, ww = working_shape(rh, rw, area, info.multiple)
    steps = params.steps or info.steps
    guidance = info.guidance if params.guidance is None else params.guidance
    references = [
        _rgb(split_alpha(inputs.images[name])[0], float(max_value(inputs.images[name].dtype)))
        for name in REFERENCES
        if inputs.images.get(name) is not None
    ]
    details: dict[str, Any] = {
        "seed": seed, "family": model.family, "steps": steps, "guidance": guidance,
        "region": [x0, y0, rw, rh], "working_size": [ww, wh],
        # the editors name the new layer after what was asked, not after the task
        "label": short_label(params.instruction),
    }  # fmt: skip
    if references and info.max_images == 1:
        details["note"] = f"{model.family} takes one picture: the reference images were not used."
    references = references[: info.max_images - 1]
    # how many the model looked at: what the editors tell the user, and what shows that the
    # layers they picked arrived
    details["references"] = len(references)
    details["tier"] = options.place(ctx, model)
    call = EditCall(params.instruction, params.negative_prompt, steps, guidance,
                    params.image_guidance, seed)  # fmt: skip
    with applied_lora(model, inputs.models.get("lora"), params.lora_weight):
        out = edit(model, resize_float(source, wh, ww), references, call, ctx.span(0.05, 0.95))

    # 4. back to the region's size, and fidelity
    ctx.progress(0.96, "compositing")
    out = resize_float(out, rh, rw)
    out = colour_fix(out, source, params.colour_fix)
    out = keep_structure(out, source, params.keep_structure)
    if params.keeps_luminance():
        y = luma(_rgb(colour[y0:y1, x0:x1], 1.0))  # the input's own levels, not rounded
        patch = with_luminance(out, y, top)
        details["kept_luminance"] = True
    else:
        patch = out * np.float32(top)

    # 5. into the layer: outside the region every pixel is the input's
    result = _rgb(colour, 1.0)
    result[y0:y1, x0:x1] = patch
    result = np.clip(np.rint(result), 0, top).astype(pixels.dtype)
    details["fidelity"] = fidelity(result, _rgb(colour, 1.0).astype(result.dtype), top)
    if alpha is not None:
        result = np.concatenate([result, alpha], axis=2)
    ctx.progress(1.0, "done")
    return TaskResult([Output("result", result, "Edited")], details)


#: a layer name the editors' layer lists show without cutting it
LABEL_LIMIT = 48


def short_label(instruction: str, limit: int = LABEL_LIMIT) -> str:
    """The instruction as a layer name: one line, cut at a word with an ellipsis."""
    text = " ".join(instruction.split()).rstrip(".")
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def summarize(details: dict[str, Any]) -> list[str]:
    lines = fidelity_lines(details)
    if "working_size" in details:
        w, h = details["working_size"]
        lines.append(f"{details.get('family', '')} at {w}x{h}, {details.get('steps')} steps")
    if details.get("references"):
        count = details["references"]
        lines.append(f"{count} reference image{'s' if count != 1 else ''} used")
    if details.get("note"):
        lines.append(details["note"])
    return lines


def _preset(name: str, label: str, help_text: str, instruction: str, **more: Any) -> Preset:
    # every preset sets the instruction and both fidelity options, so switching presets never
    # keeps another preset's choice
    values = {"instruction": instruction, "keep_luminance": "auto", "colour_fix": "none"}
    values.update(more)
    return Preset(name, label, help_text, values)


PRESETS = (
    _preset(
        "restore",
        "Restore old photo",
        "Cleans an old photo as a whole: scratches, dust, stains and fading.",
        "Restore and clean this old photo: remove scratches, dust, stains and fading, keep "
        "the people, their faces and the composition exactly as they are.",
    ),
    _preset(
        "scratches",
        "Remove scratches and dust",
        "Removes scratches, dust and small spots; the colours stay the input's.",
        "Remove the scratches, dust and spots from this photo; change nothing else.",
        colour_fix="wavelet",
    ),
    _preset(
        "colorize",
        "Colorize",
        "Colorizes a black-and-white photo; only the colour comes from the model, the "
        "brightness of every pixel stays the photo's.",
        "Colorize this black-and-white photo naturally, with realistic colours.",
        keep_luminance="on",
    ),
    _preset(
        "artefacts",
        "Remove JPEG artefacts and noise",
        "Cleans compression blocks, ringing and noise; the colours stay the input's.",
        "Remove the JPEG artefacts and the noise from this photo; keep every detail.",
        colour_fix="wavelet",
    ),
    _preset(
        "faces",
        "Sharpen the faces",
        "Sharpens blurred faces; the rest of the photo as it is.",
        "Sharpen the faces in this photo and restore their detail; keep each person's "
        "identity and expression, change nothing else.",
        colour_fix="wavelet",
    ),
)

SPEC = TaskSpec(
    id="edit",
    title="Edit by instruction",
    help="Edit the image by a written instruction (restore this old photo, colorize it, "
    "remove scratches) with Qwen-Image-Edit, FLUX.1 Kontext or InstructPix2Pix; on a "
    "selection (with context around it) or the whole layer. Reports the seed.",
    params=EditParams,
    run=run,
    prepare=prepare,
    model=ModelSlot(
        folders=("diffusion_models", "checkpoints"),
        purposes=(EDIT_PURPOSE,),
        default=None,
        missing_hint=MISSING_HINT,
        catalog_task="instruct-edit",
    ),
    images=tuple(
        ImageInput(
            name,
            f"Reference image {i + 1} (Picture {i + 2})",
            help=f"Another picture the instruction can name as 'Picture {i + 2}' "
            "(Qwen-Image-Edit-2509 and 2511).",
        )
        for i, name in enumerate(REFERENCES)
    ),
    outputs=(OutputSpec("result", "Edited"),),
    requires=options.REQUIRES,
    install_hint=options.INSTALL_HINT,
    group="edit",
    order=60,
    summarize=summarize,
    presets=PRESETS,
)
