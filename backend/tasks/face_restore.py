"""Face restoration: find the faces, restore each aligned to the FFHQ template, paste it back.

Steps: 1. check the request, 2. find the faces (only those in the selection, when there is
one; a selection with no face found is itself taken as the face), 3. upscale the background
with an SR model when asked, 4. restore every face: align, run the model, match its colour,
warp back through a soft mask, 5. blend with the original by `strength` and assemble.

The result keeps the input's channels and bit depth. Pixels no face reaches are bit-identical
to the input (or to the upscaled background).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from backend.errors import InvalidParameterError
from backend.faces import align, paste
from backend.imaging import max_value, split_alpha
from backend.models.runtime import LoadedModel
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

#: faces smaller than this (pixels across) are skipped: too little to restore from
DEFAULT_MIN_FACE = 20
MAX_SCALE = 8.0


@dataclass
class FaceRestoreParams:
    fidelity: float = param(
        0.5,
        "Fidelity",
        help="CodeFormer's weight w: 0 restores the most, 1 stays closest to the input face.",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        widget="slider",
        flags=("-w", "--fidelity"),
        applies_to=("CodeFormer",),
    )
    strength: float = param(
        1.0,
        "Strength",
        help="How much of the restored face shows over the original (A1111's visibility).",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        widget="slider",
    )
    colour_match: bool = param(
        True,
        "Match colours",
        help="Give each restored face the colours of the original face (lightness, colour "
        "mean and spread in Lab).",
    )
    min_face: int = param(
        DEFAULT_MIN_FACE,
        "Smallest face",
        help="Faces smaller than this many pixels across are skipped and reported.",
        minimum=1,
        maximum=4096,
        unit="px",
        advanced=True,
    )
    threshold: float = param(
        0.5,
        "Detection threshold",
        help="How sure the detector must be to count a face.",
        minimum=0.01,
        maximum=0.99,
        step=0.05,
        advanced=True,
    )
    upscale_model: str | None = param(
        None,
        "Upscale model",
        help="Also upscale the whole image with this super-resolution model; the faces are "
        "then restored at the new size.",
        widget="model",
        folders=("upscale_models",),
        purposes=("SR", "Restoration"),
        none_label="none (faces only)",
        flags=("-u", "--upscale-model"),
        advanced=True,
    )
    scale: float | None = param(
        None,
        "Scale",
        help="With an upscale model: the output scale.",
        minimum=1.0,
        maximum=MAX_SCALE,
        step=0.5,
        unit="x",
        none_label="the model's own",
        flags=("-s", "--scale"),
        advanced=True,
    )
    max_output_pixels: int = param(DEFAULT_MAX_OUTPUT_PIXELS, "Largest result", internal=True)

    def validate(self) -> None:
        for name in ("fidelity", "strength"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidParameterError(f"{name} must be between 0 and 1, not {value}.", "")
        if not 0.0 < self.threshold < 1.0:
            raise InvalidParameterError(
                f"threshold must be above 0 and below 1, not {self.threshold}.", ""
            )
        if not 1 <= self.min_face <= 4096:
            raise InvalidParameterError(
                f"min_face must be between 1 and 4096 pixels, not {self.min_face}.", ""
            )
        if self.scale is not None and not 1.0 <= self.scale <= MAX_SCALE:
            raise InvalidParameterError(
                f"scale must be between 1 and {MAX_SCALE:g}, not {self.scale}.", ""
            )
        if self.scale is not None and not self.upscale_model:
            raise InvalidParameterError(
                "scale needs an upscale_model: the faces alone do not change the image's size.",
                "Name an upscale model, or leave scale out.",
            )


@dataclass
class FaceReport:
    """One face the detector found, in input pixel coordinates, and what became of it."""

    box: list[float]  # x0, y0, x1, y1
    score: float
    landmarks: list[list[float]]  # five (x, y): eyes, nose, mouth corners
    restored: bool
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaceRestoreResult:
    #: the whole image with the faces restored (upscaled when asked); input channels and dtype
    pixels: np.ndarray
    #: (H, W) float32: how much of each pixel comes from a restored face
    coverage: np.ndarray
    faces: list[FaceReport] = field(default_factory=list)
    message: str = ""
    #: the selection itself was restored as a face (no face was found in it)
    region_restored: bool = False

    @property
    def restored_count(self) -> int:
        return sum(f.restored for f in self.faces) + self.region_restored

    def details(self) -> dict[str, Any]:
        """What the server's result says about the faces."""
        return {
            "faces": [f.to_json() for f in self.faces],
            "restored": self.restored_count,
            "message": self.message,
        }

    def layer(self) -> np.ndarray:
        """The restored faces alone, transparent elsewhere (RGBA or gray + alpha), for a new
        layer over the original; an upscaled result is the whole image."""
        if self.coverage.shape != self.pixels.shape[:2]:
            raise ValueError("coverage and pixels differ in size")
        colour, alpha = split_alpha(self.pixels)
        top = max_value(self.pixels.dtype)
        cover = self.coverage if alpha is None else self.coverage * (alpha[..., 0] / top)
        alpha_px = np.rint(cover * top).astype(self.pixels.dtype)[..., None]
        colour = np.where(alpha_px > 0, colour, 0).astype(self.pixels.dtype)
        return np.concatenate([colour, alpha_px], axis=2)


