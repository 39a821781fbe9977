"""The model registry: every model file in the models folders, what it is and whether it runs.

Folders are laid out like ComfyUI's (upscale_models/, facerestore_models/, ...), so a user can
add an existing ComfyUI or A1111 models folder. Files are identified by loading them through
spandrel once; the result is cached by path, size and modification time, so listing is fast
after the first time. A file that is not a model is listed as unusable with the reason.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backend import paths
from backend.errors import ModelFormatError, ModelNotFoundError
from backend.models.loading import MODEL_EXTENSIONS, load_descriptor

DEFAULT_UPSCALE_MODEL = "realesrgan-x4plus"
#: without a named model, a task runs the first installed model of these architectures (in
#: this order), then any other that fits, by name
PREFERRED_ARCHITECTURES = ("GFPGAN", "CodeFormer", "RestoreFormer")
#: 5: HYPIR LoRAs with their base, ControlNets (controlnet/), and the prediction type among
#: a checkpoint's tags
INDEX_VERSION = 5
#: where instruction-editing models and their parts are (a ControlNet is never one)
EDIT_FOLDERS = ("checkpoints", "diffusion_models", "vae", "loras", "text_encoders")


@dataclass
class ModelEntry:
    name: str
    path: str
    folder: str
    size_bytes: int
    usable: bool
    reason: str = ""
    architecture: str = ""
    purpose: str = ""
    scale: int = 0
    output_scale: int = 0  # the result's scale when the file says to resize the network's output
    input_channels: int = 0
    output_channels: int = 0
    size_minimum: int = 0
    size_multiple_of: int = 1
    size_square: bool = False
    tiling: str = ""
    dtypes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    #: diffusion files: bytes to run it in fp16 on a GPU (weights plus one step's work)
    memory_bytes: int = 0
    #: a HYPIR LoRA: the SD 2.1 base it runs on (set when the folders are listed, not cached)
    base: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def preferred_entry(entries: list[ModelEntry]) -> ModelEntry | None:
    """The model to run when the user names none, among `entries` that fit the task."""
    rank = {arch: i for i, arch in enumerate(PREFERRED_ARCHITECTURES)}
    return min(
        entries, key=lambda e: (rank.get(e.architecture, len(rank)), e.name.lower()), default=None
    )


def describe(path: Path, folder: str) -> ModelEntry:
    """Load `path` through spandrel and describe it; never raises for a bad file."""
    size = path.stat().st_size
    base = ModelEntry(name=path.stem, path=str(path), folder=folder, size_bytes=size, usable=False)
    if path.suffix.lower() == ".param":
        base.reason = "ncnn model: import it with `restora models import-ncnn`"
        return base
    if folder == paths.HYPIR_FOLDER:
        return describe_hypir(path, folder, base)
    if folder in EDIT_FOLDERS:
        edit = describe_edit(path, folder, base)
        if edit is not None:
            return edit
    if folder in paths.DIFFUSION_FOLDERS:
        entry = describe_diffusion(path, folder, base)
        if not entry.usable and "hypir" in path.name.lower():
            entry.reason = (
                f"HYPIR's weights go in the {paths.HYPIR_FOLDER} folder, beside an SD 2.1 "
                "base in checkpoints/"
            )
        return entry
    if folder not in paths.SPANDREL_FOLDERS:
        base.reason = f"{folder} files are used by tasks that come later"
        return base
    try:
        d = load_descriptor(path)
    except ModelFormatError as exc:
        base.reason = exc.message.removeprefix(f"{path.name}: ").removeprefix(f"{path.name} ")
        return base
    req = d.size_requirements
    dtypes = (
        ["fp32"] + (["fp16"] if d.supports_half else []) + (["bf16"] if d.supports_bfloat16 else [])
    )
    return ModelEntry(
        name=path.stem,
        path=str(path),
        folder=folder,
        size_bytes=size,
        usable=True,
        architecture=d.architecture.name,
        purpose=d.purpose,
        scale=d.scale,
        output_scale=_declared_output_scale(path) or d.scale,
        input_channels=d.input_channels,
        output_channels=d.output_channels,
        size_minimum=req.minimum,
        size_multiple_of=req.multiple_of,
        size_square=req.square,
        tiling=d.tiling.name.lower(),
        dtypes=dtypes,
        tags=list(d.tags),
    )


#: what each role of a diffusion file is listed as (the purpose a task's model slot names)
DIFFUSION_PURPOSES = {
    "checkpoint": "Diffusion",
    "vae": "VAE",
    "lora": "LoRA",
    "controlnet": "ControlNet",
}


def describe_diffusion(path: Path, folder: str, base: ModelEntry) -> ModelEntry:
    """A checkpoint, diffusers folder, VAE, LoRA or ControlNet, from its headers (no weights
    loaded); a single-file checkpoint's tags also say what it predicts."""
    from backend.diffusion.families import (
        inspect_controlnet_folder,
        inspect_file,
        inspect_folder,
    )

    if path.is_dir():
        found = inspect_controlnet_folder(path) if folder == "controlnet" else inspect_folder(path)
    else:
        found = inspect_file(path, folder)
    base.architecture = found.family
    base.purpose = DIFFUSION_PURPOSES.get(found.role, "")
    base.usable, base.reason = found.usable, found.reason
    base.memory_bytes = found.memory_bytes()
    base.tags = [found.layout]
    if found.usable and found.role == "checkpoint" and not path.is_dir():
        from backend.diffusion.prediction import decide

        base.tags.append(decide(path, found.family).prediction)
    if path.is_dir():
        base.size_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return base


