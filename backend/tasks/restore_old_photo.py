"""The old-photo chain: scratches and dust found, filled, noise removed, faces restored,
colour added and the photo enlarged, each stage optional, each stage's image its own output.

Steps: for each stage that is on: 1. its model: the one its parameter names (loaded by the
executor), else the installed default for the stage, found in the caller's registry; a stage
with no model installed is skipped and said so in the details, 2. the stage's own task code
(backend.tasks.defects, inpaint, denoise, face_restore, colorize, upscale) on the previous
stage's image, 3. its image kept as the stage's output. The last output is the final photo.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.tasks import colorize as colorize_task
from backend.tasks import defects as defects_task
from backend.tasks import denoise as denoise_task
from backend.tasks import face_restore as face_task
from backend.tasks import inpaint as inpaint_task
from backend.tasks import upscale as upscale_task
from backend.tasks.context import TaskContext
from backend.tasks.spec import (
    Limits,
    ModelSlot,
    Output,
    OutputSpec,
    Preset,
    TaskInputs,
    TaskResult,
    TaskSpec,
    param,
)
from backend.tasks.upscale import DEFAULT_MAX_OUTPUT_PIXELS

#: the stages in the order they run, with the parameter naming each one's model
STAGES = ("defects", "inpaint", "denoise", "faces", "colorize", "upscale")
MODEL_PARAMS = {
    "inpaint": "inpaint_model",
    "denoise": "denoise_model",
    "faces": "face_model",
    "colorize": "colorize_model",
    "upscale": "upscale_model",
}
#: the share of the progress bar each stage takes when it runs
WEIGHTS = {"defects": 1, "inpaint": 4, "denoise": 3, "faces": 4, "colorize": 3, "upscale": 5}
OUTPUTS = (
    OutputSpec("defects", "Scratches and dust", kind="mask"),
    OutputSpec("inpainted", "Scratches filled"),
    OutputSpec("denoised", "Denoised"),
    OutputSpec("faces", "Faces restored"),
    OutputSpec("colorized", "Colorized"),
    OutputSpec("upscaled", "Upscaled"),
)
OUTPUT_OF = dict(zip(STAGES, (o.name for o in OUTPUTS), strict=True))


def _model_param(default_slot: ModelSlot, label: str, help_text: str, flag: str) -> Any:
    return param(
        None,
        label,
        help=help_text,
        widget="model",
        folders=default_slot.folders,
        purposes=default_slot.purposes,
        none_label="the first installed (the stage is skipped when there is none)",
        flags=(flag,),
        advanced=True,
    )


#: the upscale stage runs super-resolution models only (a restoration model is for denoise)
UPSCALE_SLOT = ModelSlot(("upscale_models",), ("SR",), default=upscale_task.SPEC.model.default)


@dataclass
class RestoreOldPhotoParams:
    defects: bool = param(True, "Find scratches and dust", help="Propose a mask of the damage.")
    sensitivity: float = param(
        0.5,
        "Damage sensitivity",
        help="How faint a scratch or speck may be and still be found.",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        widget="slider",
    )
    inpaint: bool = param(True, "Fill scratches and dust", help="Inpaint what was found.")
    inpaint_model: str | None = _model_param(
        inpaint_task.SPEC.model, "Inpaint model", "LaMa or MAT, in inpaint/.", "--inpaint-model"
    )
    denoise: bool = param(True, "Remove noise", help="Remove grain and noise.")
    denoise_model: str | None = _model_param(
        denoise_task.SPEC.model,
        "Denoise model",
        "A restoration model (SCUNet, NAFNet, DnCNN, ...) in upscale_models/.",
        "--denoise-model",
    )
    denoise_strength: float = param(
        0.8,
        "Denoise strength",
        help="How much of the denoised image shows over the original.",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        widget="slider",
    )
    faces: bool = param(True, "Restore faces", help="Restore every face found.")
    face_model: str | None = _model_param(
        face_task.SPEC.model,
        "Face model",
        "GFPGAN, CodeFormer or RestoreFormer, in facerestore_models/.",
        "--face-model",
    )
    face_fidelity: float = param(
        0.7,
        "Face fidelity",
        help="CodeFormer: 0 restores the most, 1 stays closest to the photo's face.",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        widget="slider",
    )
    face_strength: float = param(
        0.8,
        "Face strength",
        help="How much of each restored face shows over the original.",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        widget="slider",
    )
    colorize: bool = param(
        True, "Colorize", help="Add colour to a black-and-white photo (a colour one is kept)."
    )
    colorize_model: str | None = _model_param(
        colorize_task.SPEC.model, "Colorize model", "DDColor, in colorization/.", "--colorize-model"
    )
    saturation: float = param(
        1.0,
        "Saturation",
        help="How strong the added colours are.",
        minimum=0.0,
        maximum=2.0,
        step=0.05,
        widget="slider",
    )
    upscale: bool = param(True, "Upscale", help="Enlarge the photo last.")
    upscale_model: str | None = _model_param(
        UPSCALE_SLOT,
        "Upscale model",
        "A super-resolution model in upscale_models/.",
        "--upscale-model",
    )
    scale: float | None = param(
        None,
        "Scale",
        help="How much larger the final photo is.",
        minimum=1.0,
        maximum=8.0,
        step=0.5,
        unit="x",
        none_label="the upscale model's own",
        flags=("-s", "--scale"),
    )
    max_output_pixels: int = param(DEFAULT_MAX_OUTPUT_PIXELS, "Largest result", internal=True)

    def validate(self) -> None:
        defects_task.DefectParams(sensitivity=self.sensitivity).validate()
        denoise_task.DenoiseParams(strength=self.denoise_strength).validate()
        face_task.FaceRestoreParams(
            fidelity=self.face_fidelity, strength=self.face_strength
        ).validate()
        colorize_task.ColorizeParams(saturation=self.saturation).validate()
        upscale_task.UpscaleParams(scale=self.scale).validate()


@dataclass
class Stage:
    """One stage's model, or why the stage does not run."""

    name: str
    model: Any = None
    entry: Any = None
    skipped: str = ""


