"""`restora` end to end: the real default model on a real photo, batch folders, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_runner import restora
from tests.images import png_header_only
from tests.model_zoo import save_tiny


def test_help_is_instant_and_does_not_import_torch() -> None:
    start = time.perf_counter()
    result = restora("--help")
    elapsed = time.perf_counter() - start
    assert result.returncode == 0 and "upscale" in result.stdout
    assert elapsed < 1.0, elapsed
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, contextlib, io\nfrom backend.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main(['upscale', '--help'])\n    except SystemExit: pass\n"
            "print('torch' in sys.modules, 'spandrel' in sys.modules)",  # task specs may use numpy
        ],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.split() == ["False", "False"]


def test_real_default_model_on_a_real_photo(real_models: Path, face_crop, tmp_path: Path) -> None:
    src = tmp_path / "face.png"
    Image.fromarray(face_crop[:64, :64]).save(src)
    out = tmp_path / "face-x4.png"
    result = restora("upscale", src, "-o", out, "--models-dir", real_models)
    assert result.returncode == 0, result.stderr
    assert "realesrgan-x4plus" in result.stderr and "100.0%" in result.stderr
    up = np.asarray(Image.open(out))
    assert up.shape == (256, 256, 3)
    # a real x4 upscale: close to a Lanczos enlargement in content, but sharper
    ref = np.asarray(Image.fromarray(face_crop[:64, :64]).resize((256, 256), Image.LANCZOS))
    assert np.abs(up.astype(float) - ref).mean() < 20
    grad = lambda a: np.abs(np.diff(a.astype(float).mean(axis=2), axis=1)).mean()  # noqa: E731
    assert grad(up) > grad(ref)


def test_models_list_shows_imported_models(real_models: Path) -> None:
    result = restora("models", "list", "--models-dir", real_models)
    assert result.returncode == 0
    for name in ("realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3-x2"):
        assert name in result.stdout
    assert "ESRGAN" in result.stdout and "x2 (x4 net)" in result.stdout


def test_batch_folder_with_scale(models_root: Path, tmp_path: Path, face_crop) -> None:
    save_tiny("compact", models_root)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(face_crop).save(src / "a.png")
    Image.fromarray(face_crop[:40, :50]).save(src / "sub" / "b.jpg")
    out = tmp_path / "out"
    result = restora("upscale", src, "-o", out, "-m", "tiny-compact", "--scale", "2")
    assert result.returncode == 0, result.stderr
    assert Image.open(out / "a.png").size == (160, 192)
    assert Image.open(out / "sub" / "b.png").size == (100, 80)
    again = restora("upscale", src, "-o", out, "-m", "tiny-compact")
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.parametrize(
    "case",
    ["corrupt", "empty", "one-pixel", "zero", "bomb", "text-pth", "unknown-model", "missing"],
)
def test_bad_inputs_fail_clearly_and_write_nothing(
    case: str, models_root: Path, tmp_path: Path
) -> None:
    save_tiny("compact", models_root)
    src = tmp_path / "in.png"
    model = "tiny-compact"
    if case == "corrupt":
        src.write_bytes(png_header_only(64, 64)[:40] + b"\xff" * 50)
    elif case == "empty":
        src.write_bytes(b"")
    elif case == "one-pixel":
        Image.new("RGB", (1, 1)).save(src)
    elif case == "zero":
        src.write_bytes(png_header_only(0, 10))
    elif case == "bomb":
        src.write_bytes(png_header_only(100_000, 100_000))
    elif case == "text-pth":
        Image.new("RGB", (8, 8)).save(src)
        (models_root / "upscale_models" / "fake.pth").write_text("not a model")
        model = "fake"
    elif case == "unknown-model":
        Image.new("RGB", (8, 8)).save(src)
        model = "nope"
    elif case == "missing":
        src = tmp_path / "does-not-exist.png"
    out = tmp_path / "out.png"
    result = restora("upscale", src, "-o", out, "-m", model)
    assert result.returncode == 2, result
    assert "restora: error: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_ncnn_import_command(tmp_path: Path) -> None:
    from backend.models.ncnn import shipped_ncnn_models

    param, bin_path = shipped_ncnn_models()["realesr-animevideov3-x4"]
    dest = tmp_path / "models" / "upscale_models"
    result = restora("models", "import-ncnn", param, bin_path, "--dest", dest, "--name", "anime")
    assert result.returncode == 0, result.stderr
    assert (dest / "anime.safetensors").is_file()
    bad = tmp_path / "bad.param"
    bad.write_text("hello")
    result = restora("models", "import-ncnn", bad, "--dest", dest)
    assert result.returncode == 2 and "restora: error" in result.stderr


def test_plugin_command_builds_and_installs(tmp_path: Path) -> None:
    import zipfile

    result = restora("plugin", "krita", "build", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    names = zipfile.ZipFile(tmp_path / "restora-krita.zip").namelist()
    assert "restora.desktop" in names and any(n.startswith("restora/shared/") for n in names)
    home = tmp_path / "home"
    result = restora("plugin", "gimp", "install", env={"HOME": str(home), "XDG_CONFIG_HOME": ""})
    assert result.returncode == 0, result.stderr
    main = home / ".config" / "GIMP" / "3.0" / "plug-ins" / "restora" / "restora.py"
    assert main.is_file() and os.access(main, os.X_OK)
    assert restora("plugin", "krita", "no-such-action").returncode != 0


def test_an_automatic_upscale_that_would_take_long_suggests_the_fast_model(
    models_root: Path, tmp_path: Path
) -> None:
    from backend import speed_advice
    from tests.server_fixtures import random_image, slow_photo_models

    side = slow_photo_models(models_root / "upscale_models")
    src = tmp_path / "photo.png"
    Image.fromarray(random_image(side, side, seed=5)).save(src)
    # as many threads as the shipped figures were measured with
    env = {
        "OMP_NUM_THREADS": str(speed_advice.MEASURED_THREADS),
        "RESTORA_HOME": str(tmp_path / "home"),
    }
    auto = restora("upscale", src, "-o", tmp_path / "auto.png", "-d", "cpu", env=env)
    assert auto.returncode == 0, auto.stderr
    note = [line for line in auto.stderr.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "-m realesr-general-x4v3" in note[0], auto.stderr
    assert "model realesrgan-x4plus" in auto.stderr  # suggested, not switched
    named = restora(
        "upscale",
        src,
        "-o",
        tmp_path / "named.png",
        "-d",
        "cpu",
        "-m",
        "realesrgan-x4plus",
        env=env,
    )
    assert named.returncode == 0 and "note:" not in named.stderr, named.stderr
