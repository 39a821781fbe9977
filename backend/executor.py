"""One way to run a task, for the CLI and the server alike.

Steps: 1. load the models the job names (its own and those its "model" parameters name),
2. run the task, 3. on out-of-memory (the task already went down to its smallest tile) unload
every model, reload the job's own and run it once more, 4. composite each image output through
the selection's feathered mask. So a selection, the memory strategy and the outputs behave the
same from `restora faces -m ... --mask` as from a plug-in.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from backend import masking
from backend.errors import OutOfMemoryError
from backend.tasks.context import TaskContext
from backend.tasks.spec import Output, TaskInputs, TaskResult, TaskSpec

log = logging.getLogger("restora.executor")


class ModelSource(Protocol):
    """What the executor needs of the model store (backend.models.manager.ModelManager)."""

    def get(self, entry: Any) -> Any: ...

    def unload_all(self, keep: Any = None) -> int: ...

    def pinned(self, *things: Any) -> AbstractContextManager[None]: ...


def run_task(
    spec: TaskSpec,
    inputs: TaskInputs,
    params: Any,
    entries: dict[str, Any],
    models: ModelSource,
    ctx: TaskContext,
    feather: float | None = None,
) -> TaskResult:
    """Run `spec` on `inputs`; `entries` maps "model" (and helper parameter names) to the
    registry entries to load."""
    # 1 + 2. models and the run; 3. after out-of-memory (the task already went down to its
    # smallest tile) once more from an empty store, the job's own models reloaded
    ctx.models = models
    raw = _attempt(spec, inputs, params, entries, models, ctx)
    if raw is None:
        freed = models.unload_all()
        log.warning("%s ran out of memory; unloaded %d models, retrying", spec.id, freed)
        ctx.progress(0.0, "retrying with less memory")
        raw = _attempt(spec, inputs, params, entries, models, ctx)
    if raw is None:
        models.unload_all()  # the job does not fit: give its memory back at once
        raise OutOfMemoryError(
            "Not enough memory for this job, even with every other model unloaded and the "
            "smallest tiles.",
            "Close other programs using the GPU, use a smaller model, or work on a selection.",
        )
    result = as_result(spec, raw)

    # 4. selection
    if inputs.mask is not None and spec.mask != "ignored":
        ctx.progress(1.0, "masking")
        if not spec.feather:
            radius = 0.0  # the mask is the region itself: its own edge, exactly
        elif feather is not None:
            radius = feather
        else:
            radius = masking.resolve_feather(inputs.mask, None)
        for out in result.outputs:
            if out.pixels is not None and _is_image(spec, out.name):
                out.pixels = masking.apply_selection(out.pixels, inputs.mask, radius)
                out.overlay = True
    return result


def _attempt(
    spec: TaskSpec,
    inputs: TaskInputs,
    params: Any,
    entries: dict[str, Any],
    models: ModelSource,
    ctx: TaskContext,
) -> Any:
    """One run with the job's models loaded and pinned; None when it ran out of memory.

    The error is not kept: its traceback holds the frames that hold the models and the
    activations, and the retry needs that memory back.
    """
    ctx.progress(0.0, "loading model")
    try:
        with models.pinned(*entries.values()):
            # a model the store cannot fit even with everything else unloaded is refused here,
            # with what it needs: that is final, not a reason to retry
            for key, entry in entries.items():
                ctx.check_cancel()
                inputs.models[key] = models.get(entry)
            ctx.check_cancel()
            try:
                return spec.run(ctx, inputs, params)
            except OutOfMemoryError as exc:
                log.info("%s: %s", spec.id, exc.message)
                return None
    finally:
        inputs.models = {}  # the store owns the models: a finished run holds none of them


def as_result(spec: TaskSpec, raw: Any) -> TaskResult:
    """A task may return a bare array (its first output) or a TaskResult."""
    if isinstance(raw, TaskResult):
        return raw
    if isinstance(raw, np.ndarray):
        first = spec.outputs[0]
        return TaskResult([Output(first.name, raw, first.title)])
    raise TypeError(f"task {spec.id} returned {type(raw).__name__}, not an image or TaskResult")


def _is_image(spec: TaskSpec, name: str) -> bool:
    declared = {o.name: o.kind for o in spec.outputs}
    return declared.get(name, "image") == "image"
