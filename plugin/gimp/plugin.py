"""Restora's GIMP 3 plug-in: registers the procedures of procedures.py and runs them.

Registration happens at every GIMP start (init_procedures, not query_procedures, whose
answer GIMP keeps until the plug-in file changes), from the last task list seen; when there
is none yet, the backend is asked once, briefly, and without an answer only Restore selection
is registered until a run has seen the backend's tasks.

A run: 1. pick the source layer, 2. interactive: show the dialog (GIMP remembers its values),
3. build the settings from the arguments, 4. run the action (flow.py) with GIMP's progress bar,
5. return the new layer (and new image), or an error in plain words: a message dialog when a
person started it, an EXECUTION_ERROR with the text for scripts.

Cancel: GIMP's progress-bar Cancel kills the plug-in (GIMP 3.0 gives Python plug-ins no cancel
callback); the cancel guard then cancels the job on the backend, and the image is untouched
because it changes only after the result has arrived.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, GLib, GObject  # noqa: E402

from ..common import task_cache  # noqa: E402
from ..common.client import Client  # noqa: E402
from ..common.errors import JobCancelled, NothingFound, PluginError  # noqa: E402
from ..common.settings import Settings, normalise_url  # noqa: E402
from ..shared.protocol import TaskInfo  # noqa: E402
from . import store  # noqa: E402
from .flow import run_action  # noqa: E402
from .gimp_editor import GimpEditor  # noqa: E402
from .procedures import (  # noqa: E402
    ATTRIBUTION,
    MENU_PATH,
    Argument,
    ProcedureSpec,
    build_settings,
    procedures,
    spec_for,
)

#: seconds GIMP's start may wait for a backend when no task list is cached yet
FIRST_CONTACT_TIMEOUT = 2.0


class GimpProgress:
    """GIMP's progress bar (the image window's status bar; the terminal in batch mode)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._stage = ""
        Gimp.progress_init(title)

    def progress(self, fraction: float, stage: str) -> None:
        if stage != self._stage:
            self._stage = stage
            Gimp.progress_set_text(f"{self.title}: {stage}")
        if fraction < 0:
            Gimp.progress_pulse()
        else:
            Gimp.progress_update(min(1.0, fraction))

    def end(self) -> None:
        Gimp.progress_end()


def settings_path() -> str:
    return os.path.join(Gimp.directory(), store.FILE_NAME)


def tasks_path() -> str:
    """The cached task list, beside the settings."""
    return os.path.join(Gimp.directory(), task_cache.FILE_NAME)


def known_tasks() -> list[TaskInfo]:
    """The cached task list; without one, the backend's (cached for the next start)."""
    tasks = task_cache.load(tasks_path())
    if tasks:
        return tasks
    url = normalise_url(os.environ.get("RESTORA_URL", "")) or store.load(
        settings_path()).backend_url
    token = os.environ.get("RESTORA_TOKEN", "") or store.load(settings_path()).token
    try:
        client = Client(url, token, timeout=FIRST_CONTACT_TIMEOUT)
        client.connect()
        tasks = client.tasks()
    except PluginError:
        return []  # no backend yet: Restore selection alone, until a run has seen one
    task_cache.save(tasks_path(), tasks)
    return tasks


def run(procedure: Gimp.Procedure, run_mode: Gimp.RunMode, image: Gimp.Image,
        drawables: list[Gimp.Drawable], config: Gimp.ProcedureConfig,
        data: Any) -> Gimp.ValueArray:
    spec = spec_for(procedure.get_name(), task_cache.load(tasks_path()))
    by_person = run_mode != Gimp.RunMode.NONINTERACTIVE
    try:
        editor, settings = _run(procedure, run_mode, image, drawables, config, spec)
    except JobCancelled:
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    except NothingFound as exc:  # news, not a failure: the image is as it was
        Gimp.message(exc.text)
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
    except PluginError as exc:
        return _failure(procedure, exc, by_person)
    except Exception as exc:  # a bug: say so in words, and leave the traceback for a report
        traceback.print_exc(file=sys.stderr)
        return _failure(procedure, PluginError(
            f"The Restora plug-in failed unexpectedly: {exc!r}.",
            "This is a bug in the plug-in; please report it with GIMP's terminal output."),
            by_person)
    if editor is None:  # the dialog was cancelled
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    if by_person:
        store.save(settings_path(), settings)
    Gimp.displays_flush()
    result = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
    _set_return(result, 1, Gimp.Layer, editor.new_layer)
    _set_return(result, 2, Gimp.Image, editor.new_image or image)
    return result


