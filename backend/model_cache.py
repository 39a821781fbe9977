"""Loaded models kept for the next job, unloaded least recently used when memory is short.

Loading a model costs seconds (weights, precision choice, a speed measurement), so the worker
keeps the last few. Only the worker thread loads and unloads; other threads may read which
models are loaded (health, model list), under the lock.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from backend.errors import OutOfMemoryError

if TYPE_CHECKING:
    from backend.models.registry import ModelEntry
    from backend.models.runtime import LoadedModel

log = logging.getLogger("restora.models")

#: Memory a model needs beyond its file size: activations of a first tile, framework buffers.
LOAD_MARGIN_BYTES = 512 << 20
#: Weights in memory can take twice the file size (fp16 files loaded as fp32).
WEIGHT_EXPANSION = 2


def _default_loader(entry: ModelEntry, device: str, precision: str) -> LoadedModel:
    from backend.models.runtime import load_model

    return load_model(entry, device=device, precision=precision)


def _default_free_memory(device: str) -> int:
    from backend.devices import free_memory, resolve_device

    return free_memory(resolve_device(device))


def _release_device_memory(device: str) -> None:
    from backend.devices import resolve_device
    from backend.inference import free_device_memory

    free_device_memory(resolve_device(device))


class ModelCache:
    def __init__(
        self,
        device: str = "auto",
        precision: str = "auto",
        max_models: int = 3,
        loader: Callable[[ModelEntry, str, str], LoadedModel] = _default_loader,
        free_memory: Callable[[str], int] = _default_free_memory,
    ) -> None:
        self.device = device
        self.precision = precision
        self.max_models = max_models
        self._loader = loader
        self._free_memory = free_memory
        self._models: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(entry: ModelEntry) -> tuple[str, int]:
        return (entry.path, entry.size_bytes)

    def loaded_names(self) -> list[str]:
        with self._lock:
            return [m.entry.name for m in self._models.values()]

    def is_loaded(self, entry: ModelEntry) -> bool:
        with self._lock:
            return self.key(entry) in self._models

    def get(self, entry: ModelEntry) -> LoadedModel:
        """The loaded model for `entry`, loading it (and unloading others) when needed."""
        key = self.key(entry)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
        self._make_room(entry)
        model = self._load(entry)
        if model is None:
            log.warning("out of memory loading %s; unloading every model and retrying", entry.name)
            self.unload_all()
            model = self._load(entry)
        if model is None:
            raise OutOfMemoryError(
                f"Not enough memory to load {entry.name}.",
                "Close other programs using the GPU, or use a smaller model.",
            )
        with self._lock:
            self._models[key] = model
        log.info("loaded %s on %s (%s)", entry.name, model.device, model.precision)
        return model

    def _load(self, entry: ModelEntry) -> LoadedModel | None:
        """The loaded model, or None when memory ran out (the error, and what its traceback
        holds, is gone by the time the caller frees memory)."""
        try:
            return self._loader(entry, self.device, self.precision)
        except (RuntimeError, MemoryError) as exc:
            if not _is_out_of_memory(exc):
                raise
            return None

    def unload_all(self, keep: LoadedModel | None = None) -> int:
        """Unload every model but `keep`; returns how many were unloaded.

        Their memory comes back only when nothing else holds them: callers drop their own
        references first.
        """
        with self._lock:
            victims = [k for k, m in self._models.items() if m is not keep]
            for k in victims:
                del self._models[k]
        if victims:
            gc.collect()  # a model can sit in a reference cycle (an error's traceback, hooks)
            _release_device_memory(self.device)
        return len(victims)

    def _make_room(self, entry: ModelEntry) -> None:
        need = entry.size_bytes * WEIGHT_EXPANSION + LOAD_MARGIN_BYTES
        while True:
            with self._lock:
                if not self._models:
                    return
                full = len(self._models) >= self.max_models
                if not full and self._free_memory(self.device) >= need:
                    return
                _key, oldest = self._models.popitem(last=False)
            log.info("unloading %s to make room for %s", oldest.entry.name, entry.name)
            del oldest
            _release_device_memory(self.device)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    from backend.inference import is_out_of_memory

    return is_out_of_memory(exc)
