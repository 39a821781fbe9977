"""Device and dtype policy, decided per model and machine by measuring, not by assuming.

fp16 on CUDA and MPS where the architecture supports it; on a CPU, bf16 autocast with
channels_last is several times faster than fp32 where the CPU has AMX/AVX512-BF16 and slower
where it does not, so both are timed once per architecture and the answer is cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.errors import DeviceError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "fp32", "fp16", "bf16")
#: bf16 must beat fp32 by this factor to be chosen: small gains are not worth the precision.
BF16_MIN_SPEEDUP = 1.3


def resolve_device(name: str = "auto") -> torch.device:
    import torch

    if name not in DEVICES and not name.startswith("cuda:"):
        raise DeviceError(f"Unknown device '{name}'.", f"Use one of: {', '.join(DEVICES)}.")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            "CUDA was asked for but no NVIDIA GPU is usable here.",
            "Use --device cpu, or install a CUDA build of PyTorch.",
        )
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise DeviceError("MPS was asked for but is not available.", "Use --device cpu.")
    return torch.device(name)


def configure_threads() -> None:
    import torch

    cores = os.cpu_count() or 1
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)


def free_memory(device: torch.device) -> int:
    """Bytes that a new allocation on `device` can count on."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
    return _available_ram()


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def dtype_from_name(name: str) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def dtype_name(dtype: torch.dtype) -> str:
    import torch

    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


@dataclass(frozen=True)
class Precision:
    dtype: str
    reason: str
    tile_seconds: float | None = None  # measured seconds for one PROBE_SIZE tile, if known


def choose_precision(
    descriptor: Any, device: torch.device, requested: str = "auto", cache_file: Path | None = None
) -> Precision:
    """Pick fp32 / fp16 / bf16 for this model on this device."""
    if requested not in DTYPES:
        raise DeviceError(f"Unknown precision '{requested}'.", f"Use one of: {', '.join(DTYPES)}.")
    half, bf16 = descriptor.supports_half, descriptor.supports_bfloat16
    if requested != "auto":
        if (requested == "fp16" and not half) or (requested == "bf16" and not bf16):
            raise DeviceError(
                f"{descriptor.architecture.name} does not support {requested}.",
                "Use --precision auto or fp32.",
            )
        return Precision(requested, "requested")
    if device.type in ("cuda", "mps"):
        if half:
            return Precision("fp16", f"{device.type}: architecture supports fp16")
        if bf16 and device.type == "cuda":
            import torch

            if torch.cuda.is_bf16_supported():
                return Precision("bf16", "cuda: no fp16 support, bf16 available")
        return Precision("fp32", f"{device.type}: no reduced precision available")
    if not bf16:
        return Precision("fp32", "cpu: architecture has no bf16 support")
    return _measured_cpu_precision(descriptor, cache_file)


def _cpu_key(descriptor: Any) -> str:
    import torch

    n_params = sum(p.numel() for p in descriptor.model.parameters())
    ident = f"{platform.processor()}|{_cpu_model()}|{torch.__version__}|{os.cpu_count()}"
    return (
        f"{descriptor.architecture.id}:{n_params}:{hashlib.sha1(ident.encode()).hexdigest()[:12]}"
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _measured_cpu_precision(descriptor: Any, cache_file: Path | None) -> Precision:
    key = _cpu_key(descriptor)
    cache: dict[str, Any] = {}
    if cache_file and cache_file.exists():
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
    if key in cache:
        hit = cache[key]
        return Precision(
            hit["dtype"],
            f"cpu: measured fp32 {hit['fp32']:.3f}s, bf16 {hit['bf16']:.3f}s per tile",
            hit[hit["dtype"]],
        )
    fp32_s = time_model(descriptor, "fp32")
    # one bf16 run first: where bf16 is emulated it is many times slower, so stop there
    first = time_model(descriptor, "bf16", repeats=0)
    bf16_s = first if first > 2 * fp32_s else time_model(descriptor, "bf16", repeats=1)
    choice = "bf16" if fp32_s / bf16_s >= BF16_MIN_SPEEDUP else "fp32"
    if cache_file:
        cache[key] = {"dtype": choice, "fp32": fp32_s, "bf16": bf16_s}
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            os.replace(tmp, cache_file)
        except OSError:
            pass
    return Precision(
        choice,
        f"cpu: measured fp32 {fp32_s:.3f}s, bf16 {bf16_s:.3f}s per tile",
        fp32_s if choice == "fp32" else bf16_s,
    )


PROBE_SIZE = 64


def time_model(descriptor: Any, precision: str, size: int = PROBE_SIZE, repeats: int = 2) -> float:
    """Best-of-`repeats` seconds for one `size`x`size` tile, after one warm-up run."""
    import torch

    from backend.inference import run_tensor

    req = descriptor.size_requirements
    size = max(size, req.minimum)
    size = -(-size // req.multiple_of) * req.multiple_of
    x = torch.rand(
        1, descriptor.input_channels, size, size, generator=torch.Generator().manual_seed(0)
    )
    times = []
    for _ in range(repeats + 1):  # the first run pays for kernel selection and allocation
        start = time.perf_counter()
        run_tensor(descriptor, x, precision)
        times.append(time.perf_counter() - start)
    return min(times[1:] or times)