ProgressSink = Callable[[float, str], None]


def run(
    pixels: np.ndarray,
    model: LoadedModel,
    params: FaceRestoreParams,
    progress: ProgressSink | None = None,
    cancel: Any = None,
    mask: np.ndarray | None = None,
    upscaler: LoadedModel | None = None,
    detector: Any = None,
) -> FaceRestoreResult:
    """Restore every face of (H, W, C) uint8/uint16 `pixels` with a face model."""
    from backend.faces.restorer import FaceRestorer

    # 1. check
    params.validate()
    if params.upscale_model and upscaler is None:
        raise InvalidParameterError("upscale_model was named but not loaded.", "")
    height, width = pixels.shape[:2]
    colour, alpha = split_alpha(pixels)
    rgb = _rgb(colour)
    rgb_float = _float(rgb)

    def report(fraction: float, stage: str) -> None:
        if cancel is not None:
            cancel.raise_if_cancelled()
        if progress:
            progress(min(fraction, 0.999), stage)

    # 2. faces
    report(0.0, "finding faces")
    found, skipped = _detect(detector, model.device, rgb, params)
    faces: list[FaceReport] = [_report(f, restored=False, note=note) for f, note in skipped]
    chosen = []
    selection = _selection_plane(mask, width, height)
    for f in found:
        if selection is not None and not _centre_selected(f.landmarks5, selection):
            faces.append(_report(f, False, "outside the selection"))
        else:
            chosen.append(f)
    to_faces = [align.align_affine(f.landmarks5) for f in chosen]
    user_region = None
    if not chosen and selection is not None:
        user_region = _selection_box(selection)
        if user_region is not None:
            to_faces = [align.box_affine(*user_region)]

    # 3. background
    base_px, out_alpha, scale = colour, alpha, 1.0
    if upscaler is not None:
        base_px, out_alpha, scale = _upscale_background(
            pixels, upscaler, params, report, has_faces=bool(to_faces)
        )
    base = _float(_rgb(base_px)) if upscaler is not None else rgb_float
    out_h, out_w = base.shape[:2]

    # 4. restore each face; progress and cancel also work between the model's layers
    share = (0.1, 0.95) if upscaler is None else (0.5, 0.95)
    step = (share[1] - share[0]) / max(len(to_faces), 1)
    current = {"start": share[0], "stage": ""}

    def within_face(fraction: float) -> None:
        report(current["start"] + step * fraction, current["stage"])

    restorer = FaceRestorer(model, on_layer=within_face)
    pasted = []
    for i, to_face in enumerate(to_faces):
        current.update(start=share[0] + step * i, stage=f"face {i + 1} of {len(to_faces)}")
        report(current["start"], current["stage"])
        crop = align.warp(rgb_float, to_face, align.FACE_SIZE, align.FACE_SIZE)
        restored = restorer.restore(crop, params.fidelity)
        if params.colour_match:
            restored = paste.match_colour(restored, crop)
        to_image = align.compose(align.scaled(scale), align.invert(to_face))
        face = paste.warp_back(restored, to_image, out_w, out_h)
        if face is not None:
            pasted.append(face)
    for f in chosen:
        faces.append(_report(f, True))

    # 5. blend and assemble
    report(0.97, "blending")
    blended, coverage = paste.composite(base, pasted, params.strength)
    result = _assemble(blended, coverage, base_px, out_alpha)
    faces.sort(key=lambda r: (r.box[1], r.box[0]))
    message = _message(faces, user_region is not None, selection is not None)
    if progress:
        progress(1.0, "done")
    return FaceRestoreResult(result, coverage, faces, message, bool(user_region and pasted))


