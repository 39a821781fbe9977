"""One way to run a task, for the CLI and the server alike.

Steps: 1. load the models the job names (its own and those its "model" parameters name),
2. run the task, 3. on out-of-memory (the task already went down to its smallest tile) unload
every model this job does not use and run it once more, 4. composite each image output through
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
    # 1. models, pinned so that loading the next one cannot evict them
    ctx.progress(0.0, "loading model")
    ctx.models = models
    inputs.models = {}
    try:
        with models.pinned(*entries.values()):
            for key, entry in entries.items():
                ctx.check_cancel()
                inputs.models[key] = models.get(entry)
            ctx.check_cancel()

            # 2 + 3. run; once more with nothing else loaded after out-of-memory
            try:
                raw = spec.run(ctx, inputs, params)
            except OutOfMemoryError:
                freed = models.unload_all(keep=list(inputs.models.values()))
                log.warning("%s ran out of memory; unloaded %d other models", spec.id, freed)
                ctx.progress(0.0, "retrying with less memory")
                raw = spec.run(ctx, inputs, params)
    finally:
        inputs.models = {}  # the store owns the models: a finished job holds none of them
    result = as_result(spec, raw)

    # 4. selection
    if inputs.mask is not None and spec.mask != "ignored":
        ctx.progress(1.0, "masking")
        radius = feather if feather is not None else masking.resolve_feather(inputs.mask, None)
        for out in result.outputs:
            if out.pixels is not None and _is_image(spec, out.name):
                out.pixels = masking.apply_selection(out.pixels, inputs.mask, radius)
    return result


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
