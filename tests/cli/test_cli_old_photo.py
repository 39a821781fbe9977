"""The old-photo commands: `restora colorize`, `restora inpaint --mask`, `restora defects` and
`restora restore-old-photo`, run as a user runs them, on a real photograph, with
random-weight models in the users' folder layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_runner import restora
from tests.defect_samples import draw_defects
from tests.model_zoo import save_tiny


@pytest.fixture(scope="module")
def models(old_photo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-old-photo-models")
    (root / "colorization").mkdir()
    (root / "inpaint").mkdir()
    shutil.copy(
        old_photo_models / "colorization" / "random-ddcolor.safetensors", root / "colorization"
    )
    shutil.copy(old_photo_models / "inpaint" / "random-lama.safetensors", root / "inpaint")
    save_tiny("dncnn", root)
    return root


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A damaged black-and-white print: skimage's camera, 128x128, with scratches and dust."""
    from skimage import data

    damaged, _ = draw_defects(data.camera()[::4, ::4], seed=2)
    path = tmp_path_factory.mktemp("cli-scan") / "scan.png"
    Image.fromarray(damaged).save(path)
    return path


def test_restora_tasks_lists_the_old_photo_commands() -> None:
    text = restora("tasks").stdout
    for command in ("colorize", "inpaint", "defects", "restore-old-photo"):
        assert f"restora {command}" in text
    assert "--mask FILE" in restora("inpaint", "--help").stdout


def test_colorize_writes_a_colour_photo_with_the_scans_luminance(
    models: Path, scan: Path, tmp_path: Path
) -> None:
    out = tmp_path / "colour.png"
    result = restora("colorize", scan, "-o", out, "-p", "fp32", "--models-dir", models)
    assert result.returncode == 0, result.stderr
    assert "a gray image: colorized" in result.stderr
    gray = np.asarray(Image.open(scan)).astype(np.float64)
    colour = np.asarray(Image.open(out))
    assert colour.shape == (*gray.shape, 3)
    luma = colour.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(luma - gray).max() <= 1.0


def test_defects_then_inpaint_fills_only_the_marked_pixels(
    models: Path, scan: Path, tmp_path: Path
) -> None:
    mask, filled = tmp_path / "mask.png", tmp_path / "filled.png"
    result = restora("defects", scan, "-o", mask, "-q")
    assert result.returncode == 0, result.stderr
    marked = np.asarray(Image.open(mask))
    assert marked.dtype == np.uint8 and marked.shape == (128, 128) and marked.max() == 255
    result = restora(
        "inpaint", scan, "--mask", mask, "-o", filled, "-p", "fp32", "--models-dir", models
    )
    assert result.returncode == 0, result.stderr
    before, after = np.asarray(Image.open(scan)), np.asarray(Image.open(filled))
    holes = marked > 0
    assert np.array_equal(after[~holes], before[~holes])  # bit-identical outside the mask
    assert np.any(after[holes] != before[holes])


def test_inpaint_without_a_mask_is_refused(models: Path, scan: Path, tmp_path: Path) -> None:
    result = restora("inpaint", scan, "-o", tmp_path / "o.png", "--models-dir", models)
    assert result.returncode == 2 and "--mask" in result.stderr


def test_restore_old_photo_writes_each_stage_and_skips_what_has_no_model(
    models: Path, scan: Path, tmp_path: Path
) -> None:
    out = tmp_path / "restored.png"
    result = restora(
        "restore-old-photo", scan, "-o", out, "-p", "fp32", "--models-dir", models,
        "--no-faces",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "stages: defects, inpainted, denoised, colorized" in result.stderr
    assert "upscale: no model installed" in result.stderr
    timed = next(line for line in result.stderr.splitlines() if "time: defects " in line)
    assert all(f"{stage} " in timed for stage in ("inpaint", "denoise", "colorize"))
    written = sorted(p.name for p in tmp_path.iterdir())
    # the finished photo (the last stage that ran) under the name asked for, the stages beside
    assert written == [
        "restored-defects.png",
        "restored-denoised.png",
        "restored-inpainted.png",
        "restored.png",
    ]
    assert np.asarray(Image.open(tmp_path / "restored.png")).shape == (128, 128, 3)
    assert np.asarray(Image.open(tmp_path / "restored-defects.png")).ndim == 2  # the mask
