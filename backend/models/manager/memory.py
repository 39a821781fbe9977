"""Bytes held by loaded models, the offload tier a model's size calls for, and real release.

Tiers, for a model of `need` bytes whose largest component has `largest` bytes, with
`margin` bytes of working memory (activations, the scheduler's latents, framework buffers):
  resident            need + margin <= free device memory: every component stays on the device
  model_offload       largest + margin <= free device memory and need <= free host memory:
                      components live in host memory and move to the device one at a time
  sequential_offload  need <= free host memory: weights stream to the device layer by layer
                      (slowest; needs only one layer and the margin on the device)
  otherwise           OutOfMemoryError with the numbers: not even the host can hold it
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

from backend.allocator import release_free_memory
from backend.errors import OutOfMemoryError

log = logging.getLogger("restora.models")

Tier = Literal["resident", "model_offload", "sequential_offload"]

#: working memory a diffusion step needs beyond the weights on the device
TIER_MARGIN_BYTES = 1 << 30


def megabytes(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MB"


def choose_tier(
    need_bytes: int,
    free_device_bytes: int,
    free_host_bytes: int,
    largest_part_bytes: int | None = None,
    margin_bytes: int = TIER_MARGIN_BYTES,
) -> Tier:
    """The fastest tier that fits (see the module's table); `largest_part_bytes` defaults to
    the whole model (one component: model offload gains nothing)."""
    largest = need_bytes if largest_part_bytes is None else largest_part_bytes
    if need_bytes + margin_bytes <= free_device_bytes:
        return "resident"
    if need_bytes <= free_host_bytes:
        if largest + margin_bytes <= free_device_bytes:
            return "model_offload"
        return "sequential_offload"
    raise OutOfMemoryError(
        f"The model needs {megabytes(need_bytes)}; the device has {megabytes(free_device_bytes)}"
        f" free and the computer's memory {megabytes(free_host_bytes)}.",
        "Close other programs, or use a smaller (quantized) model.",
    )


def tensors_of(obj: Any) -> Iterator[Any]:
    """The parameters and buffers of the torch modules in `obj`: a module, a spandrel
    descriptor or a LoadedModel (through .descriptor / .model), or a dict or list of them."""
    import torch

    seen: set[int] = set()
    stack = [obj]
    while stack:
        cur = stack.pop()
        if id(cur) in seen or cur is None:
            continue
        seen.add(id(cur))
        if isinstance(cur, torch.Tensor):
            yield cur
        elif isinstance(cur, torch.nn.Module):
            yield from cur.parameters()
            yield from cur.buffers()
        elif isinstance(cur, dict):
            stack.extend(cur.values())
        elif isinstance(cur, (list, tuple)):
            stack.extend(cur)
        else:
            stack.extend(getattr(cur, a, None) for a in ("descriptor", "model", "models"))


def torch_nbytes(obj: Any) -> int:
    """Bytes of every distinct tensor storage `obj` holds (tied weights counted once)."""
    storages: dict[tuple[str, int], int] = {}
    for t in tensors_of(obj):
        storage = t.untyped_storage()
        storages[(str(t.device), storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def release_memory(device: Any) -> None:
    """Collect what was dropped, then hand the allocator's cached blocks back to the driver
    (without it, freed CUDA or MPS memory stays reserved by this process)."""
    from backend.cpu_fusion import release_scratch

    gc.collect()
    release_scratch()
    release_free_memory()
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind in ("cuda", "mps"):
        import torch

        if kind == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()
        elif kind == "mps" and torch.backends.mps.is_available():
            torch.mps.empty_cache()


def load_retrying(name: str, load: Callable[[], Any], unload_all: Callable[[], int]) -> Any:
    """`load()`; after out-of-memory, once more with every unpinned item unloaded."""
    try:
        return load()
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
    log.warning("out of memory loading %s; unloading every unpinned model and retrying", name)
    unload_all()
    try:
        return load()
    except (RuntimeError, MemoryError) as again:
        if not is_out_of_memory(again):
            raise
    raise OutOfMemoryError(
        f"Not enough memory to load {name}.",
        "Close other programs using the GPU, or use a smaller model.",
    )


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    from backend.inference import is_out_of_memory as torch_out_of_memory

    return torch_out_of_memory(exc)
