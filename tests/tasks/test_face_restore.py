"""The face-restore task on real photos: the real detector, random-weight face models loaded
through the registry, the paste-back, the selection rules and the background upscale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.errors import CancelledError, InvalidParameterError
from backend.models.registry import Registry
from backend.models.runtime import LoadedModel, load_model
from backend.tasks import face_restore
from backend.tasks.face_restore import FaceRestoreParams
from backend.tasks.upscale import CancelToken
from tests.model_zoo import save_tiny

#: where the astronaut's face is in skimage's 512x512 photo (eyes about y 100, mouth y 130)
FACE_BOX = (165, 55, 255, 160)


@pytest.fixture(scope="module")
def loaded(face_models: Path) -> dict[str, LoadedModel]:
    registry = Registry([face_models])
    return {
        key: load_model(registry.find(f"random-{key}"), device="cpu", precision="fp32")
        for key in ("gfpgan", "codeformer", "restoreformer")
    }


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.coffee())


def test_face_models_are_listed_with_their_purpose(face_models: Path) -> None:
    entries = {e.name: e for e in Registry([face_models]).entries()}
    for key, arch in (
        ("gfpgan", "GFPGAN"),
        ("codeformer", "CodeFormer"),
        ("restoreformer", "RestoreFormer"),
    ):
        entry = entries[f"random-{key}"]
        assert entry.usable, entry.reason
        assert (entry.folder, entry.purpose, entry.architecture) == (
            "facerestore_models",
            "FaceSR",
            arch,
        )
        assert "fp16" not in entry.dtypes and "bf16" in entry.dtypes  # none runs in fp16


def _inside(box: list[float], outer: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    return outer[0] <= (x0 + x1) / 2 <= outer[2] and outer[1] <= (y0 + y1) / 2 <= outer[3]


@pytest.mark.parametrize("key", ["gfpgan", "codeformer", "restoreformer"])
def test_every_family_restores_the_face_of_a_real_photo(
    key: str, loaded: dict[str, LoadedModel], astronaut: np.ndarray
) -> None:
    result = face_restore.run(astronaut, loaded[key], FaceRestoreParams())
    assert result.restored_count == 1
    (face,) = result.faces
    assert face.restored and _inside(face.box, FACE_BOX) and face.score > 0.5
    assert result.pixels.shape == astronaut.shape and result.pixels.dtype == np.uint8
    outside = result.coverage == 0
    # every pixel the face's mask does not reach is bit-identical; the face itself changed
    assert np.array_equal(result.pixels[outside], astronaut[outside])
    ys, xs = np.nonzero(result.coverage)
    assert 120 < xs.mean() < 300 and 40 < ys.mean() < 180
    assert np.abs(result.pixels.astype(int) - astronaut)[result.coverage > 0.9].mean() > 2
    assert "Restored 1 face" in result.message


def test_codeformer_fidelity_changes_the_face(
    loaded: dict[str, LoadedModel], astronaut: np.ndarray
) -> None:
    low = face_restore.run(astronaut, loaded["codeformer"], FaceRestoreParams(fidelity=0.0))
    high = face_restore.run(astronaut, loaded["codeformer"], FaceRestoreParams(fidelity=1.0))
    again = face_restore.run(astronaut, loaded["codeformer"], FaceRestoreParams(fidelity=1.0))
    assert not np.array_equal(low.pixels, high.pixels)
    assert np.array_equal(high.pixels, again.pixels)  # deterministic


def test_no_face_gives_a_message_and_changes_nothing(
    loaded: dict[str, LoadedModel], coffee: np.ndarray
) -> None:
    result = face_restore.run(coffee, loaded["restoreformer"], FaceRestoreParams())
    assert result.restored_count == 0 and result.faces == []
    assert result.message == "No face found in the image."
    assert np.array_equal(result.pixels, coffee)
    assert not result.layer()[..., 3].any()
    assert result.details() == {"faces": [], "restored": 0, "message": result.message}


def test_strength_zero_leaves_the_photo_as_it_was(
    loaded: dict[str, LoadedModel], astronaut: np.ndarray
) -> None:
    result = face_restore.run(astronaut, loaded["restoreformer"], FaceRestoreParams(strength=0))
    assert result.restored_count == 1
    assert np.array_equal(result.pixels, astronaut)


def test_only_faces_inside_the_selection_are_restored(
    loaded: dict[str, LoadedModel], astronaut: np.ndarray
) -> None:
    pair = np.ascontiguousarray(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1))
    mask = np.zeros((*pair.shape[:2], 1), np.uint8)
    mask[:, 512:] = 255  # the right half: the mirrored astronaut
    result = face_restore.run(pair, loaded["restoreformer"], FaceRestoreParams(), mask=mask)
    restored = [f for f in result.faces if f.restored]
    skipped = [f for f in result.faces if not f.restored]
    assert len(restored) == 1 and restored[0].box[0] > 512
    assert len(skipped) == 1 and skipped[0].note == "outside the selection"
    assert np.array_equal(result.pixels[:, :512], pair[:, :512])
    assert "Skipped 1 (outside the selection)" in result.message


def test_a_selection_with_no_face_is_restored_as_a_face(
    loaded: dict[str, LoadedModel], coffee: np.ndarray
) -> None:
    mask = np.zeros((*coffee.shape[:2], 1), np.uint8)
    mask[100:220, 200:300] = 255
    result = face_restore.run(coffee, loaded["restoreformer"], FaceRestoreParams(), mask=mask)
    assert result.region_restored and result.restored_count == 1
    assert "restored as a face" in result.message
    ys, xs = np.nonzero(result.coverage)
    # the square around the selection (120 px, centred on it) and nothing beyond
    assert xs.min() >= 190 and xs.max() <= 310 and ys.min() >= 100 and ys.max() < 220


def test_depth_and_alpha_are_kept(loaded: dict[str, LoadedModel], astronaut: np.ndarray) -> None:
    grey = (astronaut.astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint16) * 257
    alpha = np.full(grey.shape, 65535, np.uint16)
    alpha[:, :40] = 0
    pixels = np.stack([grey, alpha], axis=2)
    result = face_restore.run(pixels, loaded["restoreformer"], FaceRestoreParams())
    assert result.restored_count == 1
    assert result.pixels.shape == pixels.shape and result.pixels.dtype == np.uint16
    assert np.array_equal(result.pixels[..., 1], alpha)
    outside = result.coverage == 0
    assert np.array_equal(result.pixels[outside], pixels[outside])
    layer = result.layer()
    assert layer.shape == (512, 512, 2) and layer[..., 1].max() == 65535
    assert not layer[..., 1][outside].any()


def test_background_upscale_in_the_same_job(
    loaded: dict[str, LoadedModel], astronaut: np.ndarray, tmp_path: Path
) -> None:
    path = save_tiny("compact", tmp_path, file_name="tiny-x4")
    upscaler = load_model(Registry([tmp_path]).find("tiny-x4"), device="cpu", precision="fp32")
    small = np.ascontiguousarray(astronaut[::2, ::2])  # 256x256: the face is 45 px wide
    params = FaceRestoreParams(upscale_model=path.stem, scale=2.0)
    result = face_restore.run(small, loaded["restoreformer"], params, upscaler=upscaler)
    assert result.pixels.shape == (512, 512, 3)
    assert result.restored_count == 1
    ys, xs = np.nonzero(result.coverage)
    assert 120 < xs.mean() < 300 and 40 < ys.mean() < 180  # landmarks scaled with the image
    from backend.tasks import upscale

    background = upscale.run(small, upscaler, upscale.UpscaleParams(scale=2.0))
    outside = result.coverage == 0
    assert np.array_equal(result.pixels[outside], background[outside])


def test_bad_parameters_are_named(loaded: dict[str, LoadedModel], astronaut: np.ndarray) -> None:
    with pytest.raises(InvalidParameterError, match="fidelity"):
        face_restore.run(astronaut, loaded["codeformer"], FaceRestoreParams(fidelity=1.5))
    with pytest.raises(InvalidParameterError, match="scale needs an upscale_model"):
        FaceRestoreParams(scale=2.0).validate()
    with pytest.raises(InvalidParameterError, match="threshold"):
        FaceRestoreParams(threshold=0).validate()
    with pytest.raises(InvalidParameterError, match="min_face"):
        FaceRestoreParams(min_face=0).validate()


def test_an_upscaler_is_not_a_face_model(astronaut: np.ndarray, tmp_path: Path) -> None:
    save_tiny("compact", tmp_path, file_name="tiny-x4")
    upscaler = load_model(Registry([tmp_path]).find("tiny-x4"), device="cpu", precision="fp32")
    with pytest.raises(InvalidParameterError, match="not a face restoration model"):
        face_restore.run(astronaut, upscaler, FaceRestoreParams())


def test_cancel_stops_the_job(loaded: dict[str, LoadedModel], astronaut: np.ndarray) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        face_restore.run(astronaut, loaded["restoreformer"], FaceRestoreParams(), cancel=token)


def test_precision_choice_skips_what_a_family_cannot_run(
    face_models: Path, astronaut: np.ndarray, tmp_path: Path
) -> None:
    # GFPGAN reshapes its weights with .view(), which fails channels-last: the CPU precision
    # measurement must skip that candidate, not crash the job
    from backend.devices import choose_precision
    from backend.faces.restorer import FaceRestorer

    model = load_model(Registry([face_models]).find("random-gfpgan"), "cpu", "fp32")
    chosen = choose_precision(model.descriptor, model.device, "auto", tmp_path / "p.json")
    assert not chosen.channels_last and "fp32+nhwc" not in chosen.reason
    assert "fp32 " in chosen.reason
    face = np.random.default_rng(0).random((512, 512, 3), dtype=np.float32)
    assert FaceRestorer(model).restore(face).shape == (512, 512, 3)
