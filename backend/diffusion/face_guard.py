"""Faces keep who they are when a diffusion task refines the picture around them.

People notice a changed face long before anything else: even at strength 0.3 an SD model
redraws eyes, mouth and jaw a little, and over a tiled upscale each tile does so on its own.
Two remedies, chosen with `face_protection`:

  lower    (the default) the faces found are refined at `face_strength` times the strength
           (0.5: half), through the same soft denoise mask as a selection (differential
           diffusion): the face keeps its features, its skin still loses the JPEG blocks, and
           the edge between face and background is a smooth ramp, not a seam
  restore  the whole image is refined as it is, then the face task restores each face with
           a face model (GFPGAN, CodeFormer, ...) from facerestore_models/, named or the first
           installed. Without one the result is returned with a note, not an error
  off      faces are refined like everything else (to redraw a face on purpose)

Why "lower" by default: it needs no further model, costs one face detection (well under a
second, CPU), does nothing to a picture without faces, and never fails: a missing detector
only adds a note. "Restore" replaces the face with what a face model believes it looks
like, which changes identity in its own way and needs a download, so it is a choice.

Faces are found once, on the input (BlazeFace and the face mesh, backend/faces/detect.py),
never on the refined image: a refine must not decide which faces it keeps, and the input is
smaller than an upscaled result. For "lower" each face becomes a soft ellipse a little larger
than the detector's box (forehead to chin, cheek to cheek), full inside 80% of its radii and
fading to nothing at 125%; for "restore" the face task is handed these detections, scaled to
the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from backend.tasks.spec import param

log = logging.getLogger("restora.diffusion")

FACE_MODES = ("off", "lower", "restore")
#: the detector's box grown to the whole face (it spans brows to chin, not the forehead)
GROW_X, GROW_Y = 1.2, 1.35
#: the box centre moves up by this share of its height: the grown ellipse takes the forehead
LIFT = 0.05
#: the weight is 1 inside this share of the ellipse's radii and 0 beyond the outer share
INNER, OUTER = 0.8, 1.25
#: faces narrower than this (input pixels) are left alone: too small to lose an identity
MIN_FACE = 16
SCORE = 0.5


@dataclass
class FaceParams:
    face_protection: str = param(
        "lower",
        "Faces",
        help="Keep faces recognisable: lower refines them at a fraction of the strength, "
        "restore runs a face model on them afterwards, off refines them like the rest.",
        choices=FACE_MODES,
        choice_labels=("off", "lower the strength in faces", "restore faces afterwards"),
    )
    face_strength: float = param(
        0.5,
        "Strength in faces",
        help="With lower: the share of the strength used inside faces (0 keeps them as "
        "they are, 1 is the same as off).",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        advanced=True,
    )
    face_model: str | None = param(
        None,
        "Face model",
        help="With restore: the face model from facerestore_models.",
        widget="model",
        folders=("facerestore_models",),
        purposes=("FaceSR",),
        none_label="the first installed",
        advanced=True,
    )


@dataclass
class Faces:
    """The faces found, as boxes in the working image's pixels (x0, y0, x1, y1)."""

    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    note: str = ""
    #: the detector's faces (backend.faces.detect.DetectedFace), for the face task
    detections: list[Any] = field(default_factory=list)

    def scaled(self, sx: float, sy: float) -> Faces:
        """The faces of an image resized by (sx, sy): boxes by their edges, points by their
        pixel centres."""
        boxes = [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in self.boxes]
        return Faces(boxes, self.note, [_scaled_face(f, sx, sy) for f in self.detections])

    def weight(self, rect: tuple[int, int, int, int]) -> np.ndarray | None:
        """How much of each pixel of `rect` (top, bottom, left, right) is face, 0..1 float32;
        None when no face reaches it (the common case: no work, no change)."""
        top, bottom, left, right = rect
        out: np.ndarray | None = None
        for x0, y0, x1, y1 in self.boxes:
            ax, ay = (x1 - x0) / 2 * GROW_X, (y1 - y0) / 2 * GROW_Y
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - LIFT * (y1 - y0)
            reach_x, reach_y = ax * OUTER, ay * OUTER
            if cx + reach_x < left or cx - reach_x > right or cy + reach_y < top:
                continue
            if cy - reach_y > bottom:
                continue
            yy = np.arange(top, bottom, dtype=np.float32)[:, None] + 0.5
            xx = np.arange(left, right, dtype=np.float32)[None, :] + 0.5
            radius = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
            face = np.clip((OUTER - radius) / (OUTER - INNER), 0.0, 1.0).astype(np.float32)
            out = face if out is None else np.maximum(out, face)
        return out

    def strength_scale(
        self, rect: tuple[int, int, int, int], face_strength: float
    ) -> np.ndarray | None:
        """The factor each pixel's strength is multiplied by: 1 outside faces, face_strength
        inside them; None when no face reaches `rect`."""
        w = self.weight(rect)
        if w is None:
            return None
        return (1.0 - (1.0 - face_strength) * w).astype(np.float32)


