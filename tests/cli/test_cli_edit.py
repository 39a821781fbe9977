"""`restora edit` from the command line on a tiny random-weight Qwen-Image-Edit-2509 in
ComfyUI's split files: "colorize this black-and-white photo" on the whole layer and on a
selection, by instruction and by preset; --preset on every task that has presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.tasks.colorize import luma
from tests import edit_zoo
from tests.cli_runner import restora

FAST = ("--steps", "2", "--working-size", "64")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-edit-models")
    edit_zoo.qwen_split_files(root)
    return root


@pytest.fixture(scope="module")
def gray_photo(tmp_path_factory: pytest.TempPathFactory, face_crop: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("cli-edit-photo") / "old.png"
    Image.fromarray(face_crop[:60, :72].mean(axis=2).astype(np.uint8), "L").save(path)
    return path


def test_presets_are_offered_on_every_task_command_that_has_them() -> None:
    text = restora("edit", "--help").stdout
    assert "--preset" in text and "--instruction" in text
    for name in ("restore", "scratches", "colorize", "artefacts", "faces"):
        assert name in text
    assert "--preset" in restora("refine", "--help").stdout
    assert "--preset" not in restora("defects", "--help").stdout  # it has no presets


def test_colorize_the_whole_layer_by_preset(models: Path, gray_photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "colour.png"
    result = restora(
        "edit", gray_photo, "-o", out, "--models-dir", models, "--preset", "colorize",
        *FAST, "--seed", "9",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "seed 9" in result.stderr and "Qwen-Image-Edit-2509" in result.stderr
    source = np.asarray(Image.open(gray_photo)).astype(np.float32)
    coloured = np.asarray(Image.open(out))
    assert coloured.shape == (*source.shape, 3)
    assert np.abs(luma(coloured.astype(np.float32)) - source).max() <= 1.0


def test_colorize_a_selection_by_instruction(
    models: Path, gray_photo: Path, tmp_path: Path
) -> None:
    mask = np.zeros((60, 72), np.uint8)
    mask[15:40, 20:50] = 255
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    out = tmp_path / "part.png"
    result = restora(
        "edit", gray_photo, "-o", out, "--models-dir", models, "--mask", mask_path,
        "--instruction", "Colorize this black-and-white photo", *FAST, "--seed", "4",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    source = np.asarray(Image.open(gray_photo))
    written = np.asarray(Image.open(out))
    assert written.shape == (60, 72, 3)
    outside = mask == 0
    for c in range(3):  # outside the selection, the input's own pixels
        np.testing.assert_array_equal(written[..., c][outside], source[outside])
    inside = written[20:35, 25:45].astype(int)
    assert np.ptp(inside, axis=2).max() > 0  # colour inside the selection
