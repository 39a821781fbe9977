"""`restora doctor`: what Restora runs on here (PyTorch, CPU, threads, GPU), the precision
measured for each architecture, and `--remeasure` to measure again."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    doctor = sub.add_parser(
        "doctor",
        help="show the machine, PyTorch and the measured precisions; --remeasure redoes them",
        description="Show what Restora runs on: PyTorch, the CPU and its threads, the GPU, and "
        "the CPU precision measured for each model architecture (kept in the cache folder, "
        "measured again by itself when PyTorch, the CPU or the thread count changes). "
        "--remeasure forgets every measurement and measures MODEL's architecture now.",
    )
    doctor.add_argument(
        "--remeasure",
        action="store_true",
        help="forget the measured CPU precisions and measure MODEL again now",
    )
    doctor.add_argument(
        "-m",
        "--model",
        default=None,
        help="the model to measure with --remeasure (default: realesrgan-x4plus)",
    )
    from backend.cli.common import add_models_dir

    add_models_dir(doctor)
    return doctor


def cmd_doctor(args: argparse.Namespace) -> int:
    from backend import __version__, paths
    from backend.cli.batch import import_torch, status_printer

    say = status_printer(False)
    import_torch(say)
    import torch

    from backend.devices import (
        cached_measurements,
        configure_threads,
        cpu_model,
        forget_measurements,
        resolve_device,
    )

    configure_threads()
    cache_file = paths.cache_dir() / "precision.json"
    print(f"restora {__version__}, PyTorch {torch.__version__}, Python {sys.version.split()[0]}")
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads")
    device = resolve_device("auto")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"device: {device.type}" + (f" ({gpu})" if gpu else ""))
    from backend import cpu_kernels
    from backend.faces import native

    # built here on first use, so a missing compiler shows now rather than as slow runs
    print(f"face detector kernels: {native.status()}")
    print(f"element-wise kernels (PReLU): {cpu_kernels.KERNELS.status()}")
    if args.remeasure:
        forgotten = forget_measurements(cache_file)
        print(f"forgot {forgotten} measurement{'s' if forgotten != 1 else ''} in {cache_file}")
        from backend.models.registry import DEFAULT_UPSCALE_MODEL
        from backend.models.runtime import load_model

        entry = _registry(args).find(args.model or DEFAULT_UPSCALE_MODEL)
        model = load_model(entry, device="cpu", precision="auto", notify=say)
        print(f"{entry.name} ({entry.architecture}) on the CPU: {model.precision_label}")
        print(f"  {model.precision_reason}")
    measured = cached_measurements(cache_file)
    if not measured:
        print("CPU precisions: none measured yet (measured at the first run of each architecture)")
    for record in measured.values():
        if isinstance(record, dict) and isinstance(record.get("times"), dict):
            times = ", ".join(f"{n} {t:.3f}s" for n, t in record["times"].items())
            print(f"measured: {record.get('architecture', '?')}: {times} ({record.get('machine')})")
    return 0


def _registry(args: argparse.Namespace) -> Any:
    from backend.cli.common import registry

    return registry(args)
