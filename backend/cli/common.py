"""What every `restora` command shares: options, error lines, the registry, a progress bar."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable


def add_quality(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quality",
        type=int,
        default=95,
        choices=range(1, 101),
        metavar="1-100",
        help="JPEG and WebP quality (default 95)",
    )


def add_models_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models-dir",
        action="append",
        metavar="DIR",
        help="extra models folder (ComfyUI/A1111 layout); may be repeated; also RESTORA_MODELS",
    )


def error(message: str, hint: str = "") -> None:
    print(f"restora: error: {message}", file=sys.stderr)
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)


def registry(args: argparse.Namespace):
    from backend import paths
    from backend.models.registry import Registry

    return Registry(paths.models_dirs(args.models_dir))


class ProgressBar:
    """A bar redrawn in place on a terminal; elsewhere (a log, a pipe) one line at the start,
    then one every `interval` seconds, and one at the end."""

    INTERVAL_S = 5.0

    def __init__(
        self,
        label: str,
        enabled: bool,
        interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.label, self.enabled, self.interval, self.clock = label, enabled, interval, clock
        self.start = clock()
        self.printed_at: float | None = None
        self.tty = sys.stderr.isatty()

    def __call__(self, fraction: float, stage: str) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if (
            not self.tty
            and fraction < 1.0
            and self.printed_at is not None
            and now - self.printed_at < self.interval
        ):
            return
        self.printed_at = now
        filled = int(fraction * 30)
        bar = "#" * filled + "-" * (30 - filled)
        text = f"{self.label} [{bar}] {fraction * 100:5.1f}% {stage:10} {now - self.start:6.1f}s"
        print(
            ("\r" if self.tty else "") + text,
            end="" if self.tty else "\n",
            file=sys.stderr,
            flush=True,
        )

    def elapsed(self) -> float:
        return self.clock() - self.start

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)
