"""The model manager's adapter for Stable Diffusion checkpoints and diffusers folders.

Registered with the manager on import (no torch imported here). A loaded model is a
`DiffusionModel` whose components stay in host memory until the task asks the manager for a
tier (`place`), so one model serves refine and tiled refine, resident or offloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.models.manager import files as disk
from backend.models.manager.adapters import register_adapter
from backend.models.manager.memory import TIER_MARGIN_BYTES, torch_nbytes

DIFFUSION_PURPOSE = "Diffusion"
#: the purposes of the diffusion files this adapter loads: models, separate VAEs, LoRAs and
#: ControlNets
PURPOSES = (DIFFUSION_PURPOSE, "VAE", "LoRA", "ControlNet")


class DiffusersAdapter:
    kind = "diffusers"

    def accepts(self, entry: Any) -> bool:
        from backend.paths import DIFFUSION_FOLDERS

        return (
            getattr(entry, "folder", None) in DIFFUSION_FOLDERS
            and getattr(entry, "purpose", "") in PURPOSES
            and isinstance(getattr(entry, "path", None), str)
        )

    def files(self, entry: Any) -> disk.ModelFiles:
        if getattr(entry, "purpose", "") == "ControlNet" and Path(entry.path).is_dir():
            return disk.component_folder(entry.path)  # config.json and weights, no index
        return disk.describe(entry.path)

    def name(self, entry: Any) -> str:
        return str(getattr(entry, "name", Path(entry.path).stem))

    def estimate(self, entry: Any) -> int:
        """The host memory a load takes: every weight in fp32 at most, and a margin."""
        memory = int(getattr(entry, "memory_bytes", 0)) or self.files(entry).total_bytes
        return memory * 2 + TIER_MARGIN_BYTES // 4

    def load(self, entry: Any, device: str, precision: str) -> Any:
        import torch

        from backend.diffusion import loading

        dev = torch.device(device)
        dtype = loading.run_dtype(dev, precision)
        if entry.purpose == "VAE":
            return loading.load_vae(entry, dev, dtype)
        if entry.purpose == "LoRA":
            return loading.load_lora(entry)
        if entry.purpose == "ControlNet":
            from backend.diffusion import controlnet

            return controlnet.load(entry, dev, dtype)
        return loading.load(entry, dev, dtype)

    def nbytes(self, obj: Any) -> int:
        parts = getattr(obj, "components", None)
        held = (
            getattr(obj, "vae", None)
            or getattr(obj, "state_dict", None)
            or getattr(obj, "module", None)
        )
        return torch_nbytes(list(parts.values()) if parts is not None else held)

    def release(self, obj: Any) -> None:
        release = getattr(obj, "release", None)
        if release is not None:
            release()


register_adapter(DiffusersAdapter)

# the instruction-editing family registers its own adapter (also without torch)
import backend.diffusion.edit_adapter  # noqa: E402, F401

# HYPIR (an SD 2.1 base with a LoRA merged in) loads through its own adapter, registered here so
# every manager that knows the diffusion files knows it too
from backend.diffusion import hypir_adapter  # noqa: E402, F401