def describe_edit(path: Path, folder: str, base: ModelEntry) -> ModelEntry | None:
    """An instruction-editing model (Qwen-Image-Edit, FLUX.1 Kontext, InstructPix2Pix) or a
    part of one (a Qwen2.5-VL text encoder, a Qwen-Image VAE); None for anything else."""
    from backend.diffusion.edit_families import inspect_edit

    found = inspect_edit(path, folder)
    if found is None:
        return None
    base.architecture = found.family or base.architecture
    base.purpose = found.purpose
    base.usable, base.reason = found.usable, found.reason
    base.memory_bytes = found.memory_bytes()
    base.tags = [found.layout]
    if path.is_dir():
        base.size_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return base


def refresh_edit(entry: ModelEntry) -> ModelEntry:
    """A split-layout edit model depends on files beside it (its text encoder and VAE) that
    its own cache key does not cover: look for them again at every listing."""
    if entry.purpose != "Edit" or "split_files" not in entry.tags:
        return entry
    fresh = describe_edit(Path(entry.path), entry.folder, ModelEntry(**entry.to_dict()))
    return fresh or entry


def describe_hypir(path: Path, folder: str, base: ModelEntry) -> ModelEntry:
    """A HYPIR LoRA, or an SD 2.1 base kept beside it (ComfyUI's HYPIR nodes put
    stable-diffusion-2-1-base/ in models/HYPIR/); the LoRA's base is chosen by `pair_hypir`."""
    from backend.diffusion import hypir_files

    if path.is_dir() or _is_checkpoint(path):
        return describe_diffusion(path, "checkpoints", base)
    found = hypir_files.inspect(path)
    base.purpose = hypir_files.PURPOSE
    base.architecture = hypir_files.ARCHITECTURE
    base.usable, base.reason = found.usable, found.reason
    base.memory_bytes = found.params * 2
    base.tags = ["peft_lora", f"rank {found.rank}"] if found.usable else []
    return base


def _is_checkpoint(path: Path) -> bool:
    """A .safetensors Stable Diffusion checkpoint (its header names the UNet's tensors)."""
    if path.suffix.lower() != ".safetensors":
        return False
    from backend.diffusion.families import UNET, read_header

    try:
        return any(k.startswith(UNET) for k in read_header(path))
    except (OSError, ValueError, struct.error):
        return False


def pair_hypir(entries: list[ModelEntry]) -> None:
    """Each HYPIR LoRA with the SD 2.1 base it runs on, or unusable saying which is missing."""
    if any(e.folder == paths.HYPIR_FOLDER for e in entries):
        from backend.diffusion.hypir_files import pair

        pair(entries)


def _declared_output_scale(path: Path) -> int | None:
    """Models imported from ncnn may be an x4 network whose output the graph resized (x2, x3)."""
    if path.suffix.lower() != ".safetensors":
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            value = (f.metadata() or {}).get("output_scale")
        return int(value) if value else None
    except (SafetensorError, OSError, ValueError):
        return None


