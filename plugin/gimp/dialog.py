"""The task procedures' dialog (GimpUi). One of the few modules that import GIMP.

The dialog edits the procedure's own config, so GIMP remembers its values for the next run and
for Filters > Repeat. Top to bottom: one line about the backend (backend_status.py), what is
missing when the task still needs a model, the task (Restore selection), the backend's models
for the task as a dropdown, the task's options as the backend describes them
(option_widgets.py), an Advanced fold, and GIMP's own fields for the remaining arguments. The
backend's address and token are not here: Filters > Restora > Settings keeps them for every
procedure. What the dialog shows lands in the `task`, `model`, `options`, `feather`,
`padding` and `references` arguments that scripts set directly.

A task that takes further images (the edit's reference images) gets one dropdown per image
right after its instruction, which names them ("Picture 2"): "(none)" and the image's other
layers, by name.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
from gi.repository import Gimp, GimpUi, GLib, Gtk  # noqa: E402

from ..common.catalog import (  # noqa: E402
    MASK_IGNORED,
    Catalog,
    applies,
    apply_preset,
    consent_question,
    describe_download,
    licence_needs_consent,
    model_label,
    ordered,
    size_text,
    task_title,
)
from ..common.connection import Connection  # noqa: E402
from ..common.downloads import DownloadRunner  # noqa: E402
from ..common.errors import PluginError  # noqa: E402
from ..common.settings import SIZE_PARAMS, Settings  # noqa: E402
from ..shared.protocol import ImageInputInfo, ParamInfo, TaskInfo  # noqa: E402
from .backend_status import BackendStatus  # noqa: E402
from .option_form import current, form_params, merge_options, parse_options  # noqa: E402
from .option_widgets import Field  # noqa: E402
from .procedures import (  # noqa: E402
    AUTOMATIC,
    CONNECTION,
    FEATHER,
    PADDING,
    Action,
    Argument,
    BadArgument,
    ProcedureSpec,
    offered,
    parse_references,
)
from .status import missing_model  # noqa: E402
from .ui import dim, on_ui_thread, start_ui, ui_available  # noqa: E402

#: arguments drawn by this module instead of GimpUi's generated widgets
OWN_WIDGETS = ("task", "model", "options", "feather", "padding", "references")
#: arguments no task dialog shows: Settings keeps them for every procedure
HIDDEN = tuple(arg.name for arg in CONNECTION)
MODEL_TIP = ("Which of the backend's models does the work. Default: the one the backend "
             "picks for this task.")
#: the first entry of a reference image's dropdown: no layer sent for it
NO_REFERENCE = "(none)"


def _grid() -> Gtk.Grid:
    return Gtk.Grid(row_spacing=6, column_spacing=8)


def missing_model_row(info: TaskInfo) -> tuple[Gtk.Box, Gtk.Box]:
    """What a task that still needs a model says, in plain words, and a box for actions on it
    (the Download... button)."""
    row = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=2)
    line = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
    icon = Gtk.Image.new_from_icon_name("dialog-warning", Gtk.IconSize.BUTTON)
    text = Gtk.Label(xalign=0.0, wrap=True, max_width_chars=52)
    text.set_markup(f"<b>{GLib.markup_escape_text(missing_model(info))}</b>")
    actions = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
    line.pack_start(icon, False, False, 0)
    line.pack_start(text, True, True, 0)
    line.pack_start(actions, False, False, 0)
    row.pack_start(line, False, False, 0)
    row.pack_start(dim("Download the recommended one here, or add one to Restora's models "
                       "folder; then this command runs."), False, False, 0)
    # the backend's advice names its folders and commands: there for whoever installs models
    row.set_tooltip_text(info.hint or None)
    return row, actions


class RestoraDialog:
    def __init__(self, procedure: Gimp.Procedure, config: Gimp.ProcedureConfig,
                 spec: ProcedureSpec, connection: Settings,
                 cached: list[TaskInfo] | None = None, tasks_path: str | None = None,
                 layers: list[str] | None = None) -> None:
        self.config = config
        self.spec = spec
        self.cached = cached or []
        #: the image's other layers, which a reference image can come from
        self.layers = list(layers or [])
        #: one dropdown per reference image of the form's task, by input name
        self.references: dict[str, Gtk.ComboBoxText] = {}
        self.dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config,
                                             title=f"Restora: {spec.title}")
        self.form: list[Field] = []
        self._form_key: tuple[str, tuple[str, ...]] | None = None
        self._filling = False
        self.labels = Gtk.SizeGroup(mode=Gtk.SizeGroupMode.HORIZONTAL)
        #: answers the licence question instead of a message box (for tests)
        self.answer: Callable[[str], bool] | None = None

        self.backend = BackendStatus(connection.backend_url, connection.token,
                                     on_change=lambda _c: self._show_catalog(),
                                     tasks_path=tasks_path)
        self.missing = Gtk.Box(orientation=Gtk.Orientation.VERTICAL)

        self.head_grid = _grid()
        self.tasks = Gtk.ComboBoxText(hexpand=True)
        self.tasks.set_tooltip_text("What to do with the selection")
        self.tasks.connect("changed", lambda _combo: self._task_changed())
        self.task_row = self._attach(self.head_grid, 0, "T_ask", self.tasks)
        self.models = Gtk.ComboBoxText(hexpand=True)
        self.models.set_tooltip_text(MODEL_TIP)
        self.models.connect("changed", lambda _combo: self._model_changed())
        self.model_row = self._attach(self.head_grid, 1, "_Model", self.models)
        self.presets = Gtk.ComboBoxText(hexpand=True)
        self.presets.set_tooltip_text("Set several options at once for a kind of picture")
        self.presets.connect("changed", lambda _combo: self._preset_chosen())
        self.preset_row = self._attach(self.head_grid, 2, "_Preset", self.presets)
        self.download: DownloadRunner | None = None
        self.download_bar: Gtk.ProgressBar | None = None
        self.download_text: Gtk.Label | None = None

        self.options_grid = _grid()
        self.advanced = Gtk.Expander(label="Advanced")
        advanced_box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6, margin_top=6)
        self.advanced_grid = _grid()
        advanced_box.pack_start(self.advanced_grid, False, False, 0)
        self.advanced.add(advanced_box)
        self.edge_grid = _grid()
        self.feather = self._edge(FEATHER, "feather", 0, 1000.0, 0.5, 1)
        self.padding = self._edge(PADDING, "padding", 1, 4096.0, 1.0, 0)
        self.edge_grid.show_all()
        self.error = Gtk.Label(xalign=0.0, wrap=True, max_width_chars=60)

        # GimpUi's fill() appends its generated fields to the content area, so the own rows
        # are packed first; for a task the selection's edge is an advanced matter
        content = self.dialog.get_content_area()
        content.set_spacing(8)
        for widget in (self.backend.widget, self.missing, self.head_grid, self.options_grid):
            self._add(content, widget)
        if spec.action == Action.RESTORE:
            self._add(content, self.edge_grid)
            self._add(content, self.advanced)
        else:
            self._add(content, self.advanced)
            advanced_box.pack_start(self.edge_grid, False, False, 0)
        self.dialog.fill([a.name for a in spec.arguments
                          if a.name not in (*OWN_WIDGETS, *HIDDEN)])
        self._add(content, self.error)
        self.error.set_no_show_all(True)
        self._set_shown(self.task_row, spec.action == Action.RESTORE)
        self._show_catalog()
        self.backend.begin()

    # --- building ---

    def _attach(self, grid: Gtk.Grid, row: int, mnemonic: str,
                widget: Gtk.Widget) -> tuple[Gtk.Label, Gtk.Widget]:
        label = Gtk.Label.new_with_mnemonic(mnemonic)
        label.set_xalign(0.0)
        label.set_mnemonic_widget(widget)
        label.set_tooltip_text(widget.get_tooltip_text())
        self.labels.add_widget(label)
        grid.attach(label, 0, row, 1, 1)
        grid.attach(widget, 1, row, 1, 1)
        return label, widget

    def _edge(self, arg: Argument, name: str, row: int, upper: float, step: float,
              places: int) -> tuple[Gtk.SpinButton, Gtk.CheckButton]:
        """Feather or context: a spin button with its real range and an "automatic" toggle
        (the argument holds a negative number for that, which no label shows)."""
        value = self.config.get_property(name)
        spin = Gtk.SpinButton(adjustment=Gtk.Adjustment(
            value=max(0.0, float(value)), lower=0.0, upper=upper, step_increment=step,
            page_increment=step * 10), digits=places, hexpand=True)
        auto = Gtk.CheckButton(label="automatic")
        auto.set_active(value < 0)

        def blank(widget: Gtk.SpinButton) -> bool:
            if not auto.get_active():
                return False
            widget.set_text("")
            return True

        def grey(_button: Any = None) -> None:
            spin.set_sensitive(not auto.get_active())
            spin.update()

        spin.connect("output", blank)
        auto.connect("toggled", grey)
        grey()
        label = Gtk.Label.new_with_mnemonic(arg.nick)
        label.set_xalign(0.0)
        label.set_mnemonic_widget(spin)
        self.labels.add_widget(label)
        box = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6, hexpand=True)
        box.pack_start(spin, True, True, 0)
        box.pack_start(Gtk.Label(label="px"), False, False, 0)
        box.pack_start(auto, False, False, 0)
        for widget in (label, spin, auto):
            widget.set_tooltip_text(arg.blurb)
        self.edge_grid.attach(label, 0, row, 1, 1)
        self.edge_grid.attach(box, 1, row, 1, 1)
        return spin, auto

    @staticmethod
    def _add(content: Gtk.Box, widget: Gtk.Widget) -> None:
        content.pack_start(widget, False, False, 0)
        widget.show_all()

    @staticmethod
    def _set_shown(widgets: tuple[Gtk.Widget, ...] | Gtk.Widget, shown: bool) -> None:
        for widget in widgets if isinstance(widgets, tuple) else (widgets,):
            widget.set_no_show_all(not shown)
            widget.set_visible(shown)

    # --- running ---

    def run(self) -> bool:
        """Show the dialog until OK with valid options (True) or Cancel (False)."""
        try:
            while True:
                if not self.dialog.run():
                    return False
                try:
                    self._store_options()
                except BadArgument as exc:
                    self.error.set_markup(f"<b>{GLib.markup_escape_text(exc.text)}</b>")
                    self._set_shown(self.error, True)
                    continue
                return True
        finally:
            self.backend.stop()
            self.dialog.destroy()

    # --- what the backend offers ---

    @property
    def connection(self) -> Connection:
        return self.backend.connection

    @property
    def catalog(self) -> Catalog | None:
        return self.connection.catalog

    def _known(self) -> list[TaskInfo]:
        catalog = self.catalog
        return catalog.tasks if catalog is not None else self.cached

    def _offered(self) -> list[TaskInfo]:
        return [t for t in ordered(self._known()) if offered(t)]

    def _task(self) -> str:
        if self.spec.task:
            return self.spec.task
        chosen = self.config.get_property("task") or ""
        if chosen:
            return chosen
        runs = [t for t in self._offered() if t.available] or self._offered()
        return runs[0].task if runs else ""

    def _info(self) -> TaskInfo | None:
        task = self._task()
        return next((t for t in self._known() if t.task == task), None)

    def _show_catalog(self) -> None:
        """Fill the task and model lists and the option form from what is known: the
        backend's catalog, else the cached task list."""
        catalog = self.catalog
        self._filling = True
        if self.spec.action == Action.RESTORE:
            self.tasks.remove_all()
            chosen = self.config.get_property("task") or ""
            offers = self._offered()
            for info in offers:
                self.tasks.append(info.task, task_title(info))
            if chosen and chosen not in [t.task for t in offers]:
                self.tasks.append(chosen, chosen)
            self.tasks.set_active_id(self._task())
        task = self._task()
        self._fill_models(catalog, task)
        self._fill_presets(catalog, task)
        self._filling = False
        info = self._info()
        self._show_missing(catalog, info)
        takes_model = catalog is None or catalog.takes_model(task)
        self._set_shown(self.model_row, takes_model and bool(self._runs(catalog, info)))
        self._set_shown(self.edge_grid, info is None or info.mask != MASK_IGNORED)
        self._show_new_image(info)
        self._build_form(list(info.params) if info is not None else [], info)

    @staticmethod
    def _runs(catalog: Catalog | None, info: TaskInfo | None) -> bool:
        """Whether the task can run as far as is known (without a backend: maybe)."""
        if catalog is None:
            return info is None or info.available or not info.needs_model
        return info is not None and info.available

    def _fill_models(self, catalog: Catalog | None, task: str) -> None:
        """Models by what they are (a friendly name, what they are good at, the scale); the
        first entry is the backend's choice."""
        models = catalog.models_for(task) if catalog is not None else []
        names = [m.name for m in models]
        chosen = self.config.get_property("model") or ""
        default = catalog.model_info(catalog.default_model(task)) if catalog is not None else None
        self.models.remove_all()
        self.models.append("", f"Recommended: {model_label(default)}" if default
                           else "Recommended")
        for model in models:
            self.models.append(model.name, model_label(model))
        if chosen and chosen not in names:  # a script's or an older run's: shown as it is
            self.models.append(chosen, chosen)
        self.models.set_active_id(chosen)

    def _fill_presets(self, catalog: Catalog | None, task: str) -> None:
        presets = catalog.presets(task) if catalog is not None else []
        self.presets.remove_all()
        self.presets.append("", "Choose a preset...")
        for preset in presets:
            self.presets.append(preset.name, preset.label or preset.name)
        self.presets.set_active_id("")
        self._set_shown(self.preset_row, bool(presets))

    def _preset_chosen(self) -> None:
        """A preset sets several options (and maybe the model) at once; the list goes back to
        "Choose a preset...", and the form shows what it set."""
        name = self.presets.get_active_id() or ""
        catalog = self.catalog
        if self._filling or not name or catalog is None:
            return
        with contextlib.suppress(BadArgument):
            self._store_options()
        task = self._task()
        options = parse_options(self.config.get_property("options") or "")
        model, options = apply_preset(catalog, task, name, options)
        self.config.set_property("options", merge_options("", catalog.params(task), options))
        if model is not None:
            self.config.set_property("model", model)
        self._form_key = None  # rebuilt from the new values
        self._show_catalog()

    def _show_missing(self, catalog: Catalog | None, info: TaskInfo | None) -> None:
        for child in self.missing.get_children():
            child.destroy()
        self.download_bar = self.download_text = None
        can_run = self._runs(catalog, info)
        if info is not None and info.needs_model and not info.available:
            row, actions = missing_model_row(info)
            self._offer_download(catalog, info, row, actions)
            self.missing.pack_start(row, False, False, 0)
        elif catalog is not None and not can_run:
            title = task_title(info, self._task())
            words = (info.reason if info is not None and info.reason
                     else f"This Restora backend does not run {title}.")
            self.missing.pack_start(dim(words), False, False, 0)
        # shown first: show_all() on a box marked not to be shown skips its new children
        self._set_shown(self.missing, bool(self.missing.get_children()))
        self.missing.show_all()
        # with the backend's word that the task cannot run, OK would only fail
        self.dialog.set_response_sensitive(Gtk.ResponseType.OK, catalog is None or can_run)

    # --- downloading the model a task lacks ---

    def _offer_download(self, catalog: Catalog | None, info: TaskInfo, row: Gtk.Box,
                        actions: Gtk.Box) -> None:
        entry = catalog.recommended_download(info.task) if catalog is not None else None
        if entry is None and (self.download is None or self.download.done):
            return
        running = self.download is not None and not self.download.done
        self.download_text = dim("" if running or entry is None
                                 else f"Restora can download {describe_download(entry)}.")
        self.download_bar = Gtk.ProgressBar(show_text=True)
        self.download_bar.set_no_show_all(not running)
        button = Gtk.Button.new_with_mnemonic("Stop download" if running else "_Download...")
        button.set_tooltip_text(describe_download(entry) if entry is not None else "")
        button.connect("clicked", lambda _b: self._download_clicked())
        actions.pack_start(button, False, False, 0)
        row.pack_start(self.download_text, False, False, 0)
        row.pack_start(self.download_bar, False, False, 0)

    def _download_clicked(self) -> bool:
        """Start (or stop) the download of the task's recommended model; a licence that limits
        use is shown and accepted first. True when a download started."""
        if self.download is not None and not self.download.done:
            self.download.cancel()
            return False
        catalog = self.catalog
        entry = catalog.recommended_download(self._task()) if catalog is not None else None
        if entry is None:
            return False
        accept = False
        if licence_needs_consent(entry):
            if not self.ask(consent_question(entry)):
                return False
            accept = True
        self.download = DownloadRunner(self.connection.client, entry.name, accept, self,
                                       dispatch=on_ui_thread).start()
        self._show_catalog()
        return True

    def ask(self, question: str) -> bool:
        """A yes/no question over the dialog (tests answer it through `answer`)."""
        if self.answer is not None:
            return self.answer(question)
        box = Gtk.MessageDialog(transient_for=self.dialog, modal=True,
                                message_type=Gtk.MessageType.QUESTION,
                                buttons=Gtk.ButtonsType.YES_NO, text=question)
        box.set_title("Restora")
        reply = box.run()
        box.destroy()
        return reply == Gtk.ResponseType.YES

    def on_download_progress(self, done: int, total: int | None) -> None:
        if self.download_bar is None:
            return
        self.download_bar.set_visible(True)
        if total:
            self.download_bar.set_fraction(min(1.0, done / total))
            self.download_bar.set_text(f"{size_text(done)} of {size_text(total)}")
        else:
            self.download_bar.pulse()
            self.download_bar.set_text(size_text(done))

    def on_download_finished(self, _info: Any) -> None:
        self.backend.refresh()  # the model list, and OK, follow the new catalog

    def on_download_failed(self, error: PluginError) -> None:
        self._show_catalog()
        if self.download_text is not None:
            self.download_text.set_text(error.text)

    def on_download_cancelled(self) -> None:
        self._show_catalog()

    def _show_new_image(self, info: TaskInfo | None) -> None:
        if self.spec.argument("new-image") is None:
            return
        widget = self.dialog.get_widget("new-image", Gtk.CheckButton.__gtype__)
        if widget is not None:  # only a task that resizes can open its result as an image
            self._set_shown(widget, info is None or info.resizes)

    def _task_changed(self) -> None:
        if self._filling:
            return
        with contextlib.suppress(BadArgument):
            self._store_options()  # the old task's options stay in `options` for a script
        self.config.set_property("task", self.tasks.get_active_id() or "")
        self._show_catalog()

    def _model_changed(self) -> None:
        if self._filling:
            return
        self.config.set_property("model", self.models.get_active_id() or "")
        self._show_applicable()

    # --- the task's options ---

    def _build_form(self, params: list[ParamInfo], info: TaskInfo | None) -> None:
        hidden: set[str] = set()
        if self.spec.action == Action.RESTORE and info is not None and info.resizes:
            hidden |= SIZE_PARAMS  # a selection restored in place keeps its size
        shown = form_params(params, hidden)
        images = list(info.images) if info is not None else []
        key = (self._task(), tuple(p.name for p in shown), tuple(i.name for i in images))
        if key == self._form_key and self.catalog is None:
            return
        if self.form and key == self._form_key:  # the backend again: keep what was set
            with contextlib.suppress(BadArgument):
                self._store_options()
        self._form_key = key
        for grid in (self.options_grid, self.advanced_grid):
            for child in grid.get_children():
                child.destroy()
        options = parse_options(self.config.get_property("options") or "")
        self.form, self.references = [], {}
        rows = {id(self.options_grid): 0, id(self.advanced_grid): 0}
        for param in shown:
            item = Field(param, self.catalog, current(param, options))
            grid = self.advanced_grid if param.advanced else self.options_grid
            row = rows[id(grid)]
            self.labels.add_widget(item.label)
            grid.attach(item.label, 0, row, 1, 1)
            grid.attach(item.box, 1, row, 1, 1)
            rows[id(grid)] = row + 1
            self.form.append(item)
            if param.widget == "prompt" and not param.advanced and not self.references:
                rows[id(grid)] = self._attach_references(images, row + 1)
        if images and not self.references:  # no instruction: after the options
            rows[id(self.options_grid)] = self._attach_references(
                images, rows[id(self.options_grid)])
        advanced = rows[id(self.advanced_grid)] > 0
        edges = self.spec.action != Action.RESTORE and self.edge_grid.get_visible()
        # shown first: show_all() leaves alone what is marked not to be shown
        self._set_shown(self.advanced_grid, advanced)
        self._set_shown(self.advanced, advanced or edges)
        self.options_grid.show_all()
        self.advanced_grid.show_all()
        self._show_applicable()

    def _attach_references(self, images: list[ImageInputInfo], row: int) -> int:
        """One dropdown per further image from `row` of the options grid: "(none)", then the
        image's other layers; a saved layer this image lacks stays listed, marked, and is
        left out of the job with a note. Returns the next free row."""
        try:
            picked = parse_references(self.config.get_property("references"))
        except BadArgument:  # a script's broken text: the dropdowns start over
            picked = {}
        for wanted in images:
            combo = Gtk.ComboBoxText(hexpand=True)
            combo.set_tooltip_text(wanted.help or None)
            combo.append("", NO_REFERENCE)
            for layer in self.layers:
                combo.append(layer, layer)
            chosen = picked.get(wanted.name, "")
            if chosen and chosen not in self.layers:
                combo.append(chosen, f"{chosen} (not in this image)")
            combo.set_active_id(chosen)
            label = Gtk.Label(label=wanted.label or wanted.name, xalign=0.0)
            label.set_mnemonic_widget(combo)
            label.set_tooltip_text(wanted.help or None)
            self.labels.add_widget(label)
            self.options_grid.attach(label, 0, row, 1, 1)
            self.options_grid.attach(combo, 1, row, 1, 1)
            self.references[wanted.name] = combo
            row += 1
        return row

    def _show_applicable(self) -> None:
        """Options for another model architecture than the chosen model's are hidden."""
        catalog = self.catalog
        if catalog is None:
            return
        task = self._task()
        model = catalog.model_info(self.config.get_property("model")
                                   or catalog.default_model(task))
        for item in self.form:
            item.set_shown(applies(item.param, model))

    def field(self, name: str) -> Field:
        return next(f for f in self.form if f.param.name == name)

    def _store_options(self) -> None:
        values = {item.param.name: item.value() for item in self.form}
        # with the backend's form, the options are exactly the form's: nothing of another
        # task stays behind; without it, what was there (a script's) is kept
        raw = "" if self.form else self.config.get_property("options") or ""
        self.config.set_property("options", merge_options(
            raw, [item.param for item in self.form], values))
        if self.references:  # the form's task takes further images: exactly what it shows
            picked = {name: combo.get_active_id() or ""
                      for name, combo in self.references.items()}
            picked = {name: layer for name, layer in picked.items() if layer}
            self.config.set_property("references",
                                     json.dumps(picked, sort_keys=True) if picked else "")
        for (spin, auto), name in ((self.feather, "feather"), (self.padding, "padding")):
            spin.update()
            number = spin.get_adjustment().get_value()
            value = AUTOMATIC if auto.get_active() else number
            self.config.set_property(name, int(value) if name == "padding" else float(value))


def run_dialog(procedure: Gimp.Procedure, config: Gimp.ProcedureConfig, spec: ProcedureSpec,
               connection: Settings, cached: list[TaskInfo] | None = None,
               tasks_path: str | None = None, layers: list[str] | None = None) -> bool:
    """True when the person pressed OK; the config then holds their choices."""
    if not ui_available():
        raise PluginError("Restora's dialog cannot open: there is no display.",
                          "From scripts and batch mode, call it with run-mode "
                          "Gimp.RunMode.NONINTERACTIVE and arguments.")
    start_ui()
    return RestoraDialog(procedure, config, spec, connection, cached, tasks_path,
                         layers).run()
