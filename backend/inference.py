"""Running one spandrel model on one tile: device, precision, padding, memory format."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backend import cpu_fusion
from backend.errors import OutOfMemoryError

#: (descriptor, input batch) -> output batch
ModelCall = Callable[[Any, torch.Tensor], torch.Tensor]


def padded_size(height: int, width: int, req: Any) -> tuple[int, int]:
    """The smallest size >= (height, width) that meets spandrel's SizeRequirements."""
    h, w = max(height, req.minimum), max(width, req.minimum)
    if req.square:
        h = w = max(h, w)
    m = req.multiple_of
    return -(-h // m) * m, -(-w // m) * m


def pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad at the bottom/right, mirroring the image where it is big enough to mirror."""
    dh, dw = height - x.shape[2], width - x.shape[3]
    if dh == 0 and dw == 0:
        return x
    mode = "reflect" if dh < x.shape[2] and dw < x.shape[3] else "replicate"
    return F.pad(x, (0, dw, 0, dh), mode=mode)


def autocast_context(
    device: torch.device, precision: str
) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16" and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


#: layers whose weights CPU autocast casts to bf16 on every call (convolutions, linear, PReLU)
AUTOCAST_BF16_LAYERS = (
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.ConvTranspose1d,
    torch.nn.ConvTranspose2d,
    torch.nn.ConvTranspose3d,
    torch.nn.Linear,
    torch.nn.PReLU,
)


def prepare(descriptor: Any, device: torch.device, precision: str, channels_last: bool) -> Any:
    """Move the model to the device, in the weight dtype and memory format chosen for it."""
    set_weight_dtype(descriptor, torch.float32)  # the fp32 weights back, if a measurement cast
    descriptor.to(device)
    if precision == "fp16":
        descriptor.half()
    elif precision == "bf16" and device.type != "cpu":
        descriptor.bfloat16()
    else:
        descriptor.float()  # CPU bf16 runs through autocast, over the weights set just below
    if precision == "bf16" and device.type == "cpu":
        set_weight_dtype(descriptor, torch.bfloat16)
        descriptor.__dict__.pop("_restora_fp32", None)  # the model runs bf16 from now on
    set_memory_format(descriptor, channels_last)
    descriptor.eval()
    if device.type == "cpu":
        cpu_fusion.fuse(descriptor.model)
    return descriptor


def set_weight_dtype(descriptor: Any, dtype: torch.dtype) -> None:
    """Store the weights of the layers autocast runs in bf16 (AUTOCAST_BF16_LAYERS) in `dtype`.

    Under CPU bf16 autocast those weights are cast on every call, in every tile; cast once
    here, the results are the same to the bit and RRDBNet took 31% less time (a 2-thread
    EPYC, interleaved runs). Other parameters (norms, position tables) stay fp32, as autocast
    computes with them. The fp32 weights are kept while a measurement switches precisions."""
    if getattr(descriptor, "_restora_weights", torch.float32) == dtype:
        return
    kept: dict[int, torch.Tensor] = descriptor.__dict__.setdefault("_restora_fp32", {})
    with torch.no_grad():
        for module in descriptor.model.modules():
            if not isinstance(module, AUTOCAST_BF16_LAYERS):
                continue
            for tensor in module.parameters(recurse=False):
                if dtype == torch.float32:
                    original = kept.pop(id(tensor), None)
                    tensor.data = original if original is not None else tensor.data.float()
                elif tensor.dtype != dtype:  # a weight two layers share is cast once
                    kept[id(tensor)] = tensor.data
                    tensor.data = tensor.data.to(dtype)
    descriptor._restora_weights = dtype
    descriptor._restora_nhwc = None  # the kept weights may be in the other layout


def input_dtype(descriptor: Any, precision: str) -> torch.dtype:
    """The dtype a model's input is given in: fp32 under CPU autocast (whatever its weights
    are stored in, autocast casts the input where a layer needs bf16), else the weights'."""
    if precision == "bf16" and descriptor.device.type == "cpu":
        return torch.float32
    return descriptor.dtype


def set_memory_format(descriptor: Any, channels_last: bool) -> None:
    if getattr(descriptor, "_restora_nhwc", None) != channels_last:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        # only 4-D weights have a channels-last layout (GFPGAN's modulated convs are 5-D,
        # which Module.to(memory_format=...) refuses)
        with torch.no_grad():
            for tensor in (*descriptor.model.parameters(), *descriptor.model.buffers()):
                if tensor.ndim == 4:
                    tensor.data = tensor.data.contiguous(memory_format=fmt)
        descriptor._restora_nhwc = channels_last


