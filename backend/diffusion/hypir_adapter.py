"""The model manager's adapter for HYPIR: a LoRA file and the SD 2.1 base the registry paired
it with, loaded as one model (backend.diffusion.hypir_model).

Registered on import (no torch imported here), by backend.diffusion.adapter. The item is keyed
by both files, so replacing either loads it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.models.manager import files as disk
from backend.models.manager.adapters import register_adapter, weights_estimate
from backend.models.manager.memory import TIER_MARGIN_BYTES, torch_nbytes


class HypirAdapter:
    kind = "hypir"

    def accepts(self, entry: Any) -> bool:
        from backend.diffusion.hypir_files import PURPOSE

        return (
            getattr(entry, "purpose", "") == PURPOSE
            and isinstance(getattr(entry, "path", None), str)
            and bool(getattr(entry, "base", ""))
        )

    def files(self, entry: Any) -> disk.ModelFiles:
        base = disk.describe(entry.base)
        lora = ("lora", disk.FileStamp.of(entry.path, int(getattr(entry, "size_bytes", 0))))
        return disk.ModelFiles("file_set", entry.path, (lora, *base.parts))

    def name(self, entry: Any) -> str:
        return str(getattr(entry, "name", Path(entry.path).stem))

    def estimate(self, entry: Any) -> int:
        """The peak of a load: base and LoRA in fp32 while the LoRA is merged, and a margin."""
        return weights_estimate(self.files(entry), TIER_MARGIN_BYTES // 4)

    def load(self, entry: Any, device: str, precision: str) -> Any:
        from backend.diffusion import hypir_model

        return hypir_model.load(entry, device, precision)

    def nbytes(self, obj: Any) -> int:
        return torch_nbytes(list(obj.modules().values()))

    def release(self, obj: Any) -> None:
        return None  # plain modules: nothing hooked


register_adapter(HypirAdapter)