def find_faces(ctx: Any, pixels: np.ndarray) -> Faces:
    """The faces of an input image (any depth and channels); a detector that cannot run gives
    no faces and a note, never an error: protection is a courtesy, not the task."""
    from backend.errors import ModelNotFoundError
    from backend.imaging import split_alpha

    colour, _ = split_alpha(pixels)
    rgb = colour if colour.shape[2] == 3 else np.repeat(colour[..., :1], 3, axis=2)
    if rgb.dtype != np.uint8:
        rgb = (rgb >> 8).astype(np.uint8)
    try:
        detector = _detector(ctx)
        found = detector.detect_all(
            np.ascontiguousarray(rgb), min_size=MIN_FACE, score_threshold=SCORE
        )
    except (ModelNotFoundError, ImportError, OSError) as exc:
        log.info("faces not protected: %s", exc)
        return Faces(note=f"faces were not protected: the face detector could not run ({exc})")
    return Faces([tuple(float(v) for v in f.box) for f in found.faces], "", list(found.faces))


def _scaled_face(face: Any, sx: float, sy: float) -> Any:
    def points(p: np.ndarray) -> np.ndarray:
        out = np.array(p, dtype=np.float64, copy=True)
        out[:, 0] = (out[:, 0] + 0.5) * sx - 0.5
        out[:, 1] = (out[:, 1] + 0.5) * sy - 0.5
        if out.shape[1] > 2:
            out[:, 2:] *= (sx + sy) / 2
        return out

    x0, y0, x1, y1 = face.box
    return replace(
        face,
        box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy),
        landmarks5=points(face.landmarks5),
        keypoints6=points(face.keypoints6),
        mesh=points(face.mesh),
    )


class _KnownFaces:
    """A detector that answers with faces found before (on the input, scaled to the result)."""

    def __init__(self, faces: list[Any]) -> None:
        self.faces = faces

    def detect_all(self, _image: np.ndarray, *_args: Any, **_kwargs: Any) -> Any:
        from backend.faces.detect import FaceDetections

        return FaceDetections(list(self.faces), [])


def _detector(ctx: Any) -> Any:
    models = getattr(ctx, "models", None)
    if models is not None and hasattr(models, "detector"):
        return models.detector()
    from backend.faces.detect import shared_detector

    return shared_detector("auto")


def restore_faces(
    ctx: Any, inputs: Any, pixels: np.ndarray, faces: Faces, details: dict[str, Any]
) -> np.ndarray:
    """`pixels` with each of `faces` (found on the input, scaled to `pixels`) restored by the
    job's face model (named, or the first installed); without one, `pixels` as they are and
    a note in `details`."""
    if faces.note:
        details.setdefault("notes", []).append(faces.note)
        return pixels
    if not faces.detections:
        details["faces_restored"] = 0
        return pixels
    named = inputs.models.get("face_model")
    if named is not None:
        return _restore(ctx, named, pixels, faces, details)
    entry = _default_face_entry(ctx)
    if entry is None:
        details.setdefault("notes", []).append(
            "faces were not restored: no face model is installed (it looks in "
            "facerestore_models/; GFPGAN v1.4 is in the catalog)"
        )
        return pixels
    models = ctx.models
    with models.pinned(entry):
        return _restore(ctx, models.get(entry), pixels, faces, details)


def _default_face_entry(ctx: Any) -> Any:
    from backend.model_choice import default_entry
    from backend.tasks import face_restore

    registry = getattr(ctx, "registry", None)
    if registry is None or getattr(ctx, "models", None) is None:
        return None
    return default_entry(face_restore.SPEC.model, registry.entries())


def _restore(
    ctx: Any, model: Any, pixels: np.ndarray, faces: Faces, details: dict[str, Any]
) -> np.ndarray:
    from backend.tasks import face_restore

    result = face_restore.run(
        pixels, model, face_restore.FaceRestoreParams(), progress=ctx, cancel=ctx.cancel,
        detector=_KnownFaces(faces.detections),
    )  # fmt: skip
    details["faces_restored"] = result.restored_count
    details["face_model"] = getattr(model.entry, "name", "")
    if result.message and (result.restored_count == 0 or "Skipped" in result.message):
        details.setdefault("notes", []).append(result.message)  # only what went wrong
    return result.pixels
