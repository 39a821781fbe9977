"""Device and dtype policy, decided per model and machine by measuring, not by assuming.

fp16 on CUDA and MPS where the architecture supports it; on a CPU, bf16 autocast with
channels_last is several times faster than fp32 where the CPU has AMX/AVX512-BF16 and slower
where it does not, so the candidates are timed once per architecture and the answer is cached,
keyed on what changes the answer: PyTorch's version, the CPU model and the thread count.
Each candidate is timed several times, interleaved with the others, and the medians compared,
so a burst of load elsewhere skews every candidate alike instead of condemning one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
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
#: timed runs per candidate after its warm-up (the median counts)
MEASURE_ROUNDS = 3
#: a candidate this many times slower than the best, twice in a row, is not timed further
#: (bf16 emulated in software is 5-10x slower: no need to time it three times)
HOPELESS = 2.5
#: below this warm-up time, the cost of switching configuration between runs would dominate
SETTLE_BELOW_S = 0.25

Notify = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


@dataclass(frozen=True)
class Precision:
    dtype: str
    reason: str
    channels_last: bool = False  # NHWC activations: faster for bf16 on AMX, often not for fp32

    @property
    def label(self) -> str:
        """What runs, e.g. "fp32", "fp32 + channels-last", "bf16 + channels-last"."""
        return self.dtype + (" + channels-last" if self.channels_last else "")


def choose_precision(
    descriptor: Any,
    device: torch.device,
    requested: str = "auto",
    cache_file: Path | None = None,
    notify: Notify | None = None,
) -> Precision:
    """Pick fp32 / fp16 / bf16 (and, on a CPU, the memory format) for this model here.

    `notify` hears about a measurement before it starts (default: a line on stderr)."""
    if requested not in DTYPES:
        raise DeviceError(f"Unknown precision '{requested}'.", f"Use one of: {', '.join(DTYPES)}.")
    half, bf16 = descriptor.supports_half, descriptor.supports_bfloat16
    if requested != "auto":
        if (requested == "fp16" and not half) or (requested == "bf16" and not bf16):
            raise DeviceError(
                f"{descriptor.architecture.name} does not support {requested}.",
                "Use --precision auto or fp32.",
            )
        channels_last = device.type == "cpu" and requested == "bf16"
        return Precision(requested, "requested", channels_last)
    if device.type in ("cuda", "mps"):
        if half:
            return Precision("fp16", f"{device.type}: architecture supports fp16")
        if bf16 and device.type == "cuda":
            import torch

            if torch.cuda.is_bf16_supported():
                return Precision("bf16", "cuda: no fp16 support, bf16 available")
        return Precision("fp32", f"{device.type}: no reduced precision available")
    return _measured_cpu_precision(descriptor, cache_file, notify or _stderr)


def machine_identity() -> str:
    """What a CPU measurement holds for: PyTorch's version, the CPU and the thread count."""
    import torch

    return f"torch {torch.__version__} | {cpu_model()} | {torch.get_num_threads()} threads"


def _cpu_key(descriptor: Any) -> str:
    n_params = sum(p.numel() for p in descriptor.model.parameters())
    digest = hashlib.sha1(machine_identity().encode()).hexdigest()[:12]
    return f"v3:{descriptor.architecture.id}:{n_params}:{digest}"


def forget_measurements(cache_file: Path) -> int:
    """Drop every cached CPU measurement (`restora doctor --remeasure`); returns how many."""
    cache = _read_json(cache_file)
    if cache:
        _write_json(cache_file, {})
    return len(cache)


def cached_measurements(cache_file: Path) -> dict[str, Any]:
    return _read_json(cache_file)


def cpu_model() -> str:
    """The CPU's marketing name (platform.processor() is empty on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


#: CPU flags (Linux's names) of instructions that compute in bf16 rather than emulate it
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.cache  # read once: every diffusion and HYPIR load asks
def cpu_bf16_instructions() -> frozenset[str]:
    """Which of BF16_FLAGS this CPU has (none where /proc/cpuinfo cannot tell: fp32 there)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split()) & BF16_FLAGS
    except OSError:
        pass
    return frozenset()


#: CPU configurations tried, as (name, dtype, channels_last); the first is the baseline.
CPU_CANDIDATES = (("fp32", "fp32", False), ("fp32+nhwc", "fp32", True), ("bf16+nhwc", "bf16", True))


