"""What a model is on disk: its layout, its files and their stamps (path, size, mtime).

A loaded item is keyed by these stamps, so a file replaced in place (same name, new weights)
is a new item, and the bytes on disk give the first estimate of what loading will take.
Layouts: one file (spandrel, a TFLite graph), a diffusers folder (model_index.json and a
folder per component), a single-file checkpoint with separate VAE or text-encoder files, a
GGUF transformer (with its separate parts), and a fixed set of files (the face detector).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Layout = Literal["single_file", "diffusers_folder", "checkpoint_with_parts", "gguf", "file_set"]

#: weight files in a diffusers component folder, by preference: one format is loaded
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
#: bytes per element of the float dtypes a safetensors header names
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_MAX_HEADER = 100 << 20  # a larger safetensors header is a damaged file


@dataclass(frozen=True)
class FileStamp:
    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | Path, size_if_missing: int = 0) -> FileStamp:
        try:
            st = os.stat(path)
        except OSError:
            # gone since the registry listed it: keyed by what was seen; loading reports it
            return cls(str(path), size_if_missing, 0)
        return cls(str(path), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class ModelFiles:
    layout: Layout
    root: str  # the file or folder a person names
    parts: tuple[tuple[str, FileStamp], ...]  # (role, file): "model", "vae", "unet", ...

    @property
    def total_bytes(self) -> int:
        return sum(stamp.size for _, stamp in self.parts)

    def part_bytes(self) -> dict[str, int]:
        """Bytes on disk per role (a diffusers component may be split over several files)."""
        out: dict[str, int] = {}
        for role, stamp in self.parts:
            out[role] = out.get(role, 0) + stamp.size
        return out

    @property
    def largest_part_bytes(self) -> int:
        return max(self.part_bytes().values(), default=0)

    def file(self, role: str) -> str:
        for name, stamp in self.parts:
            if name == role:
                return stamp.path
        raise KeyError(role)


def single_file(path: str | Path, size_if_missing: int = 0) -> ModelFiles:
    return ModelFiles("single_file", str(path), (("model", FileStamp.of(path, size_if_missing)),))


def file_set(root: str | Path, files: dict[str, Path]) -> ModelFiles:
    parts = tuple((role, FileStamp.of(p)) for role, p in sorted(files.items()))
    return ModelFiles("file_set", str(root), parts)


def describe(
    path: str | Path, vae: str | Path | None = None, text_encoders: Iterable[str | Path] = ()
) -> ModelFiles:
    """The layout and files of the model at `path`, with the separate parts a single-file
    checkpoint or a GGUF transformer is used with."""
    root = Path(path)
    extras = [("vae", Path(vae))] if vae is not None else []
    extras += [(f"text_encoder_{i}", Path(p)) for i, p in enumerate(text_encoders)]
    if root.is_dir():
        if not (root / "model_index.json").is_file():
            raise ValueError(f"{root} is a folder without model_index.json")
        return ModelFiles("diffusers_folder", str(root), _diffusers_parts(root))
    main = "transformer" if root.suffix.lower() == ".gguf" else "model"
    parts = ((main, FileStamp.of(root)), *((r, FileStamp.of(p)) for r, p in extras))
    if main == "transformer":
        return ModelFiles("gguf", str(root), parts)
    return ModelFiles("checkpoint_with_parts" if extras else "single_file", str(root), parts)


def component_folder(path: str | Path) -> ModelFiles:
    """One diffusers component saved alone (a ControlNet: config.json beside its weights)."""
    root = Path(path)
    files = (
        sorted(p for p in root.iterdir() if p.suffix in WEIGHT_SUFFIXES) if root.is_dir() else []
    )
    for suffix in WEIGHT_SUFFIXES:  # one format is loaded, as in a pipeline folder
        chosen = [p for p in files if p.suffix == suffix]
        if chosen:
            files = chosen
            break
    parts = (("config", FileStamp.of(root / "config.json")),)
    return ModelFiles(
        "diffusers_folder", str(root), parts + tuple(("model", FileStamp.of(p)) for p in files)
    )


def _diffusers_parts(root: Path) -> tuple[tuple[str, FileStamp], ...]:
    """The weight files of each component model_index.json names, one format per component
    (safetensors over pickles), so the sum is what one load reads."""
    index = json.loads((root / "model_index.json").read_text())
    parts: list[tuple[str, FileStamp]] = []
    for component in sorted(k for k in index if not k.startswith("_")):
        folder = root / component
        if not folder.is_dir():
            continue
        for suffix in WEIGHT_SUFFIXES:
            files = sorted(p for p in folder.iterdir() if p.name.endswith(suffix))
            if files:
                parts += [(component, FileStamp.of(p)) for p in files]
                break
    return tuple(parts)


def stored_float_bytes(path: str | Path) -> int | None:
    """Bytes per float element as a safetensors file stores its weights (the most common
    float dtype by size); None for other formats or a header that cannot be read."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if not 0 < length <= _MAX_HEADER:
                return None
            header = json.loads(f.read(length))
    except (OSError, struct.error, ValueError):
        return None
    by_dtype: dict[int, int] = {}
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        elem = _DTYPE_BYTES.get(str(info.get("dtype")))
        offsets = info.get("data_offsets") or (0, 0)
        if elem is not None:
            by_dtype[elem] = by_dtype.get(elem, 0) + int(offsets[1]) - int(offsets[0])
    return max(by_dtype, key=by_dtype.__getitem__) if by_dtype else None
