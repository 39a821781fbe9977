"""The procedures' dialog (GimpUi) and the error message box. One of the few modules that
import GIMP.

The dialog edits the procedure's own config, so GIMP remembers its values for the next run and
for Filters > Repeat. On top of GIMP's generated fields it shows the backend's state (checked
on a worker thread, with a Connect button for a backend started after the dialog opened), the
task (Restore selection), the models the backend has for the task, and the task's options as
the backend describes them: spin buttons and scales with the real ranges, steps and units,
checkboxes, choices, model lists by purpose, help as tooltips, advanced options in a fold,
options for another model architecture hidden, and a "default" toggle for optional values.
Those land in the `task`, `model`, `options`, `feather` and `padding` arguments that scripts
set directly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
from gi.repository import Gimp, GimpUi, GLib, Gtk  # noqa: E402

from ..common.catalog import MASK_IGNORED, Catalog, applies, ordered, task_title  # noqa: E402
from ..common.connection import Connection, ConnectionState  # noqa: E402
from ..common.errors import PluginError  # noqa: E402
from ..common.settings import SIZE_PARAMS, Settings, normalise_url  # noqa: E402
from ..shared.protocol import ParamInfo, TaskInfo  # noqa: E402
from .flow import autostart_available  # noqa: E402
from .option_form import (  # noqa: E402
    choice_items,
    choice_value,
    current,
    digits,
    form_params,
    is_number,
    label_text,
    merge_options,
    number_range,
    parse_options,
    parse_value,
)
from .procedures import AUTOMATIC, FEATHER, PADDING, Action, BadArgument, ProcedureSpec  # noqa: E402

PLUG_IN_ID = "restora"
#: arguments drawn by this module instead of GimpUi's generated widgets
OWN_WIDGETS = ("task", "model", "options", "feather", "padding")


def _on_ui_thread(fn: Callable[[], None]) -> None:
    """The Connection's dispatch: run `fn` on GTK's main loop (the dialog's thread)."""

    def once() -> bool:
        fn()
        return False  # not again

    GLib.idle_add(once)


class Field:
    """One option's widgets: the value widget, and for an optional value its "default"
    toggle (active: the backend's default applies, the value widget is greyed out)."""

    def __init__(self, param: ParamInfo, catalog: Catalog | None, value: Any) -> None:
        self.param = param
        self.default_toggle: Gtk.CheckButton | None = None
        self.widget = self._make(param, catalog, value)
        self.box = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6, hexpand=True)
        self.box.pack_start(self.widget, True, True, 0)
        if param.unit and is_number(param):
            self.box.pack_start(Gtk.Label(label=param.unit), False, False, 0)
        if param.optional and is_number(param):
            self.default_toggle = Gtk.CheckButton(label=param.none_label or "default")
            self.default_toggle.set_tooltip_text("Leave it to the backend")
            self.default_toggle.connect("toggled", lambda _b: self._grey())
            self.default_toggle.set_active(value is None)
            self.box.pack_start(self.default_toggle, False, False, 0)
            self._grey()
        self.label = Gtk.Label(label=label_text(param), xalign=0.0)
        for widget in (self.label, self.box, self.widget):
            widget.set_tooltip_text(param.help or None)

    def _grey(self) -> None:
        if self.default_toggle is not None:
            self.widget.set_sensitive(not self.default_toggle.get_active())

    @staticmethod
    def _make(param: ParamInfo, catalog: Catalog | None, value: Any) -> Gtk.Widget:
        if param.type == "bool":
            check = Gtk.CheckButton()
            check.set_active(bool(value))
            return check
        if param.widget == "model":
            combo = Gtk.ComboBoxText()
            if param.optional:
                combo.append("", param.none_label or "default")
            for m in catalog.models_of(param.purposes) if catalog is not None else []:
                combo.append(m.name, m.name)
            if value and not combo.set_active_id(value):
                combo.append(value, value)
                combo.set_active_id(value)
            elif not value:
                combo.set_active(0)
            return combo
        if param.choices:
            combo = Gtk.ComboBoxText()
            items = choice_items(param)
            for item_id, text in items:
                combo.append(item_id, text)
            wanted = next((i for i, _ in items if i and choice_value(param, i) == value), "")
            combo.set_active_id(wanted) or combo.set_active(0)
            return combo
        if is_number(param):
            low, high, step = number_range(param)
            start = low if value is None else float(value)
            adjustment = Gtk.Adjustment(value=min(max(start, low), high), lower=low, upper=high,
                                        step_increment=step, page_increment=step * 10)
            if param.widget == "slider":
                scale = Gtk.Scale(orientation=Gtk.Orientation.HORIZONTAL, adjustment=adjustment,
                                  digits=digits(param), hexpand=True)
                scale.set_size_request(160, -1)
                scale.set_value_pos(Gtk.PositionType.RIGHT)
                return scale
            return Gtk.SpinButton(adjustment=adjustment, digits=digits(param), hexpand=True)
        entry = Gtk.Entry(hexpand=True)
        entry.set_text("" if value is None else str(value))
        if param.optional and param.none_label:
            entry.set_placeholder_text(param.none_label)
        return entry

    def value(self) -> Any:
        param, widget = self.param, self.widget
        if self.default_toggle is not None and self.default_toggle.get_active():
            return None
        if isinstance(widget, Gtk.CheckButton):
            return widget.get_active()
        if isinstance(widget, Gtk.ComboBoxText):
            item = widget.get_active_id() or ""
            if param.widget == "model":
                return item or None
            return choice_value(param, item)
        if isinstance(widget, (Gtk.SpinButton, Gtk.Scale)):
            number = widget.get_adjustment().get_value()
            return round(number) if param.type == "int" else round(number, 6)
        return parse_value(param, widget.get_text())


