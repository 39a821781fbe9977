"""The one executor the CLI and the server share: the out-of-memory retry from an empty store,
models held by no one after a job, and several outputs composited through a selection."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest

from backend import executor
from backend.errors import OutOfMemoryError
from backend.model_cache import ModelCache
from backend.models.registry import Registry
from backend.tasks.context import TaskContext
from backend.tasks.spec import TaskInputs
from tests import extra_tasks
from tests.model_zoo import save_tiny


@pytest.fixture(scope="module")
def entry(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("executor-models")
    save_tiny("compact", root, file_name="tiny-x4")
    return Registry([root]).find("tiny-x4")


def spec_of(task_id: str):
    return next(s for s in extra_tasks.TEST_SPECS if s.id == task_id)


def test_out_of_memory_retries_once_from_an_empty_store(entry) -> None:
    store = ModelCache("cpu", "fp32", max_models=4)
    other = store.get(entry)  # loaded before the job: the retry must unload it
    alive = weakref.ref(other)
    del other
    spec = spec_of("test-oom-once")
    extra_tasks.calls.clear()
    image = np.zeros((8, 8, 3), np.uint8)
    params = spec.parse_params({"tile": 16})
    result = executor.run_task(
        spec, TaskInputs(image), params, {"model": entry}, store, TaskContext()
    )
    assert extra_tasks.calls == ["oom-once", "oom-once"]
    assert result.outputs[0].pixels.shape == (32, 32, 3)
    gc.collect()
    assert alive() is None  # the first load was released for the retry


def test_a_job_that_never_fits_leaves_nothing_loaded(entry) -> None:
    store = ModelCache("cpu", "fp32", max_models=4)
    spec = spec_of("test-oom-always")
    with pytest.raises(OutOfMemoryError, match="even with every other model unloaded"):
        executor.run_task(
            spec,
            TaskInputs(np.zeros((8, 8, 3), np.uint8)),
            spec.parse_params({}),
            {"model": entry},
            store,
            TaskContext(),
        )
    assert store.loaded_names() == []


def test_every_output_is_composited_through_the_selection() -> None:
    spec = spec_of("test-split")
    image = np.full((20, 20, 3), 100, np.uint8)
    mask = np.zeros((20, 20, 1), np.uint8)
    mask[5:15, 5:15] = 255
    result = executor.run_task(
        spec, TaskInputs(image, mask), spec.parse_params({}), {}, ModelCache("cpu"),
        TaskContext(), feather=1.0,
    )  # fmt: skip
    assert [o.name for o in result.outputs] == ["bright", "inverse"]
    for out in result.outputs:
        assert out.overlay and out.pixels.shape == (20, 20, 4)
        assert out.pixels[0, 0, 3] == 0 and out.pixels[10, 10, 3] == 255


def test_the_executor_runs_from_a_path_that_is_not_the_repo(tmp_path: Path) -> None:
    """A task module imports nothing relative to the working folder (installed use)."""
    import subprocess
    import sys

    code = "from backend.tasks.registry import discover; print(len(discover()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and int(out.stdout) >= 3, out.stderr
