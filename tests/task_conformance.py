"""What every task must do, checked the same way for each: a task's tests inherit `TaskConformance`
and say how to run it (its spec, a models folder, an image to run on).

Checked: importing the module imports no torch; the spec describes every parameter (label,
range for numbers) and round-trips through /v1/tasks' JSON and the command line; every preset
sets declared parameters within their ranges and picks models by traits the catalog gives some
model of the task (so it can ever match), and runs; progress never
goes backwards and ends at 1; a cancel lands within a step; 8- and 16-bit, gray, gray + alpha
and RGBA inputs keep their depth (and the task's declared channels); a selection leaves nothing
outside it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from backend import executor
from backend.errors import CancelledError
from backend.jobs import task_info
from backend.model_cache import ModelCache
from backend.models.catalog import TRAITS, load_catalog
from backend.models.registry import Registry
from backend.tasks.context import Progress, TaskContext
from backend.tasks.spec import Limits, TaskInputs, TaskSpec
from shared.protocol import TaskInfo
from tests.conftest import REPO


class TaskConformance:
    spec: ClassVar[TaskSpec]
    #: the task's module, imported alone in a fresh interpreter
    module: ClassVar[str]
    #: params for the runs here (small tiles, so a cancel has steps to land between)
    run_params: ClassVar[dict[str, Any]] = {}

    # - what a task's test class provides -

    @pytest.fixture(scope="class")
    @classmethod
    def models_dir(cls, tmp_path_factory: pytest.TempPathFactory) -> Path | None:
        """A models folder holding a model the task runs (None for a task without a model)."""
        return None

    @pytest.fixture(scope="class")
    @classmethod
    def sample(cls, face_crop: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(face_crop[:48, :40])

    def expected_channels(self, channels: int) -> int:
        """The output's channels for an input of `channels` (a layer of faces adds alpha)."""
        return channels

    def expected_output(self, name: str, dtype: Any, channels: int) -> tuple[Any, int]:
        """(dtype, channels) of output `name` for an input of `dtype` and `channels`: the
        input's own, by default (a mask output is 8-bit gray)."""
        if {o.name: o.kind for o in self.spec.outputs}.get(name) == "mask":
            return np.uint8, 1
        return dtype, self.expected_channels(channels)

    # - the machinery -

    @pytest.fixture(scope="class")
    @classmethod
    def store(cls) -> ModelCache:
        return ModelCache(device="cpu", precision="fp32", max_models=4)

    def run(
        self,
        models_dir: Path | None,
        store: ModelCache,
        pixels: np.ndarray,
        mask: np.ndarray | None = None,
        ctx: TaskContext | None = None,
        params: dict[str, Any] | None = None,
    ) -> executor.TaskResult:
        spec = self.spec
        params = spec.parse_params(self.run_params if params is None else params)
        inputs = TaskInputs(pixels, mask)
        entries = {}
        if spec.model is not None:
            assert models_dir is not None, "a task with a model needs the models_dir fixture"
            fits = [
                e
                for e in Registry([models_dir]).entries()
                if e.usable and e.folder in spec.model.folders and e.purpose in spec.model.purposes
            ]
            assert fits, f"no model for {spec.id} in {models_dir}"
            entries["model"] = fits[0]
        if spec.prepare is not None:
            spec.prepare(params, inputs, entries.get("model"), Limits(50_000_000))
        return executor.run_task(spec, inputs, params, entries, store, ctx or TaskContext())

    # - the checks -

    def test_importing_the_task_imports_no_torch(self) -> None:
        code = f"import sys, {self.module}; assert 'torch' not in sys.modules, 'torch imported'"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)

    def test_every_parameter_is_described(self) -> None:
        assert self.spec.title and self.spec.help
        for f in self.spec.fields():
            assert f.info.label, f.name
            if f.type in ("int", "float") and f.widget != "seed":
                assert f.info.minimum is not None and f.info.maximum is not None, f.name
                assert f.info.minimum <= (f.default if f.default is not None else f.info.minimum)
            if f.info.choices:
                assert f.default in f.info.choices or f.default is None, f.name

    def test_the_description_round_trips_through_json(self) -> None:
        info = task_info(self.spec)
        assert TaskInfo.from_json(info.to_json()) == info
        assert {p.name for p in info.params} == {f.name for f in self.spec.fields()}

    def test_every_preset_sets_declared_options_within_their_ranges(self) -> None:
        declared = {f.name for f in self.spec.fields()}
        info = task_info(self.spec)
        assert [p.name for p in info.presets] == [p.name for p in self.spec.presets]
        catalog_task = self.spec.model.catalog_task if self.spec.model else ""
        offered = load_catalog().by_task(catalog_task) if catalog_task else []
        for preset, shown in zip(self.spec.presets, info.presets):
            assert preset.label and preset.help, preset.name
            assert set(preset.params) <= declared, preset.name
            params = self.spec.parse_params(dict(preset.params))
            for key, value in preset.params.items():
                assert getattr(params, key) == value, (preset.name, key)
            assert shown.params == dict(preset.params)
            assert shown.model_traits == list(preset.model_traits)
            assert set(preset.model_traits) <= set(TRAITS), preset.name
            if preset.model_traits:
                assert self.spec.model is not None, preset.name
                assert any(set(preset.model_traits) <= set(e.traits) for e in offered), (
                    f"no catalog model of {catalog_task!r} has the traits of {preset.name}"
                )

    def test_every_preset_runs(
        self, models_dir: Path | None, store: ModelCache, sample: np.ndarray
    ) -> None:
        for preset in self.spec.presets:
            # the class's own run params win: small tiles and few steps keep this quick
            params = {**preset.params, **self.run_params}
            result = self.run(models_dir, store, sample, params=params)
            assert result.outputs or result.nothing_found, preset.name

    def test_parameters_round_trip_through_the_command_line(self) -> None:
        from backend.cli.tasks import build_task_parser, params_from_args, task_argv

        parser = build_task_parser(self.spec)
        for values in (_defaults(self.spec), _non_defaults(self.spec)):
            mask = ["--mask", "mask.png"] if self.spec.mask == "required" else []
            argv = ["in.png", *mask, *task_argv(self.spec, values)]
            parsed = params_from_args(self.spec, parser.parse_args(argv))
            assert self.spec.parse_params(parsed) == self.spec.parse_params(values), argv

    def test_progress_never_goes_backwards_and_ends_at_one(
        self, models_dir: Path | None, store: ModelCache, sample: np.ndarray
    ) -> None:
        seen: list[Progress] = []
        self.run(models_dir, store, sample, ctx=TaskContext(seen.append))
        fractions = [p.fraction for p in seen]
        assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
        assert all(0.0 <= f <= 1.0 for f in fractions)

    def test_a_cancel_lands_within_a_step(
        self, models_dir: Path | None, store: ModelCache, sample: np.ndarray
    ) -> None:
        after: list[Progress] = []
        ctx = TaskContext(None)
        cancelled = threading.Event()

        def report(p: Progress) -> None:
            if cancelled.is_set():
                after.append(p)
            elif p.fraction > 0.0:  # the first step after loading: cancel now
                ctx.cancel.cancel()
                cancelled.set()

        ctx._root.report = report
        with pytest.raises(CancelledError):
            self.run(models_dir, store, sample, ctx=ctx)
        assert len(after) <= 2, [p.stage for p in after]

    @pytest.mark.parametrize(
        ("dtype", "channels"),
        [(np.uint8, 1), (np.uint8, 2), (np.uint8, 3), (np.uint16, 4), (np.uint16, 3)],
    )
    def test_depth_and_channels_are_kept(
        self,
        models_dir: Path | None,
        store: ModelCache,
        sample: np.ndarray,
        dtype: Any,
        channels: int,
    ) -> None:
        pixels = _as(sample, dtype, channels)
        result = self.run(models_dir, store, pixels)
        for out in result.outputs:
            want_dtype, want_channels = self.expected_output(out.name, dtype, channels)
            assert out.pixels.dtype == want_dtype, out.name
            assert out.pixels.shape[2] == want_channels, out.name
            if not self.spec.resizes:
                assert out.pixels.shape[:2] == pixels.shape[:2], out.name

    def test_nothing_is_left_outside_the_selection(
        self, models_dir: Path | None, store: ModelCache, sample: np.ndarray
    ) -> None:
        if self.spec.mask == "ignored":
            return
        h, w = sample.shape[:2]
        mask = np.zeros((h, w, 1), np.uint8)
        mask[h // 4 : h // 2, w // 4 : w // 2] = 255
        result = self.run(models_dir, store, sample, mask=mask)
        for out in result.outputs:
            alpha = out.pixels[..., -1]
            sy, sx = out.pixels.shape[0] / h, out.pixels.shape[1] / w
            outside = np.ones(alpha.shape, bool)
            # the feather may spread a little beyond the selection; far from it nothing shows
            y0, y1 = int((h // 4 - 8) * sy), int((h // 2 + 8) * sy)
            x0, x1 = int((w // 4 - 8) * sx), int((w // 2 + 8) * sx)
            outside[max(y0, 0) : y1, max(x0, 0) : x1] = False
            assert not alpha[outside].any(), out.name


def _as(rgb: np.ndarray, dtype: Any, channels: int) -> np.ndarray:
    base = rgb.astype(np.uint16) * 257 if dtype == np.uint16 else rgb.copy()
    top = 65535 if dtype == np.uint16 else 255
    gray = base.mean(axis=2, keepdims=True).astype(dtype)
    alpha = np.full(gray.shape, top, dtype)
    alpha[:4] = top // 2  # some transparency, to be kept
    return {
        1: gray,
        2: np.concatenate([gray, alpha], axis=2),
        3: base.astype(dtype),
        4: np.concatenate([base.astype(dtype), alpha], axis=2),
    }[channels]


def _defaults(spec: TaskSpec) -> dict[str, Any]:
    return {f.name: f.default for f in spec.fields() if f.default is not None}


def _non_defaults(spec: TaskSpec) -> dict[str, Any]:
    """A value other than the default for every parameter, inside its range."""
    values: dict[str, Any] = {}
    for f in spec.fields():
        info = f.info
        if f.type == "bool":
            values[f.name] = not f.default
        elif info.choices:
            values[f.name] = next((c for c in info.choices if c != f.default), info.choices[0])
        elif f.type in ("int", "float"):
            low = info.minimum if info.minimum is not None else 0
            high = info.maximum if info.maximum is not None else low + 10
            value = low + (high - low) / 3
            values[f.name] = round(value) if f.type == "int" else round(value, 3)
        elif f.widget == "model":
            values[f.name] = "some-model"
        else:
            values[f.name] = "a value with spaces"
    return values
