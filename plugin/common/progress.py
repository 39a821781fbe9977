"""Progress as an artist reads it: the stage, tile or step n of m, time elapsed and left.

The backend reports a fraction and a stage (with its step count); the estimate is the editor's:
the rate since the first real progress (model loading reports 0% for seconds and would make any
estimate from the start meaningless), shown once a few percent and a couple of seconds are
behind, so it does not jump about in the first tile.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: no estimate before this much of the job and this many seconds of progress
ESTIMATE_AFTER_FRACTION = 0.03
ESTIMATE_AFTER_SECONDS = 2.0


def format_duration(seconds: float) -> str:
    """0:07, 1:05, 1:02:03."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressClock:
    """Elapsed time of one job and an estimate of the time left, from its fractions."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self.started = now()
        self.fraction = 0.0
        self._first: tuple[float, float] | None = None  # (time, fraction) of first progress
        self._last: tuple[float, float] | None = None

    def update(self, fraction: float) -> None:
        """Record the job's progress (negative: unknown, e.g. while reconnecting)."""
        if fraction < 0:
            return
        t = self._now()
        if fraction < self.fraction:  # a new stage that starts over: the estimate restarts
            self._first = None
        self.fraction = fraction
        if fraction > 0 and self._first is None:
            self._first = (t, fraction)
        self._last = (t, fraction)

    def elapsed(self) -> float:
        return self._now() - self.started

    def remaining(self) -> float | None:
        """Seconds left at the rate since the first progress; None until it can be told."""
        if self._first is None or self._last is None:
            return None
        (t0, f0), (t1, f1) = self._first, self._last
        done, spent = f1 - f0, t1 - t0
        if f1 - f0 < ESTIMATE_AFTER_FRACTION or spent < ESTIMATE_AFTER_SECONDS or done <= 0:
            return None
        left = (1.0 - f1) * spent / done - (self._now() - t1)
        return max(left, 0.0)

    def describe(self) -> str:
        """"0:12 elapsed, about 0:30 left" (or only the elapsed time)."""
        text = f"{format_duration(self.elapsed())} elapsed"
        left = self.remaining()
        if left is not None:
            text += f", about {format_duration(left)} left"
        return text


def progress_line(stage: str, clock: ProgressClock | None) -> str:
    """The line under a progress bar: "upscaling: step 3 of 12 · 0:12 elapsed, about 0:30
    left". The stage's further lines (the backend's note, see job_runner.stage_text) follow
    the time, so a narrow panel that cuts the line still shows how long the job has run."""
    first, *notes = stage.split("\n")
    line = first
    if clock is not None:
        line = f"{first} · {clock.describe()}" if first else clock.describe()
    return " · ".join([line, *notes])