def _measured_cpu_precision(descriptor: Any, cache_file: Path | None, notify: Notify) -> Precision:
    key = _cpu_key(descriptor)
    cache = _read_json(cache_file)
    record = cache.get(key)
    times: dict[str, float] = record.get("times", {}) if isinstance(record, dict) else {}
    if not times:
        arch = descriptor.architecture.name
        notify(
            f"measuring the fastest precision for {arch} on this CPU, once "
            "(seconds to a minute; `restora doctor --remeasure` redoes it)..."
        )
        times = measure_cpu_candidates(descriptor)
        if cache_file:
            cache[key] = {"times": times, "machine": machine_identity(), "architecture": arch}
            _write_json(cache_file, cache)
    # a reduced precision must clearly win; fp32's two memory formats compete freely
    fp32_name = min((n for n in times if n.startswith("fp32")), key=times.__getitem__)
    choice = fp32_name
    if "bf16+nhwc" in times and times[fp32_name] / times["bf16+nhwc"] >= BF16_MIN_SPEEDUP:
        choice = "bf16+nhwc"
    _, dtype, nhwc = next(c for c in CPU_CANDIDATES if c[0] == choice)
    measured = ", ".join(f"{n} {t:.3f}s" for n, t in times.items())
    return Precision(dtype, f"cpu: measured, median per tile {measured}", nhwc)


def measure_cpu_candidates(descriptor: Any, rounds: int = MEASURE_ROUNDS) -> dict[str, float]:
    """Median seconds per probe tile of each CPU candidate, timed in interleaved rounds."""
    import torch

    from backend.inference import set_memory_format, set_weight_dtype

    runners: dict[str, Callable[[], float]] = {}
    warm: dict[str, float] = {}
    samples: dict[str, list[float]] = {}
    for name, dtype, nhwc in CPU_CANDIDATES:
        if dtype == "bf16" and not descriptor.supports_bfloat16:
            continue
        runner = _probe_runner(descriptor, dtype, nhwc)
        try:
            warm[name] = runner()  # pays for kernel selection and allocation: not counted
        except RuntimeError:  # a network that cannot run channels-last (GFPGAN's views)
            set_memory_format(descriptor, False)
            continue
        runners[name], samples[name] = runner, []
    for _ in range(rounds):
        for name, runner in runners.items():
            if warm[name] < SETTLE_BELOW_S:
                runner()  # the first run after a switch pays for it: fast models run twice
            samples[name].append(runner())
        best = min(statistics.median(s) for s in samples.values())
        best_warm = min(warm.values())
        for name in list(runners):
            # far behind in its warm-up and its first timed run: it cannot win
            if warm[name] > HOPELESS * best_warm and min(samples[name]) > HOPELESS * best:
                del runners[name]
    set_weight_dtype(descriptor, torch.float32)
    set_memory_format(descriptor, False)
    return {name: round(statistics.median(s), 4) for name, s in samples.items()}


def _read_json(path: Path | None) -> dict[str, Any]:
    if not path or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs a re-measurement


PROBE_SIZE = 64


def _probe_input(descriptor: Any, size: int = PROBE_SIZE) -> torch.Tensor:
    import torch

    req = descriptor.size_requirements
    size = max(size, req.minimum)
    size = -(-size // req.multiple_of) * req.multiple_of
    return torch.rand(
        1, descriptor.input_channels, size, size, generator=torch.Generator().manual_seed(0)
    )


def _probe_call(descriptor: Any) -> Any:
    """An inpainting model (LaMa, MAT) is timed filling a hole: it takes a mask as well."""
    if type(descriptor).__name__ != "MaskedImageModelDescriptor":
        return None

    def call(d: Any, x: torch.Tensor) -> torch.Tensor:
        import torch

        mask = torch.zeros_like(x[:, :1])
        h, w = x.shape[2:]
        mask[:, :, h // 4 : h // 2, w // 4 : w // 2] = 1.0
        return d(x, mask)

    return call


def _probe_runner(descriptor: Any, precision: str, channels_last: bool) -> Callable[[], float]:
    """A function that runs one probe tile in this configuration and returns its seconds."""
    from backend.inference import run_tensor, set_memory_format

    x = _probe_input(descriptor)
    call = _probe_call(descriptor)

    def run() -> float:
        set_memory_format(descriptor, channels_last)  # re-laying the weights is not timed
        start = time.perf_counter()
        run_tensor(descriptor, x, precision, channels_last, call)
        return time.perf_counter() - start

    return run


def time_model(
    descriptor: Any,
    precision: str,
    size: int = PROBE_SIZE,
    repeats: int = 2,
    channels_last: bool = False,
) -> float:
    """Median seconds of `repeats` runs of one `size`x`size` tile, after one warm-up run."""
    from backend.inference import run_tensor

    x = _probe_input(descriptor, size)
    call = _probe_call(descriptor)
    times = []
    for _ in range(repeats + 1):  # the first run pays for kernel selection and allocation
        start = time.perf_counter()
        run_tensor(descriptor, x, precision, channels_last, call)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:] or times)
