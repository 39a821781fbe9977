"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of `runs` calls, after one warm-up call (kernel selection, allocation)."""
    return interleaved_medians([fn], runs)[0]


def interleaved_medians(fns: list[Callable[[], object]], runs: int) -> list[float]:
    """Median wall time of each function over `runs` rounds, one call of each per round in
    turn (the order reversed every other round), after one warm-up call of each: a burst of
    load elsewhere on the machine then slows every function alike instead of whichever
    happened to be running, which on a shared host decides a comparison."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for k in range(runs):
        order = list(enumerate(fns))
        for i, fn in order if k % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


@contextlib.contextmanager
def quiet_output(fds: tuple[int, ...] = (1,)) -> Iterator[None]:
    """Silence what C code prints on these file descriptors (the ncnn engines' progress
    lines), which Python's own redirection cannot reach."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    with open(os.devnull, "w") as devnull:
        for fd in fds:
            os.dup2(devnull.fileno(), fd)
        try:
            yield
        finally:
            for fd, copy in zip(fds, saved):
                os.dup2(copy, fd)
                os.close(copy)
