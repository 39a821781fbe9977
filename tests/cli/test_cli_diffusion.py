"""`restora refine` and `restora tiled-refine` from the command line, on a tiny random-weight
SD 1.5 checkpoint in checkpoints/: the options from the specs, the seed and the fidelity
printed, the result written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import diffusion_zoo
from tests.cli_runner import restora


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-diffusion-models")
    diffusion_zoo.sd15_checkpoint(root)
    return root


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory, face_crop: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("cli-diffusion-photo") / "photo.png"
    Image.fromarray(np.ascontiguousarray(face_crop[:48, :64])).save(path)
    return path


def test_the_diffusion_tasks_are_listed_with_their_commands() -> None:
    rows = {r["task"]: r for r in json.loads(restora("tasks", "--json").stdout)}
    assert rows["refine"]["available"] and rows["tiled-refine"]["available"]
    assert rows["refine"]["model_folders"] == ["checkpoints", "diffusion_models"]
    text = restora("refine", "--help").stdout
    assert "--strength" in text and "--seed" in text and "--lora" in text


def test_refine_writes_the_result_and_prints_the_seed_and_how_far_it_moved(
    models: Path, photo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "refined.png"
    args = ("refine", photo, "-o", out, "--models-dir", models, "--steps", "2", "--seed", "11")
    result = restora(*args)
    assert result.returncode == 0, result.stderr
    assert "seed 11" in result.stderr and "PSNR" in result.stderr and "SSIM" in result.stderr
    from backend.devices import cpu_bf16_instructions

    # auto on a CPU: bf16 where it has bf16 instructions, else fp32
    expected = "bf16" if cpu_bf16_instructions() else "fp32"
    assert f"(SD1.5) on cpu, {expected}" in result.stderr, result.stderr
    refined = np.asarray(Image.open(out))
    assert refined.shape == (48, 64, 3) and np.any(refined != np.asarray(Image.open(photo)))


def test_tiled_refine_enlarges(models: Path, photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "big.png"
    result = restora(
        "tiled-refine", photo, "-o", out, "--models-dir", models, "--steps", "2",
        "--scale", "2", "--seam-fix", "band_pass",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert np.asarray(Image.open(out)).shape == (96, 128, 3)
