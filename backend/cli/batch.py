"""What `restora upscale` and `restora faces` share around the model: saying what is going on,
checking every input and output before a model is loaded, writing results, and the tally."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

Say = Callable[[str], None]


def status_printer(quiet: bool) -> Say:
    """A line on stderr for each step of a run (nothing with -q)."""

    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    return say


def report(src: Path, message: str, hint: str = "") -> None:
    from backend.cli.common import error

    error(f"{src}: {message.removeprefix(f'{src.name}: ')}", hint)


def precheck(
    inputs: list[tuple[Path, Path | None]], targets: list[Path], say: Say
) -> tuple[list[tuple[Path, Path]], int]:
    """(input, output) pairs worth running, and how many were refused: every input is decoded
    in full and every output folder is checked writable, so a bad file or a read-only folder
    fails in a second, not after the model has loaded (or after inference)."""
    from backend.errors import RestoraError
    from backend.imaging import check_writable, read_image

    started = time.perf_counter()
    say(f"checking {len(inputs)} input{'s' if len(inputs) != 1 else ''}...")
    ok: list[tuple[Path, Path]] = []
    failed = 0
    folders: dict[Path, RestoraError | None] = {}
    for (src, _root), dst in zip(inputs, targets):
        try:
            read_image(src)
            if dst.parent not in folders:
                try:
                    check_writable(dst.parent)
                    folders[dst.parent] = None
                except RestoraError as exc:
                    folders[dst.parent] = exc
            problem = folders[dst.parent]
            if problem is not None:
                raise problem
        except RestoraError as exc:
            failed += 1
            report(src, exc.message, exc.hint)
            continue
        ok.append((src, dst))
    if ok and time.perf_counter() - started > 1:
        say(f"inputs checked in {time.perf_counter() - started:.1f}s")
    return ok, failed


def write_result(dst: Path, pixels, compress_level: int, quality: int) -> None:
    """Write one result; say what the output format could not hold (alpha, 16 bits)."""
    from backend.imaging import write_image

    for note in write_image(dst, pixels, compress_level=compress_level, quality=quality):
        print(f"restora: warning: {dst}: {note}.", file=sys.stderr)


def tally(failed: int, total: int) -> int:
    """The exit status of a batch, after saying how many failed."""
    if failed:
        print(f"{failed} of {total} images failed.", file=sys.stderr)
        return 2
    return 0


def import_torch(say: Say) -> None:
    """Import PyTorch (seconds on a first run) after saying so."""
    if "torch" not in sys.modules:
        say("loading PyTorch...")
        import torch  # noqa: F401