class Registry:
    """Finds model files in the models folders and keeps their descriptions cached."""

    def __init__(self, folders: list[Path] | None = None, index_file: Path | None = None) -> None:
        self.folders = folders if folders is not None else paths.models_dirs()
        self.index_file = index_file or paths.cache_dir() / "model-index.json"
        self._entries: list[ModelEntry] | None = None

    def files(self) -> list[tuple[Path, str]]:
        found: list[tuple[Path, str]] = []
        for root in self.folders:
            if not root.is_dir():
                continue
            for sub in sorted(root.iterdir()):
                kind = paths.FOLDER_ALIASES.get(sub.name, sub.name)
                if not sub.is_dir() or kind not in paths.MODEL_FOLDERS:
                    continue
                # a diffusers folder is one model: listed as a whole, its files are not
                packs = sorted(m.parent for m in sub.rglob("model_index.json"))
                if kind == "controlnet":  # a ControlNet folder is config.json beside weights
                    packs += sorted(
                        c.parent
                        for c in sub.rglob("config.json")
                        if any(c.parent.glob("*.safetensors")) and c.parent not in packs
                    )
                if kind in paths.DIFFUSION_FOLDERS:
                    found += [(p, kind) for p in packs]
                for f in sorted(sub.rglob("*")):
                    ext = f.suffix.lower()
                    inside = any(p in f.parents for p in packs)
                    # GGUF: quantized diffusion transformers (diffusion_models/*.gguf)
                    gguf = ext == ".gguf" and kind in paths.DIFFUSION_FOLDERS
                    known = ext in MODEL_EXTENSIONS or ext == ".param" or gguf
                    if f.is_file() and not inside and known:
                        found.append((f, kind))
        return found

    def entries(self, refresh: bool = False) -> list[ModelEntry]:
        if self._entries is not None and not refresh:
            return self._entries
        index = self._read_index()
        entries, new_index = [], {}
        for f, kind in self.files():
            # a diffusers folder changes when any file in it does
            st = (
                max(
                    (g.stat() for g in f.rglob("*") if g.is_file()),
                    default=f.stat(),
                    key=lambda s: s.st_mtime_ns,
                )
                if f.is_dir()
                else f.stat()
            )
            key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}|{kind}"
            cached = index.get(key)
            entry = refresh_edit(ModelEntry(**cached)) if cached else describe(f, kind)
            new_index[key] = entry.to_dict()
            entries.append(entry)
        self._write_index(new_index)
        self._entries = _unique_names(entries)
        pair_hypir(self._entries)  # after caching: a base may come or go without the LoRA changing
        return self._entries

    def find(self, name: str, folder: str | None = None) -> ModelEntry:
        """Look a model up by name (file stem), file name, or folder/file; never by raw path."""
        candidates = [e for e in self.entries() if folder is None or e.folder == folder]
        for e in candidates:
            rel = f"{e.folder}/{Path(e.path).name}"
            if name in (e.name, Path(e.path).name, rel):
                if not e.usable:
                    raise ModelFormatError(
                        f"Model '{name}' cannot be used: {e.reason}.",
                        "Replace the file or choose another model.",
                    )
                return e
        usable = sorted(e.name for e in candidates if e.usable)
        shown = ", ".join(usable[:12]) or "none"
        raise ModelNotFoundError(
            f"No model named '{name}'. Available: {shown}.",
            "Run `restora models list`; put model files in "
            f"{self.folders[-1] / (folder or 'upscale_models')}.",
        )

    def _read_index(self) -> dict[str, Any]:
        try:
            data = json.loads(self.index_file.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
            return {}
        return data.get("entries", {})

    def _write_index(self, entries: dict[str, Any]) -> None:
        try:
            self.index_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.index_file.with_name(f".{self.index_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": INDEX_VERSION, "entries": entries}))
            os.replace(tmp, self.index_file)
        except OSError:
            pass  # a read-only cache only costs speed


def _unique_names(entries: list[ModelEntry]) -> list[ModelEntry]:
    """The first file of a name keeps it; later ones are named folder/file so both stay usable."""
    seen: set[str] = set()
    for e in entries:
        if e.name in seen:
            e.name = f"{e.folder}/{Path(e.path).name}"
        seen.add(e.name)
    return entries
