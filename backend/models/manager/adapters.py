"""How each model family is found on disk, sized, loaded and released: one adapter per family.

The manager asks the adapters in order; the first whose `accepts` is true handles the entry.
Spandrel files and the face detector are handled here; a family added later (diffusers,
TFLite restorers) registers its adapter with `register_adapter`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from backend.models.manager import files as disk
from backend.models.manager.memory import torch_nbytes

#: memory a load needs beyond the weights: activations of a first tile, framework buffers
LOAD_MARGIN_BYTES = 512 << 20
#: weights in memory per byte on disk when the file's dtype is unknown (fp16 loaded as fp32)
WEIGHT_EXPANSION = 2


@runtime_checkable
class Adapter(Protocol):
    kind: str

    def accepts(self, entry: Any) -> bool: ...

    def files(self, entry: Any) -> disk.ModelFiles:
        """What `entry` is on disk: the item's identity."""
        ...

    def name(self, entry: Any) -> str: ...

    def estimate(self, entry: Any) -> int:
        """Bytes loading `entry` may take at its peak, checked before loading."""
        ...

    def load(self, entry: Any, device: str, precision: str) -> Any: ...

    def nbytes(self, obj: Any) -> int:
        """Bytes the loaded object holds."""
        ...

    def release(self, obj: Any) -> None:
        """Undo what loading set up beyond the object itself (hooks, offload state)."""
        ...


def weights_estimate(files: disk.ModelFiles, margin_bytes: int) -> int:
    """Bytes on disk grown to fp32 (x2 for a 16-bit safetensors file or an unknown format,
    x1 for fp32), plus the margin."""
    total = 0
    for _role, stamp in files.parts:
        elem = disk.stored_float_bytes(stamp.path)
        total += stamp.size * (WEIGHT_EXPANSION if elem is None else max(1, 4 // elem))
    return total + margin_bytes


class SpandrelAdapter:
    """Single-file image models that spandrel loads (registry entries), as LoadedModel."""

    kind = "spandrel"

    def __init__(self, margin_bytes: int = LOAD_MARGIN_BYTES) -> None:
        self.margin_bytes = margin_bytes

    def accepts(self, entry: Any) -> bool:
        from backend.models.loading import MODEL_EXTENSIONS
        from backend.paths import DIFFUSION_FOLDERS

        path = getattr(entry, "path", None)
        if getattr(entry, "folder", None) in DIFFUSION_FOLDERS:
            return False  # a .safetensors checkpoint is the diffusers adapter's
        return isinstance(path, str) and Path(path).suffix.lower() in MODEL_EXTENSIONS

    def files(self, entry: Any) -> disk.ModelFiles:
        return disk.single_file(entry.path, int(getattr(entry, "size_bytes", 0)))

    def name(self, entry: Any) -> str:
        return str(getattr(entry, "name", Path(entry.path).stem))

    def estimate(self, entry: Any) -> int:
        return weights_estimate(self.files(entry), self.margin_bytes)

    def load(self, entry: Any, device: str, precision: str) -> Any:
        from backend.models.runtime import load_model

        return load_model(entry, device=device, precision=precision)

    def nbytes(self, obj: Any) -> int:
        return torch_nbytes(obj)

    def release(self, obj: Any) -> None:
        return None  # a spandrel model holds nothing but its tensors


class LoaderAdapter(SpandrelAdapter):
    """Any entry with a path, loaded by a given function (another runtime, or a test's)."""

    kind = "loader"

    def __init__(
        self,
        loader: Callable[[Any, str, str], Any],
        margin_bytes: int = LOAD_MARGIN_BYTES,
    ) -> None:
        super().__init__(margin_bytes)
        self._loader = loader

    def accepts(self, entry: Any) -> bool:
        return isinstance(getattr(entry, "path", None), str)

    def load(self, entry: Any, device: str, precision: str) -> Any:
        return self._loader(entry, device, precision)

    def nbytes(self, obj: Any) -> int:
        # an object without tensors (another runtime's) counts what its file promised
        measured = torch_nbytes(obj)
        entry = getattr(obj, "entry", None)
        return measured or (self.estimate(entry) if entry is not None else 0)


@dataclass(frozen=True)
class DetectorEntry:
    """The face detector's three TFLite graphs, found in the models folders."""

    models_dirs: tuple[Path, ...]
    files: disk.ModelFiles
    name: str = "face-detector"

    @classmethod
    def find(cls, models_dirs: list[Path] | None = None) -> DetectorEntry:
        from backend import paths
        from backend.faces import detect

        dirs = tuple(paths.models_dirs() if models_dirs is None else models_dirs)
        names = {"full": detect.FULL_RANGE, "short": detect.SHORT_RANGE, "mesh": detect.FACE_MESH}
        found = {key: detect.model_file(name, list(dirs)) for key, name in names.items()}
        return cls(dirs, disk.file_set(detect.MODEL_FOLDER, found))


class FaceDetectorAdapter:
    """BlazeFace and the face mesh (backend.faces.detect.FaceDetector); always fp32."""

    kind = "face_detector"

    def accepts(self, entry: Any) -> bool:
        return isinstance(entry, DetectorEntry)

    def files(self, entry: DetectorEntry) -> disk.ModelFiles:
        return entry.files

    def name(self, entry: DetectorEntry) -> str:
        return entry.name

    def estimate(self, entry: DetectorEntry) -> int:
        # float32 graphs: weights as stored, and small activations (192 px inputs)
        return entry.files.total_bytes + (64 << 20)

    def load(self, entry: DetectorEntry, device: str, precision: str) -> Any:
        from backend.faces.detect import FaceDetector

        return FaceDetector(device, list(entry.models_dirs))

    def nbytes(self, obj: Any) -> int:
        return torch_nbytes(obj.models)

    def release(self, obj: Any) -> None:
        return None


_registered: list[Callable[[], Adapter]] = []


def register_adapter(factory: Callable[[], Adapter]) -> None:
    """Make managers created from now on try `factory()`'s adapter after the built-in ones
    (the diffusers adapter registers here)."""
    if factory not in _registered:
        _registered.append(factory)


def default_adapters() -> list[Adapter]:
    import backend.diffusion.adapter  # noqa: F401  (registers the diffusers family; no torch)

    return [FaceDetectorAdapter(), SpandrelAdapter(), *(f() for f in _registered)]
