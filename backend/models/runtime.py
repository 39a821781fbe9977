"""A model loaded onto a device in its chosen precision, ready to run tiles."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend import paths
from backend.devices import Notify, choose_precision, configure_threads, resolve_device
from backend.models.loading import load_descriptor
from backend.models.registry import ModelEntry

#: Beyond this a CPU gains nothing from bigger tiles (the overlap already costs only 14%);
#: progress and cancel work inside a tile, so a slow tile freezes nothing.
CPU_MAX_TILE = 512
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

    @property
    def precision_label(self) -> str:
        """The configuration that runs, e.g. "fp32 + channels-last"."""
        return self.precision + (" + channels-last" if self.channels_last else "")

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
        """The largest tile (multiple of 32) that fits the memory budget."""
        cpu = self.device.type == "cpu"
        budget = free_bytes * (0.35 if cpu else 0.6)
        side = math.sqrt(max(budget, 0) / self.bytes_per_input_pixel())
        tile = int(side) // TILE_STEP * TILE_STEP
        return max(MIN_AUTO_TILE, min(CPU_MAX_TILE if cpu else MAX_TILE, tile))


def load_model(
    entry: ModelEntry, device: str = "auto", precision: str = "auto", notify: Notify | None = None
) -> LoadedModel:
    """`notify` hears about a precision measurement before it starts (default: stderr)."""
    from backend.inference import prepare

    configure_threads()
    dev = resolve_device(device)
    descriptor = load_descriptor(Path(entry.path))
    descriptor.to(dev).eval()
    chosen = choose_precision(
        descriptor, dev, precision, paths.cache_dir() / "precision.json", notify
    )
    prepare(descriptor, dev, chosen.dtype, chosen.channels_last)
    return LoadedModel(entry, descriptor, dev, chosen.dtype, chosen.reason, chosen.channels_last)
