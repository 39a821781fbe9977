"""Restora's GIMP 3 plug-in: registers the procedures of procedures.py and runs them.

Registration happens at every GIMP start (init_procedures, not query_procedures, whose
answer GIMP keeps until the plug-in file changes): the backend is asked briefly for its tasks
(and the answer cached), else the last task list seen is used; with neither, only Restore
selection and Settings are registered until a dialog or a run has seen the backend's tasks.

A run: 1. pick the source layer, 2. interactive: show the dialog (GIMP remembers its values;
the address and token always come from Settings), 3. build the settings from the arguments,
4. run the action (flow.py) with GIMP's progress bar and a line saying the stage and the time,
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
from ..common.catalog import fetch_catalog  # noqa: E402
from ..common.client import Client  # noqa: E402
from ..common.connection import ConnectionState  # noqa: E402
from ..common.errors import JobCancelled, NothingFound, PluginError  # noqa: E402
from ..common.settings import Settings  # noqa: E402
from ..shared.protocol import TaskInfo  # noqa: E402
from . import store  # noqa: E402
from .flow import autostart_available, run_action  # noqa: E402
from .gimp_editor import GimpEditor  # noqa: E402
from .procedures import (  # noqa: E402
    ATTRIBUTION,
    CONNECTION,
    Action,
    Argument,
    BadArgument,
    ProcedureSpec,
    build_settings,
    connection,
    procedures,
    spec_for,
    stored_connection,
)
from .progress_text import ProgressText  # noqa: E402
from .status import connection_status, for_artists  # noqa: E402

#: seconds GIMP's start waits for the backend's task list: long enough for one on this
#: computer or the local network, short enough not to hold up GIMP when none answers
START_CONTACT_TIMEOUT = 1.5
#: the same with no task list cached yet: without an answer the menu has no task at all
FIRST_CONTACT_TIMEOUT = 5.0


class GimpProgress:
    """GIMP's progress bar (the image window's status bar; the terminal in batch mode) and
    its text: the stage, its step count, the time elapsed and left."""

    def __init__(self, title: str) -> None:
        self.text = ProgressText(title)
        Gimp.progress_init(title)

    def progress(self, fraction: float, stage: str) -> None:
        self._show(self.text.update(fraction, stage))
        if fraction < 0:
            Gimp.progress_pulse()
        else:
            Gimp.progress_update(min(1.0, fraction))

    def tick(self) -> None:
        self._show(self.text.tick())

    @staticmethod
    def _show(line: str | None) -> None:
        if line is not None:
            Gimp.progress_set_text(line)

    def end(self) -> None:
        Gimp.progress_end()


def settings_path() -> str:
    return os.path.join(Gimp.directory(), store.FILE_NAME)


def tasks_path() -> str:
    """The cached task list, beside the settings."""
    return os.path.join(Gimp.directory(), task_cache.FILE_NAME)


def current_connection() -> Settings:
    """The address and token every procedure uses: $RESTORA_URL and $RESTORA_TOKEN, else
    what Settings stored."""
    try:
        return connection(store.load(settings_path()), os.environ)
    except BadArgument:  # a broken $RESTORA_URL: the stored address
        return store.load(settings_path())


def known_tasks() -> list[TaskInfo]:
    """The backend's task list when it answers (cached for the next start and the dialogs),
    else the last one cached; the menu is built from it."""
    settings = current_connection()
    cached = task_cache.load(tasks_path())
    timeout = START_CONTACT_TIMEOUT if cached else FIRST_CONTACT_TIMEOUT
    try:
        client = Client(settings.backend_url, settings.token, timeout=timeout)
        client.connect()
        tasks = client.tasks()
    except PluginError:
        return cached  # not there now: what it offered last time
    task_cache.save(tasks_path(), tasks)
    return tasks


def run(procedure: Gimp.Procedure, run_mode: Gimp.RunMode, image: Gimp.Image,
        drawables: list[Gimp.Drawable], config: Gimp.ProcedureConfig,
        data: Any) -> Gimp.ValueArray:
    spec = spec_for(procedure.get_name(), task_cache.load(tasks_path()))
    by_person = run_mode != Gimp.RunMode.NONINTERACTIVE
    if by_person:
        # a person's run (and Repeat) uses Settings' address: one a script once gave stays
        # out of GIMP's remembered values, which would otherwise bring it back every time
        for arg in CONNECTION:
            config.set_property(arg.name, "")
    try:
        editor = _run(procedure, run_mode, image, drawables, config, spec)
    except JobCancelled:
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    except NothingFound as exc:  # news, not a failure: the image is as it was
        Gimp.message(exc.text)
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
    except PluginError as exc:
        return _failure(procedure, exc, by_person, _run_url(config))
    except Exception as exc:  # a bug: say so in words, and leave the traceback for a report
        traceback.print_exc(file=sys.stderr)
        return _failure(procedure, PluginError(
            f"The Restora plug-in failed unexpectedly: {exc!r}.",
            "This is a bug in the plug-in; please report it, saying what you did."),
            by_person, _run_url(config))
    if editor is None:  # the dialog was cancelled
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    Gimp.displays_flush()
    notes = getattr(editor, "notes", [])
    if by_person and notes:  # a script reads them from the layer, a person from here
        Gimp.message(f"Restora: added '{editor.new_layer.get_name()}'. " + " ".join(notes))
    result = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
    _set_return(result, 1, Gimp.Layer, editor.new_layer)
    _set_return(result, 2, Gimp.Image, editor.new_image or image)
    return result


def _run(procedure: Gimp.Procedure, run_mode: Gimp.RunMode, image: Gimp.Image,
         drawables: list[Gimp.Drawable], config: Gimp.ProcedureConfig,
         spec: ProcedureSpec) -> GimpEditor | None:
    """The steps of a run; None when the person cancelled the dialog."""
    # 1. the source layer
    layer = _source_layer(drawables)
    stored = store.load(settings_path())
    editor = GimpEditor(image, layer, interactive=run_mode != Gimp.RunMode.NONINTERACTIVE)
    # 2. the dialog, which edits `config`; GIMP remembers it for the next run and Repeat
    if run_mode == Gimp.RunMode.INTERACTIVE:
        from .dialog import run_dialog

        # the image's other layers, for the lists of reference images
        if not run_dialog(procedure, config, spec, current_connection(),
                          task_cache.load(tasks_path()), tasks_path(), editor.list_layers()):
            return None
    # 3. the settings of this run
    values = {arg.name: config.get_property(arg.name) for arg in spec.arguments}
    settings, task = build_settings(spec, values, stored, os.environ)
    # 4. the action, with GIMP's progress bar
    progress = GimpProgress(f"Restora: {spec.title}")
    try:
        run_action(spec.action, editor, settings, task, progress, tasks_path=tasks_path())
    finally:
        progress.end()
    return editor


def _source_layer(drawables: list[Gimp.Drawable]) -> Gimp.Layer:
    layers = [d for d in drawables or [] if isinstance(d, Gimp.Layer)]
    if not layers:
        raise PluginError("Restora works on a layer, and no layer is active.",
                          "Click a layer in the Layers dock (not its mask), then try again.")
    return layers[0]


def _run_url(config: Gimp.ProcedureConfig) -> str:
    """The backend address a run used (a script's argument, else Settings')."""
    values = {arg.name: config.get_property(arg.name) for arg in CONNECTION}
    try:
        return connection(store.load(settings_path()), os.environ, values).backend_url
    except BadArgument:
        return current_connection().backend_url


def _failure(procedure: Gimp.Procedure, error: PluginError, by_person: bool,
             url: str) -> Gimp.ValueArray:
    error = for_artists(error, url, autostart_available(url))
    if by_person:
        from .ui import show_error

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


def run_settings(procedure: Gimp.Procedure, config: Gimp.ProcedureConfig,
                 data: Any) -> Gimp.ValueArray:
    """Settings: the dialog for a person; for a script, the arguments given are stored. Both
    return the address now stored and a line about the backend there."""
    stored = store.load(settings_path())
    try:
        if config.get_property("run-mode") == Gimp.RunMode.NONINTERACTIVE:
            settings = stored_connection(stored, {a.name: config.get_property(a.name)
                                                  for a in CONNECTION})
        else:
            from .settings_dialog import run_settings_dialog

            settings = run_settings_dialog(stored, tasks_path())
            if settings is None:
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    except BadArgument as exc:
        return procedure.new_return_values(Gimp.PDBStatusType.CALLING_ERROR,
                                           GLib.Error(exc.text))
    except PluginError as exc:
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                           GLib.Error(exc.text))
    store.save(settings_path(), settings)
    result = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
    for index, text in ((1, settings.backend_url), (2, backend_line(settings))):
        result.remove(index)
        result.insert(index, GObject.Value(GObject.TYPE_STRING, text))
    return result


def backend_line(settings: Settings) -> str:
    """One line about the backend at these settings, as the dialogs word it."""
    url = settings.backend_url
    try:
        catalog = fetch_catalog(Client(url, settings.token, timeout=START_CONTACT_TIMEOUT))
    except PluginError as exc:
        state = ConnectionState.DISCONNECTED
        return connection_status(state, None, exc, url, autostart_available(url)).text
    task_cache.save(tasks_path(), catalog.tasks)
    return connection_status(ConnectionState.CONNECTED, catalog, None, url, False).text


def create_procedure(plug_in: Gimp.PlugIn, spec: ProcedureSpec) -> Gimp.Procedure:
    if spec.action == Action.SETTINGS:
        return _settings_procedure(plug_in, spec)
    procedure = Gimp.ImageProcedure.new(plug_in, spec.name, Gimp.PDBProcType.PLUGIN, run, None)
    procedure.set_image_types("RGB*, GRAY*")
    procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
    _describe(procedure, spec)
    flags = GObject.ParamFlags.READWRITE
    procedure.add_layer_return_value("layer", "Layer", "The new layer", True, flags)
    procedure.add_image_return_value(
        "result-image", "Image",
        "The image holding the new layer (a new image with new-image)", True, flags)
    return procedure


def _settings_procedure(plug_in: Gimp.PlugIn, spec: ProcedureSpec) -> Gimp.Procedure:
    """Not an image procedure: the settings open with no image, too."""
    procedure = Gimp.Procedure.new(plug_in, spec.name, Gimp.PDBProcType.PLUGIN, run_settings,
                                   None)
    flags = GObject.ParamFlags.READWRITE
    procedure.add_enum_argument("run-mode", "Run mode", "The run mode", Gimp.RunMode,
                                Gimp.RunMode.INTERACTIVE, flags)
    procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.ALWAYS)
    _describe(procedure, spec)
    procedure.add_string_return_value("backend-url", "Backend address",
                                      "The address now stored", "", flags)
    procedure.add_string_return_value("status", "Status",
                                      "Whether the backend there answers, in words", "", flags)
    return procedure


def _describe(procedure: Gimp.Procedure, spec: ProcedureSpec) -> None:
    procedure.set_menu_label(spec.menu_label)
    procedure.add_menu_path(spec.menu_path)
    procedure.set_documentation(spec.blurb, spec.help, spec.name)
    procedure.set_attribution(*ATTRIBUTION)
    for arg in spec.arguments:
        _add_argument(procedure, arg)


class RestoraPlugIn(Gimp.PlugIn):
    #: the task list this process registered from (GIMP's start) or runs with
    tasks: list[TaskInfo] | None = None

    def do_init_procedures(self) -> list[str]:
        self.tasks = known_tasks()
        return [spec.name for spec in procedures(self.tasks)]

    def do_set_i18n(self, name: str) -> bool:
        return False  # English only for now

    def do_create_procedure(self, name: str) -> Gimp.Procedure:
        tasks = self.tasks if self.tasks is not None else task_cache.load(tasks_path())
        return create_procedure(self, spec_for(name, tasks))


def main(argv: list[str]) -> None:
    Gimp.main(RestoraPlugIn.__gtype__, argv)
