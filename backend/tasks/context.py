"""What a running task reports through and listens to: progress, steps, previews and cancel.

A task gets one `TaskContext`. It reports `ctx.progress(0.4, "upscaling", step=3, steps=12)`,
hands a part of its work to a sub-step with `ctx.span(0.1, 0.9, "upscaling")` (whose 0..1 maps
onto 0.1..0.9 of its parent), and calls `ctx.check_cancel()` between steps. The context is also
a plain `(fraction, stage)` callable, so engine code that takes a progress sink takes it as is.
Progress never goes backwards: a retry after out-of-memory keeps the bar where it was.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from backend.errors import CancelledError

#: a preview image is passed on at most this often: encoding one costs time on every step
PREVIEW_INTERVAL = 1.0


class CancelToken:
    """Set from any thread; the job notices between tiles, layers or steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError("The job was cancelled.", "")


@dataclass
class Progress:
    fraction: float
    stage: str
    step: int | None = None
    steps: int | None = None
    preview: Any = None  # an HxWxC uint8 array, now and then


Report = Callable[[Progress], None]


class _Root:
    """The state one job's contexts share: where the bar is, when the last preview went out."""

    def __init__(self, report: Report | None, cancel: CancelToken) -> None:
        self.report = report
        self.cancel = cancel
        self.fraction = 0.0
        self.last_preview = 0.0
        self.lock = threading.Lock()


class TaskContext:
    def __init__(
        self,
        report: Report | None = None,
        cancel: CancelToken | None = None,
        *,
        device: Any = None,
        _root: _Root | None = None,
        _start: float = 0.0,
        _end: float = 1.0,
        _stage: str = "",
    ) -> None:
        self._root = _root or _Root(report, cancel or CancelToken())
        self._start, self._end, self._stage = _start, _end, _stage
        self.device = device
        #: the model store the job runs with (the executor sets it): shared helpers such as
        #: the face detector come from it
        self.models: Any = None
        #: the model registry the caller chose from (the CLI's or the server's): a task that
        #: runs further models by itself finds their default entries in it
        self.registry: Any = None

    # - progress -

    def progress(
        self,
        fraction: float,
        stage: str = "",
        *,
        step: int | None = None,
        steps: int | None = None,
    ) -> None:
        root = self._root
        overall = self._start + (self._end - self._start) * min(max(float(fraction), 0.0), 1.0)
        with root.lock:
            root.fraction = max(root.fraction, overall)
            event = Progress(root.fraction, stage or self._stage, step, steps)
        if root.report is not None:
            root.report(event)

    def __call__(self, fraction: float, stage: str = "") -> None:
        """A plain progress sink, for engine code that takes `(fraction, stage)`."""
        self.progress(fraction, stage)

    def step(self, done: int, total: int, stage: str = "") -> None:
        """`done` of `total` steps (tiles, sampler steps) are finished."""
        self.progress(done / max(total, 1), stage, step=done, steps=total)

    def span(self, start: float, end: float, stage: str = "") -> TaskContext:
        """A context for one part of the work: its 0..1 is this context's `start`..`end`."""
        width = self._end - self._start
        child = TaskContext(
            device=self.device,
            _root=self._root,
            _start=self._start + width * start,
            _end=self._start + width * end,
            _stage=stage or self._stage,
        )
        child.models = self.models
        child.registry = self.registry
        return child

    @property
    def fraction(self) -> float:
        return self._root.fraction

    # - previews -

    def preview(self, image: Any, stage: str = "") -> None:
        """Offer an intermediate image; passed on at most every PREVIEW_INTERVAL seconds."""
        root = self._root
        now = time.monotonic()
        with root.lock:
            if now - root.last_preview < PREVIEW_INTERVAL:
                return
            root.last_preview = now
            event = Progress(root.fraction, stage or self._stage, preview=image)
        if root.report is not None:
            root.report(event)

    # - cancel -

    @property
    def cancel(self) -> CancelToken:
        return self._root.cancel

    @property
    def cancelled(self) -> bool:
        return self._root.cancel.cancelled

    def check_cancel(self) -> None:
        self._root.cancel.raise_if_cancelled()

    # - diffusers -

    def diffusers_callback(self, steps: int, stage: str = "denoising") -> Callable[..., dict]:
        """A `callback_on_step_end` that reports step n of `steps` and stops on cancel.

        Raising (rather than setting the pipeline's interrupt flag) is what keeps a cancelled
        pipeline from running its VAE decode; run the call inside `pipeline_run` so the
        offload hooks are released after it.
        """

        def on_step_end(pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
            self.step(step + 1, steps, stage)
            self.check_cancel()
            return kwargs

        return on_step_end

    @contextmanager
    def pipeline_run(self, pipe: Any) -> Iterator[None]:
        """Around a diffusers call: cancel before it starts, and free its hooks however it ends."""
        self.check_cancel()
        try:
            yield
        finally:
            release = getattr(pipe, "maybe_free_model_hooks", None)
            if release is not None:
                release()