def _detect(detector: Any, device: Any, rgb: np.ndarray, params: FaceRestoreParams) -> Any:
    """(faces to restore, [(face, why it was skipped)]); candidates the landmark model did
    not confirm as faces are false alarms, not skipped faces."""
    from backend.faces.detect import shared_detector

    detector = detector or shared_detector(device)
    if rgb.dtype != np.uint8:
        rgb = (rgb >> 8).astype(np.uint8)
    found = detector.detect_all(rgb, min_size=params.min_face, score_threshold=params.threshold)
    skipped = [(f, f.note) for f in found.skipped if f.skip_reason != "not_confirmed"]
    return found.faces, skipped


def _report(face: Any, restored: bool, note: str = "") -> FaceReport:
    landmarks = getattr(face, "landmarks5", None)
    return FaceReport(
        box=[round(float(v), 1) for v in face.box],
        score=round(float(face.score), 3),
        landmarks=[]
        if landmarks is None
        else [[round(float(x), 1), round(float(y), 1)] for x, y in landmarks],
        restored=restored,
        note=note,
    )


def _selection_plane(mask: np.ndarray | None, width: int, height: int) -> np.ndarray | None:
    if mask is None:
        return None
    plane = mask[..., 0] if mask.ndim == 3 else mask
    if plane.shape != (height, width):
        raise InvalidParameterError(
            f"The mask is {plane.shape[1]}x{plane.shape[0]} but the image is {width}x{height}.",
            "",
        )
    return plane


def _centre_selected(landmarks: np.ndarray, selection: np.ndarray) -> bool:
    x, y = np.asarray(landmarks, np.float64).mean(axis=0)
    xi = int(np.clip(round(x), 0, selection.shape[1] - 1))
    yi = int(np.clip(round(y), 0, selection.shape[0] - 1))
    return bool(selection[yi, xi] >= max_value(selection.dtype) / 2)


def _selection_box(selection: np.ndarray) -> tuple[float, float, float, float] | None:
    ys, xs = np.nonzero(selection)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _rgb(colour: np.ndarray) -> np.ndarray:
    """Grey pixels as RGB: the face models take three channels."""
    return colour if colour.shape[2] == 3 else np.repeat(colour, 3, axis=2)


def _float(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) / np.float32(max_value(pixels.dtype))


