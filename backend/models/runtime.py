"""A model loaded onto a device in its chosen precision, ready to run tiles."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend import paths
from backend.devices import (
    PROBE_SIZE,
    choose_precision,
    configure_threads,
    resolve_device,
    time_model,
)
from backend.models.loading import load_descriptor
from backend.models.registry import ModelEntry

#: On a CPU a tile should take about this long, so progress moves and cancel answers quickly.
CPU_SECONDS_PER_TILE = 4.0
TILE_STEP = 32
MIN_TILE = 32  # the floor when halving after out-of-memory
MIN_AUTO_TILE, MAX_TILE = 64, 2048


@dataclass
class LoadedModel:
    entry: ModelEntry
    descriptor: Any
    device: Any
    precision: str
    precision_reason: str
    channels_last: bool = False
    seconds_per_pixel: float | None = None

    @property
    def scale(self) -> int:
        """The network's own scale: what one pass through it does."""
        return int(self.descriptor.scale)

    @property
    def default_output_scale(self) -> int:
        """The scale the model is meant to deliver (an ncnn x2 model may be an x4 net + resize)."""
        return self.entry.output_scale or self.scale

    def feature_channels(self) -> int:
        widest = 3
        for p in self.descriptor.model.parameters():
            if p.ndim == 4:
                widest = max(widest, int(p.shape[0]))
        return widest

    def bytes_per_input_pixel(self) -> float:
        """A deliberately generous estimate of activation memory per input pixel."""
        elem = 2 if self.precision in ("fp16", "bf16") and self.device.type != "cpu" else 4
        s2 = self.scale * self.scale
        return elem * (self.feature_channels() * 8 + 3 * s2 * 4) + 3 * s2 * 4

    def auto_tile(self, free_bytes: int) -> int:
        """The largest tile (multiple of 32) that fits the memory budget and, on a CPU, the time."""
        budget = free_bytes * (0.6 if self.device.type != "cpu" else 0.35)
        side = math.sqrt(max(budget, 0) / self.bytes_per_input_pixel())
        if self.device.type == "cpu" and self.seconds_per_pixel:
            side = min(side, math.sqrt(CPU_SECONDS_PER_TILE / self.seconds_per_pixel))
        tile = int(side) // TILE_STEP * TILE_STEP
        return max(MIN_AUTO_TILE, min(MAX_TILE, tile))


def load_model(entry: ModelEntry, device: str = "auto", precision: str = "auto") -> LoadedModel:
    from backend.inference import prepare

    configure_threads()
    dev = resolve_device(device)
    descriptor = load_descriptor(Path(entry.path))
    descriptor.to(dev).eval()
    chosen = choose_precision(descriptor, dev, precision, paths.cache_dir() / "precision.json")
    prepare(descriptor, dev, chosen.dtype, chosen.channels_last)
    loaded = LoadedModel(entry, descriptor, dev, chosen.dtype, chosen.reason, chosen.channels_last)
    if dev.type == "cpu":
        size = max(PROBE_SIZE, descriptor.size_requirements.minimum)
        seconds = chosen.tile_seconds if size == PROBE_SIZE else None
        if seconds is None:
            seconds = time_model(descriptor, chosen.dtype, size, 1, chosen.channels_last)
        loaded.seconds_per_pixel = seconds / size**2
    return loaded
