"""Test-only tasks, served beside the product's own by the test servers (never by the product).

They exercise what no product task does yet, or cannot be made to do on demand: fail, crash,
run out of memory once, run slowly enough to be cancelled, return two outputs.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import weakref
from dataclasses import dataclass

import numpy as np

from backend.errors import InvalidParameterError, OutOfMemoryError
from backend.tasks import face_restore, upscale
from backend.tasks.registry import TaskRegistry, default_registry
from backend.tasks.spec import Output, OutputSpec, TaskResult, TaskSpec, param


def _slow(ctx, inputs, params):
    """The real upscale, each progress report at least 10 ms later, so a fast machine cannot
    finish a job before the test cancels it; cancelling still goes through the engine."""

    class Slow:
        cancel = ctx.cancel

        def __call__(self, fraction: float, stage: str = "") -> None:
            time.sleep(0.01)
            ctx(fraction, stage)

    return upscale.run(inputs.image, inputs.model, params, progress=Slow(), cancel=ctx.cancel)


def _fail(ctx, inputs, params):
    raise InvalidParameterError("This image upsets the model.", "Try another one.")


def _crash(ctx, inputs, params):
    return 1 / 0


_seen: set[int] = set()
calls: list[str] = []


def _oom_once(ctx, inputs, params):
    calls.append("oom-once")
    if id(inputs) not in _seen:
        _seen.add(id(inputs))
        raise OutOfMemoryError("Out of memory on a 64x64 tile.", "Use a smaller --tile.")
    return upscale.run_task(ctx, inputs, params)


def _oom_always(ctx, inputs, params):
    raise OutOfMemoryError("Out of memory on a 64x64 tile.", "Use a smaller --tile.")


#: weak references to the models the face tasks below ran with, and what was loaded at a retry
face_models_seen: list[weakref.ref] = []
loaded_at_retry: list[tuple[list[bool], list[str]]] = []


def _faces_oom_first(ctx, inputs, params):
    """The face task with a helper model; its first run runs out of memory."""
    if not face_models_seen:
        face_models_seen.extend(weakref.ref(m) for m in inputs.models.values())
        raise OutOfMemoryError("Out of memory on a 64x64 tile.", "Use a smaller --tile.")
    gc.collect()
    alive = [r() is None for r in face_models_seen]
    loaded_at_retry.append((alive, ctx.models.loaded_names()))
    return face_restore.run_task(ctx, inputs, params)


def _faces_oom_always(ctx, inputs, params):
    face_models_seen.extend(weakref.ref(m) for m in inputs.models.values())
    raise OutOfMemoryError("Out of memory on a 64x64 tile.", "Use a smaller --tile.")


@dataclass
class SplitParams:
    gain: float = param(1.0, "Gain", minimum=0.0, maximum=4.0, step=0.1)
    hold: float = param(0.0, "Hold", minimum=0.0, maximum=10.0, unit="s")


def _split(ctx, inputs, params: SplitParams) -> TaskResult:
    """Two outputs of the input's size: the image brightened, and its inverse."""
    image = inputs.image
    top = 65535 if image.dtype == np.uint16 else 255
    bright = np.clip(image.astype(np.float32) * params.gain, 0, top).astype(image.dtype)
    ctx.preview(bright, "splitting")  # an intermediate image, as a sampler offers one
    if params.hold:  # long enough for a client to fetch the preview while the job runs
        deadline = time.monotonic() + params.hold
        while time.monotonic() < deadline and not ctx.cancelled:
            time.sleep(0.01)
    ctx.check_cancel()
    ctx.step(1, 2, "splitting")
    inverse = (top - image).astype(image.dtype)
    ctx.step(2, 2, "splitting")
    return TaskResult(
        [Output("bright", bright, "Brighter"), Output("inverse", inverse, "Inverse")],
        {"gain": params.gain},
    )


def _upscale_like(task_id: str, run) -> TaskSpec:
    title = f"Test {task_id.removeprefix('test-')}"  # a menu tells them from the real Upscale
    return dataclasses.replace(
        upscale.SPEC, id=task_id, title=title, command=task_id, run=run, order=900
    )


TEST_SPECS = (
    _upscale_like("test-slow-upscale", _slow),
    _upscale_like("test-fail", _fail),
    _upscale_like("test-crash", _crash),
    _upscale_like("test-oom-once", _oom_once),
    _upscale_like("test-oom-always", _oom_always),
    dataclasses.replace(
        face_restore.SPEC,
        id="test-faces-oom-first",
        title="Test faces-oom-first",
        command="",
        run=_faces_oom_first,
        order=910,
    ),
    dataclasses.replace(
        face_restore.SPEC,
        id="test-faces-oom-always",
        title="Test faces-oom-always",
        command="",
        run=_faces_oom_always,
        order=911,
    ),
    TaskSpec(
        id="test-split",
        title="Split (test)",
        help="Two layers from one: brighter and inverse.",
        params=SplitParams,
        run=_split,
        outputs=(OutputSpec("bright", "Brighter"), OutputSpec("inverse", "Inverse")),
        order=901,
    ),
)


def with_test_tasks() -> TaskRegistry:
    return TaskRegistry([*default_registry(), *TEST_SPECS])