def stage_slot(stage: str) -> ModelSlot:
    return {
        "inpaint": inpaint_task.SPEC.model,
        "denoise": denoise_task.SPEC.model,
        "faces": face_task.SPEC.model,
        "colorize": colorize_task.SPEC.model,
        "upscale": UPSCALE_SLOT,
    }[stage]


def default_entry(stage: str, registry: Any) -> Any:
    """The installed model the stage runs when none is named, or None."""
    from backend.model_choice import default_entry as slot_default

    if registry is None:
        return None
    entries = registry.entries()
    if stage == "denoise":  # only models that keep the size denoise
        entries = [e for e in entries if (e.output_scale or e.scale) == 1]
    return slot_default(stage_slot(stage), entries)


def find_models(ctx: TaskContext, inputs: TaskInputs, params: Any) -> dict[str, Stage]:
    stages = {}
    for stage in STAGES:
        if not getattr(params, stage):
            stages[stage] = Stage(stage, skipped="turned off")
            continue
        key = MODEL_PARAMS.get(stage)
        if key is None:
            stages[stage] = Stage(stage)
            continue
        named = inputs.models.get(key)
        if named is not None:
            stages[stage] = Stage(stage, named, named.entry)
            continue
        entry = default_entry(stage, ctx.registry)
        if entry is None:
            folder = stage_slot(stage).folders[0]
            stages[stage] = Stage(stage, skipped=f"no model installed (it looks in {folder}/)")
        else:
            stages[stage] = Stage(stage, entry=entry)
    return stages


def run(ctx: TaskContext, inputs: TaskInputs, params: RestoreOldPhotoParams) -> TaskResult:
    params.validate()
    stages = find_models(ctx, inputs, params)
    on = [s for s in STAGES if not stages[s].skipped]
    total = sum(WEIGHTS[s] for s in on) or 1
    image, holes = inputs.image, None
    outputs: list[Output] = []
    notes: dict[str, str] = {s: stages[s].skipped for s in STAGES if stages[s].skipped}
    done = 0.0
    seconds: dict[str, float] = {}
    for name in on:
        stage = stages[name]
        sub = ctx.span(done / total, (done + WEIGHTS[name]) / total, name)
        done += WEIGHTS[name]
        ctx.check_cancel()
        start = time.perf_counter()
        result, note = _run_stage(name, stage, sub, image, holes, inputs.mask, params)
        # what each stage cost, so a user (and the benchmark) sees which one to turn off
        seconds[name] = round(time.perf_counter() - start, 2)
        if note:
            notes[name] = note
        if result is None:
            continue
        if name == "defects":
            holes = result
        else:
            image = result
        spec = next(o for o in OUTPUTS if o.name == OUTPUT_OF[name])
        outputs.append(Output(spec.name, result, spec.title))
        sub.progress(1.0, name)
    ctx.progress(1.0, "done")
    details = {
        "stages": [o.name for o in outputs],
        "notes": notes,
        "models": {s: stages[s].entry.name for s in on if stages[s].entry is not None},
        "seconds": seconds,
    }
    if not outputs:
        return TaskResult([], details, nothing_found=True, message="No stage ran: " + _why(notes))
    return TaskResult(outputs, details, message=_why(notes) if notes else "")


