"""`restora faces` end to end: a real photo, a face model from the models folder, the offline
detector; no face, and the wrong kind of model, in plain words."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_runner import restora
from tests.model_zoo import save_tiny


@pytest.fixture
def models(face_models: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    (root / "facerestore_models").mkdir(parents=True)
    src = face_models / "facerestore_models" / "random-restoreformer.safetensors"
    shutil.copy(src, root / "facerestore_models" / src.name)
    save_tiny("compact", root, file_name="tiny-x4")
    return root


def test_faces_of_a_real_photo_are_restored(
    models: Path, astronaut: np.ndarray, tmp_path: Path
) -> None:
    src, out = tmp_path / "photo.png", tmp_path / "out.png"
    Image.fromarray(astronaut).save(src)
    result = restora(
        "faces", src, "-o", out, "--model", "random-restoreformer", "--models-dir", models
    )
    assert result.returncode == 0, result.stderr
    assert "model random-restoreformer (RestoreFormer) on cpu" in result.stderr
    assert "score" in result.stderr and ": restored" in result.stderr
    assert "Restored 1 face." in result.stderr
    restored = np.asarray(Image.open(out))
    assert restored.shape == astronaut.shape
    changed = np.any(restored != astronaut, axis=2)
    ys, xs = np.nonzero(changed)
    # only the face changed: the rest of the photo is bit-identical
    assert 0.01 < changed.mean() < 0.2 and 150 < xs.mean() < 270 and 50 < ys.mean() < 170


def test_background_upscale_with_the_faces(
    models: Path, astronaut: np.ndarray, tmp_path: Path
) -> None:
    src, out = tmp_path / "small.png", tmp_path / "big.png"
    Image.fromarray(np.ascontiguousarray(astronaut[::2, ::2])).save(src)
    result = restora(
        "faces", src, "-o", out, "-u", "tiny-x4", "-s", "2", "--models-dir", models, "-q"
    )
    assert result.returncode == 0, result.stderr
    assert np.asarray(Image.open(out)).shape == (512, 512, 3)


def test_no_face_writes_nothing_and_says_so(models: Path, tmp_path: Path) -> None:
    from skimage import data

    src, out = tmp_path / "coffee.png", tmp_path / "out.png"
    Image.fromarray(data.coffee()).save(src)
    result = restora("faces", src, "-o", out, "--models-dir", models, "-q")
    assert result.returncode == 0, result.stderr
    assert "No face found in the image." in result.stderr and "was not written" in result.stderr
    assert not out.exists()


def test_an_upscaler_is_not_a_face_model(models: Path, astronaut: np.ndarray, tmp_path: Path):
    src = tmp_path / "photo.png"
    Image.fromarray(astronaut).save(src)
    result = restora("faces", src, "-m", "tiny-x4", "--models-dir", models)
    assert result.returncode == 2
    assert "'tiny-x4' is a SR model" in result.stderr
    assert "Restore faces cannot run" in result.stderr


def test_without_a_face_model_it_says_what_to_install(
    astronaut: np.ndarray, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-models"
    (empty / "facerestore_models").mkdir(parents=True)
    src = tmp_path / "photo.png"
    Image.fromarray(astronaut).save(src)
    result = restora("faces", src, "--models-dir", empty, env={"RESTORA_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "No model for Restore faces is installed" in result.stderr
    assert "restora models download gfpgan-v1.4" in result.stderr
