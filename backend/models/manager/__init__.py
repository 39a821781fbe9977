"""The model manager: what is on disk, loaded through per-family adapters, within byte budgets.

Public names: ModelManager, the Adapter protocol and register_adapter (for families added
later), choose_tier (offload tiers), ModelFiles / describe (on-disk layouts), and the
process's default manager.
"""

from backend.models.manager.adapters import (
    Adapter,
    DetectorEntry,
    FaceDetectorAdapter,
    LoaderAdapter,
    SpandrelAdapter,
    default_adapters,
    register_adapter,
)
from backend.models.manager.default import default_manager, set_default_manager
from backend.models.manager.files import FileStamp, ModelFiles, describe
from backend.models.manager.manager import ModelManager
from backend.models.manager.memory import Tier, choose_tier, torch_nbytes

__all__ = [
    "Adapter",
    "DetectorEntry",
    "FaceDetectorAdapter",
    "FileStamp",
    "LoaderAdapter",
    "ModelFiles",
    "ModelManager",
    "SpandrelAdapter",
    "Tier",
    "choose_tier",
    "default_adapters",
    "default_manager",
    "describe",
    "register_adapter",
    "set_default_manager",
    "torch_nbytes",
]
