"""Running a face restoration model (GFPGAN, CodeFormer, RestoreFormer) on one aligned face.

Each family wants its input a little differently: GFPGAN and CodeFormer take [-1, 1] and give
[-1, 1]; spandrel's RestoreFormer wrapper converts by itself. CodeFormer also takes a fidelity
weight w (0 = most restoration, 1 = closest to the input face).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from backend.errors import InvalidParameterError, OutOfMemoryError
from backend.faces.align import FACE_SIZE
from backend.inference import LayerWatch, autocast_context, input_dtype, is_out_of_memory
from backend.models.runtime import LoadedModel

#: architectures whose network works in [-1, 1] and is called directly (not through spandrel)
SIGNED_RANGE = ("GFPGAN", "CodeFormer")


class FaceRestorer:
    """One loaded face model; `restore` takes and gives (512, 512, 3) float32 RGB in [0, 1]."""

    def __init__(self, model: LoadedModel, on_layer: Callable[[float], None] | None = None) -> None:
        if model.descriptor.purpose != "FaceSR":
            raise InvalidParameterError(
                f"{model.entry.name} is a {model.descriptor.purpose} model, not a face "
                "restoration model.",
                "Pick a GFPGAN, CodeFormer or RestoreFormer model from `restora models list`.",
            )
        self.model = model
        self.architecture = model.descriptor.architecture.id
        self.watch = LayerWatch(model.descriptor.model, on_layer) if on_layer else None

    @property
    def uses_fidelity(self) -> bool:
        return self.architecture == "CodeFormer"

    @torch.inference_mode()
    def restore(self, face: np.ndarray, fidelity: float = 0.5) -> np.ndarray:
        descriptor = self.model.descriptor
        x = torch.from_numpy(np.ascontiguousarray(face.transpose(2, 0, 1)))[None]
        x = x.to(descriptor.device, input_dtype(descriptor, self.model.precision))
        try:
            with (
                self.watch or contextlib.nullcontext(),
                autocast_context(descriptor.device, self.model.precision),
            ):
                y = self._forward(descriptor, x, fidelity)
        except RuntimeError as exc:
            if is_out_of_memory(exc):
                raise OutOfMemoryError(
                    f"Out of memory restoring a {FACE_SIZE}x{FACE_SIZE} face.",
                    "Close other programs using the GPU, or run on the CPU (--device cpu).",
                ) from exc
            raise
        return y[0].float().clamp_(0, 1).cpu().numpy().transpose(1, 2, 0)

    def _forward(self, descriptor: Any, x: torch.Tensor, fidelity: float) -> torch.Tensor:
        if self.architecture not in SIGNED_RANGE:
            return descriptor(x)
        net = descriptor.model
        x = x * 2 - 1
        if self.architecture == "CodeFormer":
            y = net(x, weight=fidelity, adain=True)[0]
        else:  # fixed noise: the same photo gives the same face every time
            y = net(x, return_rgb=False, randomize_noise=False)[0]
        return (y + 1) / 2