def _upscale_background(
    pixels: np.ndarray,
    upscaler: LoadedModel,
    params: FaceRestoreParams,
    report: ProgressSink,
    has_faces: bool,
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """The whole image upscaled with the SR model: its colour, its alpha, the exact scale."""
    from backend.tasks import upscale

    end = 0.5 if has_faces else 0.95

    def sink(fraction: float, stage: str) -> None:
        report(fraction * end, "upscaling background" if stage == "upscaling" else stage)

    up_params = upscale.UpscaleParams(
        scale=params.scale, max_output_pixels=params.max_output_pixels
    )
    big = upscale.run(pixels, upscaler, up_params, progress=sink)
    colour, alpha = split_alpha(big)
    return colour, alpha, big.shape[1] / pixels.shape[1]


def _assemble(
    blended: np.ndarray, coverage: np.ndarray, base: np.ndarray, alpha: np.ndarray | None
) -> np.ndarray:
    """Integer pixels: the blend where a face reaches, `base` (exactly) everywhere else."""
    top = max_value(base.dtype)
    if base.shape[2] == 1:
        blended = (blended @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    out = np.rint(np.clip(blended, 0.0, 1.0) * top).astype(base.dtype)
    out = np.where(coverage[..., None] > 0, out, base)
    if alpha is not None:
        out = np.concatenate([out, alpha], axis=2)
    return out


def _message(faces: list[FaceReport], user_region: bool, had_selection: bool) -> str:
    restored = sum(f.restored for f in faces)
    skipped = [f for f in faces if not f.restored]
    if user_region:
        return "No face was found in the selection, so the selection was restored as a face."
    if not faces:
        where = "the selection" if had_selection else "the image"
        return f"No face found in {where}."
    text = f"Restored {restored} face{'s' if restored != 1 else ''}."
    if skipped:
        notes = sorted({f.note for f in skipped if f.note})
        text += f" Skipped {len(skipped)} ({'; '.join(notes)})."
    return text


# --- the task --------------------------------------------------------------------------------


def prepare(params: FaceRestoreParams, inputs: TaskInputs, entry: Any, limits: Limits) -> None:
    params.max_output_pixels = limits.max_output_pixels


def run_task(ctx: TaskContext, inputs: TaskInputs, params: FaceRestoreParams) -> TaskResult:
    upscaler = inputs.models.get("upscale_model")
    model = inputs.model
    detector = ctx.models.detector(model.device) if hasattr(ctx.models, "detector") else None
    result = run(
        inputs.image,
        model,
        params,
        ctx,
        ctx.cancel,
        mask=inputs.mask,
        upscaler=upscaler,
        detector=detector,
    )
    # the faces alone as a layer over the original; an upscaled background is the whole image
    pixels = result.pixels if upscaler is not None else result.layer()
    return TaskResult(
        [Output("faces", pixels, overlay=upscaler is None)],
        result.details(),
        nothing_found=result.restored_count == 0 and upscaler is None,
        message=result.message,
    )


def summarize(details: dict[str, Any]) -> list[str]:
    """A line per face for the command line: where, how sure, and what became of it."""
    lines = []
    for face in details.get("faces", []):
        x0, y0, x1, y1 = face["box"]
        state = "restored" if face["restored"] else f"skipped: {face['note']}"
        lines.append(
            f"face at ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}), score {face['score']:.2f}: {state}"
        )
    return lines


PRESETS = (
    Preset(
        "natural",
        "Natural",
        "Keeps the person's own look: the restored face is blended in at 70%, and CodeFormer "
        "stays close to the photo.",
        {"strength": 0.7, "fidelity": 0.7, "colour_match": True},
    ),
    Preset(
        "strong",
        "Strong",
        "For blurred or damaged faces: the restored face shows fully, and CodeFormer "
        "restores as much as it can.",
        {"strength": 1.0, "fidelity": 0.3, "colour_match": True},
    ),
    Preset(
        "old-photo",
        "Old photo",
        "A face model made for damaged prints, shown almost fully.",
        {"strength": 0.9, "fidelity": 0.5, "colour_match": True},
        ("old-photo",),
    ),
)


SPEC = TaskSpec(
    id="face-restore",
    title="Restore faces",
    help="Restore every face in the photo with GFPGAN, CodeFormer or RestoreFormer. Each face "
    "is found, aligned to the model's template, restored and pasted back through a soft mask "
    "with its colours matched; with a selection, only the faces inside it.",
    params=FaceRestoreParams,
    run=run_task,
    prepare=prepare,
    summarize=summarize,
    model=ModelSlot(
        folders=("facerestore_models",),
        purposes=("FaceSR",),
        default=None,  # the first face model installed (GFPGAN before CodeFormer, ...)
        missing_hint="Put a face model (GFPGANv1.4.pth, codeformer.pth, RestoreFormer.pth) in "
        "the facerestore_models folder, or download GFPGAN v1.4 from the catalog.",
        catalog_task="face-restore",
    ),
    outputs=(OutputSpec("faces", "Restored faces"),),
    resizes=True,  # with an upscale model
    group="restore",
    order=20,
    command="faces",
    presets=PRESETS,
)
