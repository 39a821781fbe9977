"""The model manager's adapter for instruction-editing models (no torch imported here).

An edit model is one registry entry (a diffusers folder, or a split transformer whose text
encoder and VAE are found beside it) loaded as one `EditModel`, whose components stay in host
memory until the task asks the manager for a tier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.diffusion.edit_families import EDIT_PURPOSE
from backend.models.manager import files as disk
from backend.models.manager.adapters import register_adapter
from backend.models.manager.memory import TIER_MARGIN_BYTES


class EditAdapter:
    kind = "diffusers-edit"

    def accepts(self, entry: Any) -> bool:
        from backend.paths import DIFFUSION_FOLDERS

        return (
            getattr(entry, "folder", None) in DIFFUSION_FOLDERS
            and getattr(entry, "purpose", "") == EDIT_PURPOSE
            and isinstance(getattr(entry, "path", None), str)
        )

    def files(self, entry: Any) -> disk.ModelFiles:
        return disk.describe(entry.path)

    def name(self, entry: Any) -> str:
        return str(getattr(entry, "name", Path(entry.path).stem))

    def estimate(self, entry: Any) -> int:
        """The host memory a load takes: the weights as held (quantized ones stay so), a
        margin for the file being read."""
        memory = int(getattr(entry, "memory_bytes", 0)) or self.files(entry).total_bytes
        return memory + TIER_MARGIN_BYTES // 4

    def load(self, entry: Any, device: str, precision: str) -> Any:
        import torch

        from backend.diffusion import edit_loading, loading

        dev = torch.device(device)
        return edit_loading.load(entry, dev, loading.run_dtype(dev, precision))

    def nbytes(self, obj: Any) -> int:
        return obj.weight_bytes()[0]

    def release(self, obj: Any) -> None:
        obj.release()


register_adapter(EditAdapter)