class RestoraDialog:
    def __init__(self, procedure: Gimp.Procedure, config: Gimp.ProcedureConfig,
                 spec: ProcedureSpec, stored: Settings,
                 cached: list[TaskInfo] | None = None) -> None:
        self.config = config
        self.spec = spec
        self.cached = cached or []
        if not config.get_property("backend-url"):
            config.set_property("backend-url", os.environ.get("RESTORA_URL")
                                or stored.backend_url)
        self.dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config,
                                             title=f"Restora: {spec.title}")
        self.form: list[Field] = []
        self._form_key: tuple[str, tuple[str, ...]] | None = None
        self._filling = False

        self.status = Gtk.Label(xalign=0.0, wrap=True, max_width_chars=50, selectable=True)
        connect = Gtk.Button.new_with_mnemonic("_Connect")
        connect.connect("clicked", lambda _button: self._reconnect())
        status_row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        status_row.pack_start(self.status, True, True, 0)
        status_row.pack_start(connect, False, False, 0)

        self.tasks = Gtk.ComboBoxText()
        self.tasks.set_tooltip_text("What to do with the selection")
        self.tasks.connect("changed", lambda _combo: self._task_changed())
        self.task_row = self._row("T_ask", self.tasks)

        self.models = Gtk.ComboBoxText.new_with_entry()
        model = spec.argument("model")
        self.models.set_tooltip_text(model.blurb if model is not None else "")
        self.models.connect("changed", lambda _combo: self._model_changed())
        self.model_row = self._row("_Model", self.models)

        self.options_grid = Gtk.Grid(row_spacing=4, column_spacing=6)
        self.advanced = Gtk.Expander(label="Advanced")
        self.advanced_grid = Gtk.Grid(row_spacing=4, column_spacing=6)
        self.advanced.add(self.advanced_grid)
        self.edge_grid = Gtk.Grid(row_spacing=4, column_spacing=6)
        self.feather = self._edge(FEATHER, "feather", 0, 1000.0, 0.5, 1)
        self.padding = self._edge(PADDING, "padding", 1, 4096.0, 1.0, 0)
        self.error = Gtk.Label(xalign=0.0, wrap=True)

        # top to bottom: the backend, the task, the model, the options; GimpUi's fill()
        # appends its generated fields to the content area, so own rows go in between
        content = self.dialog.get_content_area()
        token = self.dialog.get_widget("token", GimpUi.LabelEntry.__gtype__)
        if isinstance(token, GimpUi.LabelEntry):
            token.get_entry().set_visibility(False)  # a password: not for over-the-shoulder
        self._add(content, status_row)
        self.dialog.fill([n for n in ("backend-url", "token") if spec.argument(n)])
        self._add(content, self.task_row)
        self._add(content, self.model_row)
        self._add(content, self.options_grid)
        self._add(content, self.advanced)
        self._add(content, self.edge_grid)
        self.dialog.fill([a.name for a in spec.arguments
                          if a.name not in (*OWN_WIDGETS, "backend-url", "token")])
        self._add(content, self.error)
        self.task_row.set_visible(spec.action == Action.RESTORE)

        self.connection = Connection(self._url(), self._token(), dispatch=_on_ui_thread,
                                     on_change=lambda _c: self._show_catalog())
        self._show_catalog()
        self.connection.refresh()

    @staticmethod
    def _row(mnemonic: str, widget: Gtk.Widget) -> Gtk.Box:
        row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        label = Gtk.Label.new_with_mnemonic(mnemonic)
        label.set_mnemonic_widget(widget)
        row.pack_start(label, False, False, 0)
        row.pack_start(widget, True, True, 0)
        return row

    def _edge(self, arg: Any, name: str, row: int, upper: float, step: float,
              places: int) -> tuple[Gtk.SpinButton, Gtk.CheckButton]:
        """Feather or context: a spin button with its real range and an "automatic" toggle
        (the argument holds a negative number for that, which no label shows)."""
        value = self.config.get_property(name)
        spin = Gtk.SpinButton(adjustment=Gtk.Adjustment(
            value=max(0.0, float(value)), lower=0.0, upper=upper, step_increment=step,
            page_increment=step * 10), digits=places, hexpand=True)
        auto = Gtk.CheckButton(label="automatic")
        auto.set_active(value < 0)
        spin.set_sensitive(value >= 0)
        auto.connect("toggled", lambda b: spin.set_sensitive(not b.get_active()))
        label = Gtk.Label.new_with_mnemonic(arg.nick)
        label.set_xalign(0.0)
        label.set_mnemonic_widget(spin)
        for widget in (label, spin, auto):
            widget.set_tooltip_text(arg.blurb)
        self.edge_grid.attach(label, 0, row, 1, 1)
        self.edge_grid.attach(spin, 1, row, 1, 1)
        self.edge_grid.attach(Gtk.Label(label="px"), 2, row, 1, 1)
        self.edge_grid.attach(auto, 3, row, 1, 1)
        return spin, auto

    @staticmethod
    def _add(content: Gtk.Box, widget: Gtk.Widget) -> None:
        content.pack_start(widget, False, False, 0)
        widget.show_all()

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
                    continue
                return True
        finally:
            self.dialog.destroy()

    # --- the backend ---

    def _url(self) -> str:
        return normalise_url(self.config.get_property("backend-url") or "") or ""

    def _token(self) -> str:
        return self.config.get_property("token") or os.environ.get("RESTORA_TOKEN", "")

    def _reconnect(self) -> None:
        url = self._url()
        if not url:
            self.status.set_text("The backend address is not valid; give one like "
                                 "http://127.0.0.1:8765.")
            return
        self.connection.configure(url, self._token())
        self.connection.refresh()

    def _known(self) -> list[TaskInfo]:
        catalog = self.connection.catalog
        return catalog.tasks if catalog is not None else self.cached

    def _task(self) -> str:
        if self.spec.task:
            return self.spec.task
        chosen = self.config.get_property("task") or ""
        if chosen:
            return chosen
        offered = [t for t in ordered(self._known()) if t.available]
        return offered[0].task if offered else ""

    def _info(self) -> TaskInfo | None:
        task = self._task()
        return next((t for t in self._known() if t.task == task), None)

    def _show_catalog(self) -> None:
        """Fill the status line, the task and model lists and the option form from what is
        known: the backend's catalog, else the cached task list."""
        text = self.connection.describe()
        if (self.connection.state == ConnectionState.DISCONNECTED
                and autostart_available(self.connection.client.url)):
            text = (f"Restora's backend is not running at {self.connection.client.url}; "
                    "it will be started when you press OK.")
        self.status.set_text(text)
        catalog = self.connection.catalog
        self._filling = True
        if self.spec.action == Action.RESTORE:
            self.tasks.remove_all()
            chosen = self.config.get_property("task") or ""
            offered = [t for t in ordered(self._known()) if t.available]
            for info in offered:
                self.tasks.append(info.task, task_title(info))
            if chosen and chosen not in [t.task for t in offered]:
                self.tasks.append(chosen, chosen)
            self.tasks.set_active_id(self._task())
        task = self._task()
        names = [m.name for m in catalog.models_for(task)] if catalog is not None else []
        current_model = self.config.get_property("model") or ""
        self.models.remove_all()
        default = catalog.default_model(task) if catalog is not None else None
        self.models.append("", f"Default ({default})" if default else "Default")
        for name in names:
            self.models.append(name, name)
        if current_model in names:
            self.models.set_active(names.index(current_model) + 1)
        elif current_model:
            self.models.get_child().set_text(current_model)
        else:
            self.models.set_active(0)
        self._filling = False
        self.model_row.set_visible(catalog is None or catalog.takes_model(task))
        info = self._info()
        self.edge_grid.set_visible(info is None or info.mask != MASK_IGNORED)
        self._build_form(list(info.params) if info is not None else [], info)

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
        active = self.models.get_active()
        value = self.models.get_active_id() if active >= 0 else self.models.get_child().get_text()
        self.config.set_property("model", (value or "").strip())
        self._show_applicable()

    # --- the task's options ---

    def _build_form(self, params: list[ParamInfo], info: TaskInfo | None) -> None:
        hidden: set[str] = set()
        if self.spec.action == Action.RESTORE and info is not None and info.resizes:
            hidden |= SIZE_PARAMS  # a selection restored in place keeps its size
        shown = form_params(params, hidden)
        key = (self._task(), tuple(p.name for p in shown))
        if key == self._form_key and self.connection.catalog is None:
            return
        if self.form and key == self._form_key:  # the backend again: keep what was typed
            with contextlib.suppress(BadArgument):
                self._store_options()
        self._form_key = key
        for grid in (self.options_grid, self.advanced_grid):
            for child in grid.get_children():
                grid.remove(child)
        options = parse_options(self.config.get_property("options") or "")
        self.form = []
        rows = {id(self.options_grid): 0, id(self.advanced_grid): 0}
        for param in shown:
            item = Field(param, self.connection.catalog, current(param, options))
            grid = self.advanced_grid if param.advanced else self.options_grid
            row = rows[id(grid)]
            grid.attach(item.label, 0, row, 1, 1)
            grid.attach(item.box, 1, row, 1, 1)
            rows[id(grid)] = row + 1
            self.form.append(item)
        self.options_grid.show_all()
        self.advanced.show_all()
        self.advanced.set_visible(rows[id(self.advanced_grid)] > 0)
        self._show_applicable()

    def _show_applicable(self) -> None:
        """Options for another model architecture than the chosen model's are hidden."""
        catalog = self.connection.catalog
        if catalog is None:
            return
        task = self._task()
        model = catalog.model_info(self.config.get_property("model")
                                   or catalog.default_model(task))
        for item in self.form:
            shown = applies(item.param, model)
            item.label.set_visible(shown)
            item.box.set_visible(shown)

    def field(self, name: str) -> Field:
        return next(f for f in self.form if f.param.name == name)

    def _store_options(self) -> None:
        values = {item.param.name: item.value() for item in self.form}
        # with the backend's form, the options are exactly the form's: nothing of another
        # task stays behind; without it, what was there (a script's) is kept
        raw = "" if self.form else self.config.get_property("options") or ""
        self.config.set_property("options", merge_options(
            raw, [item.param for item in self.form], values))
        for (spin, auto), name in ((self.feather, "feather"), (self.padding, "padding")):
            number = spin.get_adjustment().get_value()
            value = AUTOMATIC if auto.get_active() else number
            self.config.set_property(name, int(value) if name == "padding" else float(value))