def _run(procedure: Gimp.Procedure, run_mode: Gimp.RunMode, image: Gimp.Image,
         drawables: list[Gimp.Drawable], config: Gimp.ProcedureConfig,
         spec: ProcedureSpec) -> tuple[GimpEditor | None, Settings]:
    """The steps of a run; (None, ...) when the person cancelled the dialog."""
    # 1. the source layer
    layer = _source_layer(drawables)
    stored = store.load(settings_path())
    # 2. the dialog, which edits `config`; GIMP remembers it for the next run and Repeat
    if run_mode == Gimp.RunMode.INTERACTIVE:
        from .dialog import run_dialog

        if not run_dialog(procedure, config, spec, stored, image,
                          task_cache.load(tasks_path())):
            return None, stored
    # 3. the settings of this run
    values = {arg.name: config.get_property(arg.name) for arg in spec.arguments}
    settings, task = build_settings(spec, values, stored, os.environ)
    # 4. the action, with GIMP's progress bar
    editor = GimpEditor(image, layer, interactive=run_mode != Gimp.RunMode.NONINTERACTIVE)
    progress = GimpProgress(f"Restora: {spec.title}")
    try:
        run_action(spec.action, editor, settings, task, progress, tasks_path=tasks_path())
    finally:
        progress.end()
    return editor, settings


def _source_layer(drawables: list[Gimp.Drawable]) -> Gimp.Layer:
    layers = [d for d in drawables or [] if isinstance(d, Gimp.Layer)]
    if not layers:
        raise PluginError("Restora works on a layer, and no layer is active.",
                          "Click a layer in the Layers dock (not its mask), then try again.")
    return layers[0]


def _failure(procedure: Gimp.Procedure, error: PluginError,
             by_person: bool) -> Gimp.ValueArray:
    if by_person:
        from .dialog import show_error

        if show_error(error):
            # the person has read it: CANCEL keeps GIMP from showing it a second time
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                       GLib.Error(error.text))


def _set_return(values: Gimp.ValueArray, index: int, kind: type, value: Any) -> None:
    values.remove(index)
    values.insert(index, GObject.Value(kind.__gtype__, value))


def _add_argument(procedure: Gimp.Procedure, arg: Argument) -> None:
    flags = GObject.ParamFlags.READWRITE
    if arg.kind == "string":
        procedure.add_string_argument(arg.name, arg.nick, arg.blurb, arg.default, flags)
    elif arg.kind == "int":
        procedure.add_int_argument(arg.name, arg.nick, arg.blurb, int(arg.minimum),
                                   int(arg.maximum), arg.default, flags)
    elif arg.kind == "double":
        procedure.add_double_argument(arg.name, arg.nick, arg.blurb, arg.minimum, arg.maximum,
                                      arg.default, flags)
    elif arg.kind == "boolean":
        procedure.add_boolean_argument(arg.name, arg.nick, arg.blurb, arg.default, flags)
    else:
        raise ValueError(f"unknown argument kind {arg.kind!r} of {arg.name}")


def create_procedure(plug_in: Gimp.PlugIn, spec: ProcedureSpec) -> Gimp.Procedure:
    procedure = Gimp.ImageProcedure.new(plug_in, spec.name, Gimp.PDBProcType.PLUGIN, run, None)
    procedure.set_image_types("RGB*, GRAY*")
    procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
    procedure.set_menu_label(spec.menu_label)
    procedure.add_menu_path(MENU_PATH)
    procedure.set_documentation(spec.blurb, spec.help, spec.name)
    procedure.set_attribution(*ATTRIBUTION)
    for arg in spec.arguments:
        _add_argument(procedure, arg)
    flags = GObject.ParamFlags.READWRITE
    procedure.add_layer_return_value("layer", "Layer", "The new layer", True, flags)
    procedure.add_image_return_value(
        "result-image", "Image",
        "The image holding the new layer (a new image with new-image)", True, flags)
    return procedure


class RestoraPlugIn(Gimp.PlugIn):
    def do_init_procedures(self) -> list[str]:
        return [spec.name for spec in procedures(known_tasks())]

    def do_set_i18n(self, name: str) -> bool:
        return False  # English only for now

    def do_create_procedure(self, name: str) -> Gimp.Procedure:
        return create_procedure(self, spec_for(name, task_cache.load(tasks_path())))


def main(argv: list[str]) -> None:
    Gimp.main(RestoraPlugIn.__gtype__, argv)