@torch.inference_mode()
def run_tensor(
    descriptor: Any,
    x: torch.Tensor,
    precision: str,
    channels_last: bool = False,
    call: ModelCall | None = None,
) -> torch.Tensor:
    """(1, C, h, w) float in [0, 1] -> (1, C, h*s, w*s) float32 on the CPU.

    `call(descriptor, x)` replaces the descriptor's own call, for a model that takes a further
    input (FBCNN's JPEG quality, DRUNet's noise level)."""
    device = descriptor.device
    if device.type == "cpu":
        cpu_fusion.fuse(descriptor.model)
        set_weight_dtype(descriptor, torch.bfloat16 if precision == "bf16" else torch.float32)
    set_memory_format(descriptor, channels_last)
    h, w = x.shape[2], x.shape[3]
    ph, pw = padded_size(h, w, descriptor.size_requirements)
    x = pad_to(x.to(device), ph, pw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.to(input_dtype(descriptor, precision))
    with autocast_context(device, precision):
        y = call(descriptor, x) if call is not None else descriptor(x)
    s = descriptor.scale
    return y[:, :, : h * s, : w * s].float().clamp_(0, 1).cpu()


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text
        or "can't allocate memory" in text
        or "MPS backend out of memory" in text
    )


def free_device_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def leaf_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers that run: modules without children, and fused layers (backend.cpu_fusion)
    as one each, without the original layers inside them."""
    found: list[torch.nn.Module] = []
    seen: set[int] = set()

    def walk(m: torch.nn.Module) -> None:
        if id(m) in seen:  # a layer two blocks share is watched once
            return
        seen.add(id(m))
        children = list(m.children())
        if not children or getattr(m, "restora_leaf", False):
            found.append(m)
            return
        for c in children:
            walk(c)

    walk(model)
    return found


class LayerWatch:
    """Forward pre-hooks on the model's leaf layers, active while a tile runs.

    They let a job be cancelled within one layer and report progress inside a tile, so the
    tile size can be chosen for speed and memory alone: a big tile on a slow CPU neither
    freezes the progress bar nor delays a cancel.
    """

    def __init__(self, model: torch.nn.Module, on_layer: Callable[[float], None]) -> None:
        self.leaves = leaf_layers(model)
        self.on_layer = on_layer
        self.calls_per_tile = 0  # learned from the first tile (a layer may run several times)
        self._calls = 0
        self._handles: list[Any] = []

    def _hook(self, _module: torch.nn.Module, _inputs: Any) -> None:
        self._calls += 1
        expected = self.calls_per_tile or len(self.leaves)
        self.on_layer(min(self._calls / max(expected, 1), 0.99))

    def __enter__(self) -> LayerWatch:
        self._calls = 0
        self._handles = [m.register_forward_pre_hook(self._hook) for m in self.leaves]
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if exc_type is None:
            self.calls_per_tile = max(self.calls_per_tile, self._calls)


class TileRunner:
    """Callable used by `tiled_apply`: float32 (h, w, 3) numpy tile -> upscaled numpy tile.

    `on_layer(fraction of the tile done)` is called between layers; it may raise to cancel.
    """

    def __init__(
        self,
        descriptor: Any,
        precision: str,
        channels_last: bool = False,
        on_layer: Callable[[float], None] | None = None,
        call: ModelCall | None = None,
    ) -> None:
        self.descriptor = descriptor
        self.call = call
        self.precision = precision
        self.channels_last = channels_last
        if descriptor.device.type == "cpu":
            cpu_fusion.fuse(descriptor.model)  # before the watch: it watches the fused layers
        self.watch = LayerWatch(descriptor.model, on_layer) if on_layer else None

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1)))[None]
        try:
            with self.watch or contextlib.nullcontext():
                y = run_tensor(self.descriptor, x, self.precision, self.channels_last, self.call)
        except RuntimeError as exc:
            if is_out_of_memory(exc):
                raise OutOfMemoryError(
                    f"Out of memory on a {tile.shape[1]}x{tile.shape[0]} tile.",
                    "Use a smaller --tile.",
                ) from exc
            raise
        return y[0].numpy().transpose(1, 2, 0)
