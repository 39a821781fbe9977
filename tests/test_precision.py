"""Reduced precision stays faithful: bf16 output of the real default model vs fp32 on a photo."""

from __future__ import annotations

from pathlib import Path

from backend.models.registry import Registry
from backend.models.runtime import load_model
from backend.tasks import upscale
from tests.conftest import psnr


def test_bf16_within_40db_of_fp32(real_models: Path, face_crop) -> None:
    entry = Registry([real_models]).find("realesrgan-x4plus")
    img = face_crop[:48, :48]
    fp32 = upscale.run(img, load_model(entry, "cpu", "fp32"), upscale.UpscaleParams(tile=0))
    bf16 = upscale.run(img, load_model(entry, "cpu", "bf16"), upscale.UpscaleParams(tile=0))
    value = psnr(fp32, bf16)
    print(f"bf16 vs fp32 PSNR on realesrgan-x4plus: {value:.1f} dB")
    assert value > 40.0


def test_auto_precision_is_measured_and_cached(real_models: Path, restora_home: Path) -> None:
    entry = Registry([real_models]).find("realesr-animevideov3-x4")
    model = load_model(entry, "cpu", "auto")
    assert model.precision in ("fp32", "bf16")
    assert "measured" in model.precision_reason and "fp32" in model.precision_reason
    assert (restora_home / "cache" / "precision.json").is_file()
