"""The text beside GIMP's progress bar: the command, the backend's stage with its step count,
the time elapsed and an estimate of the time left (common/progress.py).

GIMP shows one line in the image window's status bar; a bare percentage says nothing about a
job that may take minutes, so the line says what is happening and for how long. Standard
library only: plugin.py hands the lines to Gimp.progress_set_text.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..common.progress import ProgressClock, progress_line

SEPARATOR = " \u00b7 "


class ProgressText:
    """The line for one run; `update` and `tick` return it when it changed, else None."""

    def __init__(self, title: str, now: Callable[[], float] = time.monotonic) -> None:
        self.title = title
        self.clock = ProgressClock(now)
        self.stage = ""
        self._shown = ""

    def update(self, fraction: float, stage: str) -> str | None:
        """The backend reported progress (negative: unknown, e.g. while connecting)."""
        self.clock.update(fraction)
        self.stage = stage
        return self.tick()

    def tick(self) -> str | None:
        """Time passed without news: the elapsed time still moves."""
        line = f"{self.title}{SEPARATOR}{progress_line(self.stage, self.clock)}"
        if line == self._shown:
            return None
        self._shown = line
        return line
