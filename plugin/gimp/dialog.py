"""The procedures' dialog (GimpUi) and the error message box. One of the few modules that
import GIMP.

The dialog edits the procedure's own config, so GIMP remembers its values for the next run and
for Filters > Repeat. On top of GIMP's generated fields it shows the backend's state (checked
on a worker thread, with a Connect button for a backend started after the dialog opened), the
models the backend has for the task, and the task's further options as the backend describes
them; those land in the `model` and `options` arguments that scripts set directly.
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

from ..common.catalog import param_label  # noqa: E402
from ..common.connection import Connection, ConnectionState  # noqa: E402
from ..common.errors import PluginError  # noqa: E402
from ..common.settings import SIZE_PARAMS, Settings, normalise_url  # noqa: E402
from ..shared.protocol import ParamInfo, Task  # noqa: E402
from .flow import autostart_available  # noqa: E402
from .option_form import (  # noqa: E402
    display_text,
    form_params,
    merge_options,
    parse_options,
    parse_value,
)
from .procedures import Action, BadArgument, ProcedureSpec  # noqa: E402

PLUG_IN_ID = "restora"
#: arguments drawn by this module instead of GimpUi's generated widgets
OWN_WIDGETS = ("model", "options")


def _on_ui_thread(fn: Callable[[], None]) -> None:
    """The Connection's dispatch: run `fn` on GTK's main loop (the dialog's thread)."""

    def once() -> bool:
        fn()
        return False  # not again

    GLib.idle_add(once)


class RestoraDialog:
    def __init__(self, procedure: Gimp.Procedure, config: Gimp.ProcedureConfig,
                 spec: ProcedureSpec, stored: Settings) -> None:
        self.config = config
        self.spec = spec
        if not config.get_property("backend-url"):
            config.set_property("backend-url", os.environ.get("RESTORA_URL")
                                or stored.backend_url)
        self.dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config,
                                             title=f"Restora: {spec.title}")
        self.form: list[tuple[ParamInfo, Any]] = []
        self._form_task: Task | None = None
        self._filling = False

        self.status = Gtk.Label(xalign=0.0, wrap=True, max_width_chars=50, selectable=True)
        connect = Gtk.Button.new_with_mnemonic("_Connect")
        connect.connect("clicked", lambda _button: self._reconnect())
        status_row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        status_row.pack_start(self.status, True, True, 0)
        status_row.pack_start(connect, False, False, 0)

        self.models = Gtk.ComboBoxText.new_with_entry()
        model = spec.argument("model")
        self.models.set_tooltip_text(model.blurb if model is not None else "")
        self.models.connect("changed", lambda _combo: self._model_changed())
        model_row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        model_row.pack_start(Gtk.Label.new_with_mnemonic("_Model"), False, False, 0)
        model_row.pack_start(self.models, True, True, 0)

        self.options_grid = Gtk.Grid(row_spacing=4, column_spacing=6)
        self.error = Gtk.Label(xalign=0.0, wrap=True)

        # top to bottom: the backend, the task, the model, the options; GimpUi's fill()
        # appends its generated fields to the content area, so own rows go in between
        content = self.dialog.get_content_area()
        token = self.dialog.get_widget("token", GimpUi.LabelEntry.__gtype__)
        if isinstance(token, GimpUi.LabelEntry):
            token.get_entry().set_visibility(False)  # a password: not for over-the-shoulder
        self._add(content, status_row)
        self.dialog.fill([n for n in ("backend-url", "token", "task") if spec.argument(n)])
        self._add(content, model_row)
        self.dialog.fill([a.name for a in spec.arguments
                          if a.name not in (*OWN_WIDGETS, "backend-url", "token", "task")])
        self._add(content, self.options_grid)
        self._add(content, self.error)
        if spec.argument("task") is not None:
            config.connect("notify::task", lambda *_args: self._show_catalog())

        self.connection = Connection(self._url(), self._token(), dispatch=_on_ui_thread,
                                     on_change=lambda _c: self._show_catalog())
        self._show_catalog()
        self.connection.refresh()

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

    def _task(self) -> Task:
        if self.spec.task is not None:
            return self.spec.task
        try:
            return Task(self.config.get_property("task"))
        except ValueError:
            return Task.UPSCALE

    def _show_catalog(self) -> None:
        """Fill the status line, the model list and the option form from what is known."""
        text = self.connection.describe()
        if (self.connection.state == ConnectionState.DISCONNECTED
                and autostart_available(self.connection.client.url)):
            text = (f"Restora's backend is not running at {self.connection.client.url}; "
                    "it will be started when you press OK.")
        self.status.set_text(text)
        catalog = self.connection.catalog
        task = self._task()
        names = [m.name for m in catalog.models_for(task)] if catalog is not None else []
        current = self.config.get_property("model") or ""
        self._filling = True
        self.models.remove_all()
        default = catalog.default_model(task) if catalog is not None else None
        self.models.append("", f"Default ({default})" if default else "Default")
        for name in names:
            self.models.append(name, name)
        if current in names:
            self.models.set_active(names.index(current) + 1)
        elif current:
            self.models.get_child().set_text(current)
        else:
            self.models.set_active(0)
        self._filling = False
        self._build_form(catalog.params(task) if catalog is not None else [])

    def _model_changed(self) -> None:
        if self._filling:
            return
        active = self.models.get_active()
        value = self.models.get_active_id() if active >= 0 else self.models.get_child().get_text()
        self.config.set_property("model", (value or "").strip())

    # --- the task's options ---

    def _build_form(self, params: list[ParamInfo]) -> None:
        task = self._task()
        if self.form and task == self._form_task:  # the backend again: keep what was typed
            with contextlib.suppress(BadArgument):
                self._store_options()
        self._form_task = task
        for child in self.options_grid.get_children():
            self.options_grid.remove(child)
        hidden = {a.name for a in self.spec.arguments}
        if self.spec.action == Action.RESTORE:
            hidden |= SIZE_PARAMS  # a selection restored in place keeps its size
        options = parse_options(self.config.get_property("options") or "")
        self.form = []
        for row, param in enumerate(form_params(params, hidden)):
            label = Gtk.Label(label=param_label(param), xalign=0.0)
            widget = self._field(param, options)
            self.options_grid.attach(label, 0, row, 1, 1)
            self.options_grid.attach(widget, 1, row, 1, 1)
            self.form.append((param, widget))
        self.options_grid.show_all()

    @staticmethod
    def _field(param: ParamInfo, options: dict[str, Any]) -> Gtk.Widget:
        text = display_text(param, options)
        if param.type == "bool":
            check = Gtk.CheckButton()
            current = options.get(param.name, param.default)
            check.set_active(bool(current))
            return check
        if param.choices:
            combo = Gtk.ComboBoxText()
            for choice in param.choices:
                combo.append(str(choice), str(choice))
            combo.set_active_id(text or str(param.default))
            return combo
        entry = Gtk.Entry(hexpand=True)
        entry.set_text(text)
        default = "automatic" if param.default is None else str(param.default)
        entry.set_placeholder_text(f"default: {default}")
        return entry

    def _store_options(self) -> None:
        values: dict[str, Any] = {}
        for param, widget in self.form:
            if isinstance(widget, Gtk.CheckButton):
                values[param.name] = widget.get_active()
            elif isinstance(widget, Gtk.ComboBoxText):
                values[param.name] = parse_value(param, widget.get_active_id() or "")
            else:
                values[param.name] = parse_value(param, widget.get_text())
        # with the backend's form, the options are exactly the form's: nothing of another
        # task stays behind; without it, what was there (a script's) is kept
        raw = "" if self.form else self.config.get_property("options") or ""
        self.config.set_property("options", merge_options(raw, [p for p, _ in self.form],
                                                          values))


def _ui_available() -> bool:
    """GTK can open a window (GimpUi.init would end the process when it cannot)."""
    return bool(Gtk.init_check(None)[0])


def run_dialog(procedure: Gimp.Procedure, config: Gimp.ProcedureConfig, spec: ProcedureSpec,
               stored: Settings, image: Gimp.Image) -> bool:
    """True when the person pressed OK; the config then holds their choices."""
    if not _ui_available():
        raise PluginError("Restora's dialog cannot open: there is no display.",
                          "From scripts and batch mode, call it with run-mode "
                          "Gimp.RunMode.NONINTERACTIVE and arguments.")
    GimpUi.init(PLUG_IN_ID)
    return RestoraDialog(procedure, config, spec, stored).run()


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
