"""The model store under its former name: ModelCache is the ModelManager with a count limit.

Kept so that the server and the CLI, which build `ModelCache(device, precision, max_models)`,
run on the one implementation in backend.models.manager.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backend.models.manager import FaceDetectorAdapter, LoaderAdapter, ModelManager
from backend.models.manager.adapters import LOAD_MARGIN_BYTES, WEIGHT_EXPANSION
from backend.models.manager.manager import default_free_memory

__all__ = ["LOAD_MARGIN_BYTES", "WEIGHT_EXPANSION", "ModelCache"]


class ModelCache(ModelManager):
    def __init__(
        self,
        device: str = "auto",
        precision: str = "auto",
        max_models: int | None = 3,
        loader: Callable[[Any, str, str], Any] | None = None,
        free_memory: Callable[[str], int] = default_free_memory,
        device_budget_bytes: int | None = None,
        host_budget_bytes: int | None = None,
    ) -> None:
        """`loader(entry, device, precision)` replaces spandrel for every entry with a path."""
        adapters = None if loader is None else [FaceDetectorAdapter(), LoaderAdapter(loader)]
        super().__init__(
            device,
            precision,
            device_budget_bytes,
            host_budget_bytes,
            free_memory=free_memory,
            adapters=adapters,
            max_items=max_models,
        )