def _why(notes: dict[str, str]) -> str:
    return "; ".join(f"{stage}: {note}" for stage, note in notes.items()) + "."


def _run_stage(
    name: str,
    stage: Stage,
    ctx: TaskContext,
    image: np.ndarray,
    holes: np.ndarray | None,
    selection: np.ndarray | None,
    params: RestoreOldPhotoParams,
) -> tuple[np.ndarray | None, str]:
    """(the stage's image, or None when it had nothing to do; a note)."""
    if name == "defects":
        mask, info = defects_task.run(
            image, defects_task.DefectParams(sensitivity=params.sensitivity), ctx, selection
        )
        return mask, f"{info['flagged'] * 100:.2f}% of the pixels marked"
    if name == "inpaint" and (holes is None or not holes.any()):
        return None, "nothing to fill (no scratch or dust marked)"
    if name == "colorize":
        colours = image.shape[2] - (image.shape[2] in (2, 4))
        if colorize_task.monochrome_kind(image[..., :colours]) == "colour":
            return None, "the photo is already in colour"
    with _loaded(ctx, stage) as model:
        if name == "inpaint":
            out, _ = inpaint_task.run(image, holes, model, inpaint_task.InpaintParams(), ctx)
            return out, ""
        if name == "denoise":
            p = denoise_task.DenoiseParams(
                strength=params.denoise_strength, max_output_pixels=params.max_output_pixels
            )
            denoise_task.check_scale(model.entry.name, model.scale)
            return denoise_task.run(ctx, TaskInputs(image, models={"model": model}), p), ""
        if name == "faces":
            p = face_task.FaceRestoreParams(
                fidelity=params.face_fidelity, strength=params.face_strength
            )
            models = ctx.models
            detector = models.detector(model.device) if hasattr(models, "detector") else None
            found = face_task.run(
                image, model, p, progress=ctx, cancel=ctx.cancel, detector=detector
            )
            return found.pixels, found.message
        if name == "colorize":
            out, _ = colorize_task.run(
                image, model, colorize_task.ColorizeParams(params.saturation), ctx
            )
            return out, ""
        p = upscale_task.UpscaleParams(
            scale=params.scale, max_output_pixels=params.max_output_pixels
        )
        return upscale_task.run(image, model, p, progress=ctx, cancel=ctx.cancel), ""


@contextmanager
def _loaded(ctx: TaskContext, stage: Stage) -> Iterator[Any]:
    """The stage's model: the executor's, or loaded from the job's model store and pinned
    there while the stage runs."""
    if stage.model is not None:
        yield stage.model
        return
    models = ctx.models
    ctx.progress(0.0, f"loading {stage.entry.name}")
    with models.pinned(stage.entry) if hasattr(models, "pinned") else nullcontext():
        yield models.get(stage.entry)


def prepare(params: RestoreOldPhotoParams, inputs: TaskInputs, entry: Any, limits: Limits) -> None:
    params.max_output_pixels = limits.max_output_pixels


def summarize(details: dict[str, Any]) -> list[str]:
    lines = [f"stages: {', '.join(details.get('stages', [])) or 'none'}"]
    for stage, note in details.get("notes", {}).items():
        lines.append(f"{stage}: {note}")
    seconds = details.get("seconds") or {}
    if seconds:
        lines.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return lines


PRESETS = (
    Preset(
        "gentle",
        "Gentle",
        "For a print in fair shape: only clear damage is filled, and noise and faces are "
        "blended in partly, so the photo keeps its age.",
        {
            "sensitivity": 0.35,
            "denoise_strength": 0.5,
            "face_strength": 0.6,
            "face_fidelity": 0.8,
        },
    ),
    Preset(
        "thorough",
        "Badly damaged",
        "For a worn print: fainter scratches and dust are found, and noise removal and "
        "faces apply fully.",
        {
            "sensitivity": 0.7,
            "denoise_strength": 1.0,
            "face_strength": 1.0,
            "face_fidelity": 0.5,
        },
    ),
    Preset(
        "own-size",
        "Keep the size",
        "Every stage but the upscale: the photo stays its own size, which is also quicker.",
        {"upscale": False},
    ),
)


SPEC = TaskSpec(
    id="restore-old-photo",
    title="Restore old photo",
    help="The old-photo chain: find scratches and dust, fill them, remove noise, restore "
    "faces, colorize a black-and-white photo and upscale; each stage optional, each stage's "
    "image its own layer.",
    params=RestoreOldPhotoParams,
    run=run,
    prepare=prepare,
    outputs=OUTPUTS,
    resizes=True,
    final_last=True,  # the stages in order, the finished photo last
    summarize=summarize,
    group="restore",
    order=60,
    presets=PRESETS,
)