def _ui_available() -> bool:
    """GTK can open a window (GimpUi.init would end the process when it cannot)."""
    return bool(Gtk.init_check(None)[0])


def run_dialog(procedure: Gimp.Procedure, config: Gimp.ProcedureConfig, spec: ProcedureSpec,
               stored: Settings, image: Gimp.Image, cached: list[TaskInfo] | None = None) -> bool:
    """True when the person pressed OK; the config then holds their choices."""
    if not _ui_available():
        raise PluginError("Restora's dialog cannot open: there is no display.",
                          "From scripts and batch mode, call it with run-mode "
                          "Gimp.RunMode.NONINTERACTIVE and arguments.")
    GimpUi.init(PLUG_IN_ID)
    return RestoraDialog(procedure, config, spec, stored, cached).run()


def show_error(error: PluginError) -> bool:
    """A message box in plain words; False when no window can be shown (batch mode)."""
    if not _ui_available():
        return False  # the caller returns the error to GIMP instead
    GimpUi.init(PLUG_IN_ID)
    box = Gtk.MessageDialog(message_type=Gtk.MessageType.ERROR,
                            buttons=Gtk.ButtonsType.CLOSE, text=error.message)
    box.set_title("Restora")
    if error.hint:
        box.format_secondary_text(error.hint)
    box.run()
    box.destroy()
    return True
