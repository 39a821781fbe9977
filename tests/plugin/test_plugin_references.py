"""Reference images from the plug-ins: the layers picked for a task's further images are read
whole through the editor, uploaded one by one and named in the job; the choice is kept per
task in the settings; a picked layer the document lacks is left out with a note.

The backend is the real one on loopback, running the product's tasks plus one test task that
takes two further images and reports what it received (shape and pixel sum of each), so the
test sees exactly what reached the task.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from backend.tasks.registry import TaskRegistry, default_registry
from backend.tasks.spec import ImageInput, Output, OutputSpec, TaskResult, TaskSpec
from plugin.common.catalog import Catalog
from plugin.common.client import Client
from plugin.common.errors import PluginError
from plugin.common.job_runner import JobInput, JobRunner, Outcome
from plugin.common.operations import prepare_task, references
from plugin.common.settings import Settings
from plugin.gimp.flow import run_action
from plugin.gimp.procedures import Action, BadArgument, build_settings, spec_for
from shared.geometry import Bounds, Extent
from shared.protocol import ImageInputInfo, TaskInfo
from tests import server_fixtures as fx
from tests.plugin_fixtures import FakeEditor, FakeLayer, Recorder, checker, to_buffer

tiny_models = fx.tiny_models
TASK = "test-references"


@dataclass
class NoParams:
    pass


def _look(ctx: Any, inputs: Any, params: NoParams) -> TaskResult:
    """The layer unchanged; in the details, what arrived of each further image."""
    seen = {name: [*image.shape, int(image.astype(np.int64).sum())]
            for name, image in inputs.images.items()}
    return TaskResult([Output("result", inputs.image, "Looked")],
                      {"received": seen, "references": len(seen)})


LOOK = TaskSpec(
    id=TASK, title="References (test)", help="Reports the further images it received.",
    params=NoParams, run=_look,
    images=(ImageInput("ref_a", "Reference A (Picture 2)", help="Another picture."),
            ImageInput("ref_b", "Reference B (Picture 3)")),
    outputs=(OutputSpec("result", "Looked"),), order=950)


@pytest.fixture(scope="module")
def server(tiny_models: fx.ModelsSetup) -> Iterator[fx.LiveServer]:
    tasks = TaskRegistry([*default_registry(), LOOK])
    with fx.live_server(fx.test_settings(tiny_models), tasks) as live:
        yield live


def summary(pixels: np.ndarray) -> list[int]:
    """What the test task reports of an image: its shape and the sum of its values."""
    return [*pixels.shape, int(pixels.astype(np.int64).sum())]


def with_references(image: np.ndarray, selection: np.ndarray | None = None) -> FakeEditor:
    """The layer to work on and, above it, two layers of their own sizes (as GIMP's are), one
    of them gray and in a group."""
    editor = FakeEditor(image, selection)
    hat = checker(size=3, width=20, height=14)
    scarf = checker(size=5, width=9, height=31, channels=2)
    group = FakeLayer("Group", np.zeros_like(image), [FakeLayer("Scarf", scarf)])
    editor.layers += [FakeLayer("Hat", hat), group]
    return editor


def run(client: Client, job: JobInput) -> Recorder:
    rec = Recorder()
    runner = JobRunner(client, job, rec).start()
    assert runner.wait(60), "the job did not end"
    assert runner.outcome == Outcome.FINISHED, rec.failed
    return rec


def test_the_backend_lists_the_test_tasks_images(catalog: Catalog) -> None:
    info = catalog.task_info(TASK)
    assert info is not None and info.available
    assert [(i.name, i.label) for i in info.images] == [
        ("ref_a", "Reference A (Picture 2)"), ("ref_b", "Reference B (Picture 3)")]


def test_the_runner_uploads_each_reference_and_names_it_in_the_job(client: Client) -> None:
    image = checker(width=16, height=12)
    a, b = checker(size=2, width=7, height=5), checker(width=3, height=9, channels=2, depth=16)
    job = JobInput(TASK, to_buffer(image), Bounds(0, 0, 16, 12), Extent(16, 12),
                   images={"ref_a": to_buffer(a), "ref_b": to_buffer(b)})
    rec = run(client, job)
    result = rec.finished[0]
    assert result.details["received"] == {"ref_a": summary(a), "ref_b": summary(b)}
    assert any(stage == "sending the reference images" for _, stage in rec.progress)
    assert result.notes == []


def test_picked_layers_are_sent_whole_also_for_a_selection(client: Client,
                                                           catalog: Catalog) -> None:
    """A selection job sends the selection's box of the layer, but each reference whole;
    a layer in a group counts, the active layer is never offered."""
    plane = np.zeros((40, 48), np.uint8)
    plane[10:20, 12:30] = 255
    editor = with_references(checker(width=48, height=40), plane)
    assert editor.list_layers() == ["Scarf", "Hat"]  # top to bottom, no group, not the source
    settings = Settings(references={TASK: {"ref_a": "Hat", "ref_b": "Scarf"}})
    prepared = prepare_task(editor, settings, TASK, catalog)
    assert prepared.in_place and prepared.input.mask is not None
    result = run(client, prepared.input).finished[0]
    hat, scarf = editor.layer("Hat").pixels, editor.layers[-1].children[0].pixels
    assert result.details["received"] == {"ref_a": summary(hat), "ref_b": summary(scarf)}


def test_a_vanished_layer_is_left_out_with_a_note(client: Client, catalog: Catalog) -> None:
    editor = with_references(checker(width=32, height=24))
    settings = Settings(references={TASK: {"ref_a": "Deleted", "ref_b": "Hat"}})
    prepared = prepare_task(editor, settings, TASK, catalog)
    assert list(prepared.input.images) == ["ref_b"]
    result = run(client, prepared.input).finished[0]
    assert result.details["received"] == {"ref_b": summary(editor.layer("Hat").pixels)}
    assert result.notes == ["Reference A (Picture 2): this image has no layer 'Deleted' "
                            "besides the one being edited, so it was left out."]


def test_the_active_layer_is_not_a_reference_even_by_name(catalog: Catalog) -> None:
    editor = with_references(checker(width=32, height=24))
    editor.source = editor.layer("Hat")  # the user made the reference the active layer
    assert "Hat" not in editor.list_layers() and "Background" in editor.list_layers()
    prepared = prepare_task(editor, Settings(references={TASK: {"ref_a": "Hat"}}), TASK,
                            catalog)
    assert prepared.input.images == {} and "no layer 'Hat'" in prepared.input.notes[0]


def test_choices_for_another_task_or_input_are_not_sent(catalog: Catalog) -> None:
    editor = with_references(checker(width=32, height=24))
    settings = Settings(references={"upscale": {"ref_a": "Hat"}, TASK: {"gone_input": "Hat"}})
    assert prepare_task(editor, settings, TASK, catalog).input.images == {}
    upscale = prepare_task(editor, Settings(models={"upscale": "tiny-x2"},
                                            references={"upscale": {"ref_a": "Hat"}}),
                           "upscale", catalog)
    assert upscale.input.images == {} and upscale.input.notes == []


def test_a_required_image_without_a_layer_is_refused_before_sending() -> None:
    info = TaskInfo("needs", True, title="Needs one",
                    images=[ImageInputInfo("style", "Style picture", required=True)])
    editor = with_references(checker(width=16, height=12))
    with pytest.raises(PluginError, match="needs style picture"):
        references(editor, Settings(), info)
    with pytest.raises(PluginError, match="no layer 'Gone'"):
        references(editor, Settings(references={"needs": {"style": "Gone"}}), info)
    images, notes = references(editor, Settings(references={"needs": {"style": "Hat"}}), info)
    assert list(images) == ["style"] and notes == []


def test_settings_keep_each_tasks_references_through_a_round_trip() -> None:
    s = Settings().with_reference("edit", "reference_1", "Hat")
    s = s.with_reference("edit", "reference_2", "Scarf").with_reference("other", "x", "Y")
    again = Settings.from_strings(s.to_strings())
    assert again.references == {"edit": {"reference_1": "Hat", "reference_2": "Scarf"},
                                "other": {"x": "Y"}}
    cleared = again.with_reference("edit", "reference_1", "")
    assert cleared.references_for("edit") == {"reference_2": "Scarf"}
    assert again.references_for("edit")["reference_1"] == "Hat"  # a new Settings each time
    assert cleared.with_reference("other", "x", "").references == {
        "edit": {"reference_2": "Scarf"}}


def test_broken_stored_references_fall_back_without_breaking_the_rest() -> None:
    strings = Settings(task="edit").to_strings()
    strings["references"] = ('{"edit": {"reference_1": "Hat", "reference_2": 3}, '
                             '"bad": "not a dict"}')
    s = Settings.from_strings(strings)
    assert s.references == {"edit": {"reference_1": "Hat"}} and s.task == "edit"
    strings["references"] = "[1, 2]"
    assert Settings.from_strings(strings).references == {}


def test_gimp_scripts_name_references_in_their_own_argument(server: fx.LiveServer) -> None:
    spec = spec_for(f"restora-{TASK}", [])
    values = {"backend-url": server.url, "references": '{"ref_a": "Hat", "ref_b": ""}'}
    settings, task = build_settings(spec, values, Settings(), {})
    assert task == TASK and settings.references == {TASK: {"ref_a": "Hat"}}
    for broken in ("{", '["Hat"]', '{"ref_a": 3}'):
        with pytest.raises(BadArgument):
            build_settings(spec, {**values, "references": broken}, Settings(), {})
    # through GIMP's flow on a fake image: sent, and the person hears about it
    editor = with_references(checker(width=24, height=16))
    name = run_action(Action.TASK, editor, settings, task, _Sink(), guard=False)
    assert name == "References (test)"
    assert editor.notes == ["1 reference image used."]
    restore, task = build_settings(spec_for("restora-restore-selection", []),
                                   {**values, "task": TASK}, Settings(), {})
    assert restore.references == {TASK: {"ref_a": "Hat"}}


class _Sink:
    def progress(self, fraction: float, stage: str) -> None:
        pass
