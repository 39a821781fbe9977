"""The task commands made from the specs: listed by `restora tasks`, options with the spec's
ranges, checked like the server checks them, and run through the same executor (a selection
with --mask, several outputs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.errors import InvalidParameterError
from backend.tasks import denoise
from tests.cli_runner import restora
from tests.model_zoo import save_tiny


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-task-models")
    save_tiny("dncnn", root, file_name="tiny-dncnn")
    save_tiny("compact", root, file_name="tiny-x4")
    return root


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory, face_crop: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("cli-task-photo") / "photo.png"
    Image.fromarray(np.ascontiguousarray(face_crop[:40, :48])).save(path)
    return path


def test_restora_tasks_lists_every_task_with_its_command() -> None:
    result = restora("tasks", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["task"]: r for r in json.loads(result.stdout)}
    assert {"upscale", "face-restore", "denoise"} <= set(rows)
    assert rows["face-restore"]["command"] == "restora faces"
    assert rows["denoise"]["available"] and rows["denoise"]["model_folders"] == ["upscale_models"]
    text = restora("tasks").stdout
    assert "restora denoise" in text and "Denoise" in text


def test_a_task_command_shows_the_specs_options_with_their_ranges() -> None:
    result = restora("denoise", "--help")
    assert result.returncode == 0
    assert "Denoise options" in result.stdout
    assert "--strength" in result.stdout and "between 0 and 1" in result.stdout
    assert "--jpeg-quality" in result.stdout and "--mask FILE" in result.stdout


def test_a_bad_value_is_refused_as_the_server_refuses_it(models: Path, photo: Path) -> None:
    with pytest.raises(InvalidParameterError) as server_side:
        denoise.SPEC.parse_params({"strength": 2.0})
    result = restora("denoise", photo, "--strength", "2", "--models-dir", models)
    assert result.returncode == 2
    assert server_side.value.message in result.stderr  # one parameter model for both
    assert not list(photo.parent.glob("*-restora*"))


def test_denoise_runs_and_strength_zero_gives_the_input_back(
    models: Path, photo: Path, tmp_path: Path
) -> None:
    out, same = tmp_path / "out.png", tmp_path / "same.png"
    result = restora("denoise", photo, "-o", out, "-m", "tiny-dncnn", "--models-dir", models)
    assert result.returncode == 0, result.stderr
    original = np.asarray(Image.open(photo))
    denoised = np.asarray(Image.open(out))
    assert denoised.shape == original.shape and np.any(denoised != original)
    result = restora("denoise", photo, "-o", same, "--strength", "0", "--models-dir", models, "-q")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(same)), original)


def test_a_mask_restores_only_the_selection_as_in_the_editors(
    models: Path, photo: Path, tmp_path: Path
) -> None:
    original = np.asarray(Image.open(photo))
    h, w = original.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    mask[10:30, 12:36] = 255
    mask_path, out = tmp_path / "mask.png", tmp_path / "out.png"
    Image.fromarray(mask).save(mask_path)
    result = restora(
        "upscale", photo, "-o", out, "--mask", mask_path, "--feather", "2",
        "-m", "tiny-x4", "--models-dir", models,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    restored = np.asarray(Image.open(out))
    assert restored.shape == original.shape  # a selection is restored in place (scale 1)
    far = np.ones((h, w), bool)
    far[6:34, 8:40] = False
    np.testing.assert_array_equal(restored[far], original[far])  # outside: the input itself
    assert np.any(restored[14:26, 16:32] != original[14:26, 16:32])


def test_a_mask_of_another_size_is_refused(models: Path, photo: Path, tmp_path: Path) -> None:
    mask_path = tmp_path / "small-mask.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(mask_path)
    result = restora(
        "denoise", photo, "-o", tmp_path / "o.png", "--mask", mask_path, "--models-dir", models
    )
    assert result.returncode == 2 and "must be the same size" in result.stderr
    assert "1 of 1 images failed" in result.stderr
