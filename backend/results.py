"""Finished jobs' outputs and where they go on the canvas.

`ResultStore` keeps each job's named outputs in memory up to a budget; beyond it, fetched
results are dropped (oldest first) and then unfetched ones are written to this server's spill
folder (backend/result_spill.py), so none is lost. `result_info` says, for each output, its
size and its placement on the canvas.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.result_spill import SpillFolder, spill_root
from shared.geometry import Bounds, Extent
from shared.protocol import Placement, ResultInfo, ResultOutput


@dataclass
class _Stored:
    outputs: dict[str, np.ndarray] | None
    paths: dict[str, Path] | None
    nbytes: int
    fetched: float | None = None


class ResultStore:
    def __init__(self, memory_limit: int, spill_dir: str | None = None) -> None:
        self.memory_limit = memory_limit
        self.spill = SpillFolder(spill_root(spill_dir))
        self._items: OrderedDict[str, _Stored] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, job_id: str, outputs: dict[str, np.ndarray]) -> list[str]:
        """Store a job's outputs; returns the ids of fetched results dropped to make room."""
        with self._lock:
            nbytes = sum(p.nbytes for p in outputs.values())
            self._items[job_id] = _Stored(dict(outputs), None, nbytes)
            return self._enforce_budget()

    def get(self, job_id: str, output: str) -> np.ndarray | None:
        with self._lock:
            item = self._items.get(job_id)
            if item is None:
                return None
            if item.fetched is None:
                item.fetched = time.time()
            if item.outputs is not None:
                return item.outputs.get(output)
            path = (item.paths or {}).get(output)
        return np.load(path, mmap_mode="r") if path else None

    def drop(self, job_id: str) -> None:
        with self._lock:
            item = self._items.pop(job_id, None)
        for path in (item.paths or {}).values() if item is not None else ():
            path.unlink(missing_ok=True)

    def memory_bytes(self) -> int:
        with self._lock:
            return sum(i.nbytes for i in self._items.values() if i.outputs is not None)

    def close(self) -> None:
        with self._lock:
            self._items.clear()
            self.spill.close()

    def _enforce_budget(self) -> list[str]:
        dropped: list[str] = []
        in_memory = sum(i.nbytes for i in self._items.values() if i.outputs is not None)
        fetched = sorted(
            (i.fetched, k)
            for k, i in self._items.items()
            if i.fetched is not None and i.outputs is not None
        )
        for _when, key in fetched:
            if in_memory <= self.memory_limit:
                return dropped
            in_memory -= self._items.pop(key).nbytes
            dropped.append(key)
        for key, item in self._items.items():  # oldest first
            if in_memory <= self.memory_limit:
                break
            if item.outputs is None:
                continue
            folder = self.spill.path()
            item.paths = {}
            for n, (name, pixels) in enumerate(item.outputs.items()):
                path = folder / f"{key}-{n}.npy"  # output names need not be file-name safe
                np.save(path, pixels)
                item.paths[name] = path
            item.outputs = None
            in_memory -= item.nbytes
        return dropped


def placement(bounds: Bounds, canvas: Extent | None, width: int, height: int) -> Placement:
    """Where an output of `width` x `height` made from the input at `bounds` goes: the input's
    rectangle scaled by the output's own scale, on the canvas scaled the same way."""
    sx, sy = width / bounds.width, height / bounds.height
    return Placement(
        bounds=bounds.scaled_to(width, height),
        canvas=canvas.scaled(sx, sy) if canvas is not None else None,
        scale_x=sx,
        scale_y=sy,
    )


def result_info(
    bounds: Bounds,
    canvas: Extent | None,
    outputs: list[tuple[str, str, str, np.ndarray]],
    expires: float,
    details: dict[str, Any],
    nothing_found: bool = False,
    message: str = "",
) -> ResultInfo:
    """`outputs`: (name, title, kind, pixels) in the order the layers are to be added."""
    described = []
    for name, title, kind, pixels in outputs:
        height, width, channels = pixels.shape
        described.append(
            ResultOutput(
                name=name,
                title=title,
                width=width,
                height=height,
                channels=channels,
                depth=16 if pixels.dtype == np.uint16 else 8,
                placement=placement(bounds, canvas, width, height),
                kind=kind,
            )
        )
    if described:
        first = described[0]
        size = (first.width, first.height, first.channels, first.depth, first.placement)
    else:  # nothing found: no output, the input's own rectangle
        size = (
            bounds.width,
            bounds.height,
            0,
            8,
            placement(bounds, canvas, bounds.width, bounds.height),
        )
    return ResultInfo(
        *size,
        expires=expires,
        details=details,
        outputs=described,
        nothing_found=nothing_found,
        message=message,
    )
