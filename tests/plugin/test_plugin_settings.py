"""Each task's saved model and options kept apart: a form saved into its own task, options a
task does not declare dropped with a note when the catalog arrives, and never sent.

The task parameters are the real backend's (backend.jobs.task_info of the product's task
specs, what /v1/tasks answers); the documents are the plug-in's FakeEditor.
"""

from __future__ import annotations

import numpy as np
import pytest

from backend.jobs import task_info
from backend.tasks.registry import default_registry
from plugin.common.catalog import Catalog, dropped_note, forget_unknown_options
from plugin.common.errors import PluginError
from plugin.common.operations import prepare_restore, prepare_task, prepare_whole_image
from plugin.common.settings import Settings
from shared.protocol import Health, ModelInfo
from tests.plugin_fixtures import FakeEditor, checker

FACE_FORM = {
    "fidelity": 0.7,
    "strength": 1.0,
    "colour_match": True,
    "min_face": 20,
    "threshold": 0.5,
    "upscale_model": None,
    "scale": None,
}
UPSCALE_FORM = {"scale": None, "width": None, "tile": 0, "overlap": 32, "alpha": "model"}
#: what the docker stored after Upscale -> Restore faces -> Upscale before each task's form
#: was saved into its own task
POISONED = {"upscale": {"tile": 0, **FACE_FORM}, "face-restore": dict(UPSCALE_FORM)}


@pytest.fixture
def catalog() -> Catalog:
    health = Health(
        status="ok",
        protocol_version=2,
        version="0.1.0",
        auth_required=False,
        instance="i",
        device="cpu",
    )
    models = [
        ModelInfo("tiny-x2", ["upscale"], "upscale_models", True, scale=2),
        ModelInfo("gfpgan", ["face-restore"], "facerestore_models", True),
    ]
    return Catalog(health, [task_info(spec) for spec in default_registry()], models)


def test_a_form_is_saved_into_its_own_task_and_leaves_the_others() -> None:
    s = Settings(models={"upscale": "tiny-x2"}, options={"upscale": dict(UPSCALE_FORM)})
    faces = s.with_task_form("face-restore", "gfpgan", FACE_FORM)
    assert faces.options == {"upscale": UPSCALE_FORM, "face-restore": FACE_FORM}
    assert faces.models == {"upscale": "tiny-x2", "face-restore": "gfpgan"}
    assert s.options == {"upscale": UPSCALE_FORM}  # a new Settings: the old one is unchanged
    # a form without fields (no backend yet) keeps the task's saved options
    empty = faces.with_task_form("upscale", "tiny-x2", {})
    assert empty.options["upscale"] == UPSCALE_FORM
    back = empty.with_task_form("upscale", "", {"tile": 128})
    assert back.options["upscale"] == {**UPSCALE_FORM, "tile": 128}
    assert back.options["face-restore"] == FACE_FORM and back.models["upscale"] == ""


def test_options_a_task_does_not_declare_are_dropped_with_a_note(catalog: Catalog) -> None:
    s = Settings(options={**POISONED, "later-task": {"x": 1}})
    cleaned, notes = forget_unknown_options(s, catalog)
    assert cleaned.options == {
        "upscale": {"tile": 0, "scale": None},
        "face-restore": {"scale": None},
        # a task this backend does not run keeps its own
        "later-task": {"x": 1},
    }
    assert notes == [
        "Dropped the saved options 'fidelity', 'strength', 'colour_match', 'min_face', "
        "'threshold', 'upscale_model' that Upscale does not have.",
        "Dropped the saved options 'width', 'tile', 'overlap', 'alpha' that Restore faces "
        "does not have.",
    ]
    assert forget_unknown_options(cleaned, catalog) == (cleaned, [])  # nothing left to drop
    assert dropped_note("Upscale", ["fidelity"]) == (
        "Dropped the saved option 'fidelity' that Upscale does not have."
    )


def test_stored_settings_keep_one_tasks_broken_entry_from_the_others() -> None:
    stored = Settings(options={"upscale": {"tile": 0}}).to_strings()
    stored["options"] = '{"upscale": {"tile": 0}, "face-restore": 5, "denoise": [1]}'
    stored["models"] = '{"upscale": "tiny-x2", "face-restore": 3}'
    loaded = Settings.from_strings(stored)
    assert loaded.options == {"upscale": {"tile": 0}}
    assert loaded.models == {"upscale": "tiny-x2"}
    assert loaded.options_for("face-restore") == {}


def test_only_declared_options_are_sent(catalog: Catalog) -> None:
    s = Settings(models={"upscale": "tiny-x2"}, options=POISONED)
    editor = FakeEditor(checker(width=32, height=24))
    job = prepare_whole_image(editor, s, "upscale", catalog).input
    assert job.params == {"tile": 0} and job.params_checked
    selection = np.zeros((24, 32), np.uint8)
    selection[4:12, 6:20] = 255
    editor.selection = selection
    restore = prepare_restore(editor, s, "upscale", catalog).input
    assert restore.params == {"tile": 0}  # and no size option in place
    faces = prepare_task(editor, s, "face-restore", catalog).input
    # no face model chosen: Recommended, left to the backend, whose default is GFPGAN
    assert faces.params == {} and faces.model is None
    assert catalog.default_model("face-restore") == "gfpgan"
    # without the backend's task list nothing is read: what to send is not known yet
    with pytest.raises(PluginError, match="has not reached its backend"):
        prepare_whole_image(FakeEditor(checker(width=32, height=24)), s)
