"""One task option as GTK widgets, drawn from the backend's description (`ParamInfo`).

A number gets a spin button, or GIMP's own slider (GimpUi.SpinScale) where the spec asks for
a slider, with the spec's range, step and unit; an optional value gets a toggle named after
what "no value" means ("the model's own", "automatic") instead of a magic number; a choice or
a model gets a dropdown (models filtered by the purposes the option names); the help is the
tooltip. option_form.py works out the numbers, standard library only. One of the few modules
that import GIMP.
"""

from __future__ import annotations

from typing import Any

import gi

gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
from gi.repository import GimpUi, Gtk  # noqa: E402

from ..common.catalog import Catalog  # noqa: E402
from ..shared.protocol import ParamInfo  # noqa: E402
from .option_form import (  # noqa: E402
    DEFAULT_TEXT,
    choice_items,
    choice_value,
    digits,
    is_number,
    label_text,
    number_range,
    parse_value,
)

#: the width a slider gets at least, so its steps can be hit with the mouse
SLIDER_WIDTH = 180


class Field:
    """One option's widgets: `label` and `box` go into the form's grid; `widget` holds the
    value; `default_toggle` (optional numbers) means "leave it to the backend"."""

    def __init__(self, param: ParamInfo, catalog: Catalog | None, value: Any) -> None:
        self.param = param
        self.default_toggle: Gtk.CheckButton | None = None
        self.widget = _make(param, catalog, value)
        self.box = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6, hexpand=True)
        self.box.pack_start(self.widget, True, True, 0)
        self.unit: Gtk.Label | None = None
        if param.unit and is_number(param):
            self.unit = Gtk.Label(label=param.unit)
            self.box.pack_start(self.unit, False, False, 0)
        if param.optional and is_number(param):
            self.default_toggle = Gtk.CheckButton(label=param.none_label or DEFAULT_TEXT)
            self.default_toggle.set_tooltip_text("Let the backend choose")
            self.default_toggle.set_active(value is None)
            self.default_toggle.connect("toggled", lambda _b: self._grey())
            self.box.pack_start(self.default_toggle, False, False, 0)
            # a greyed-out number would read as the value used: show none while it is not
            self.widget.connect("output", self._blank_when_default)
            self._grey()
        self.label = Gtk.Label(label=label_text(param), xalign=0.0)
        self.label.set_mnemonic_widget(self.widget)
        for widget in (self.label, self.box, self.widget):
            widget.set_tooltip_text(param.help or None)

    @property
    def uses_default(self) -> bool:
        return self.default_toggle is not None and self.default_toggle.get_active()

    def _grey(self) -> None:
        self.widget.set_sensitive(not self.uses_default)
        if isinstance(self.widget, Gtk.SpinButton):
            self.widget.update()  # redraw its text through the output handler

    def _blank_when_default(self, spin: Gtk.SpinButton) -> bool:
        if not self.uses_default:
            return False  # GTK formats the number
        spin.set_text("")
        return True

    def set_shown(self, shown: bool) -> None:
        for widget in (self.label, self.box):
            widget.set_no_show_all(not shown)
            widget.set_visible(shown)

    def value(self) -> Any:
        param, widget = self.param, self.widget
        if self.uses_default:
            return None
        if isinstance(widget, Gtk.CheckButton):
            return widget.get_active()
        if isinstance(widget, Gtk.ComboBoxText):
            item = widget.get_active_id() or ""
            if param.widget == "model":
                return item or None
            return choice_value(param, item)
        if isinstance(widget, Gtk.SpinButton):
            widget.update()  # a number typed but not yet confirmed counts
            number = widget.get_adjustment().get_value()
            return round(number) if param.type == "int" else round(number, 6)
        return parse_value(param, widget.get_text())


def _make(param: ParamInfo, catalog: Catalog | None, value: Any) -> Gtk.Widget:
    if param.type == "bool":
        check = Gtk.CheckButton()
        check.set_active(bool(value))
        return check
    if param.widget == "model":
        return model_dropdown(param, catalog, value)
    if param.choices:
        combo = Gtk.ComboBoxText()
        items = choice_items(param)
        for item_id, text in items:
            combo.append(item_id, text)
        wanted = next((i for i, _ in items if i and choice_value(param, i) == value), "")
        if not combo.set_active_id(wanted):
            combo.set_active(0)
        return combo
    if is_number(param):
        return _number(param, value)
    entry = Gtk.Entry(hexpand=True)
    entry.set_text("" if value is None else str(value))
    if param.optional and param.none_label:
        entry.set_placeholder_text(param.none_label)
    return entry


def _number(param: ParamInfo, value: Any) -> Gtk.SpinButton:
    low, high, step = number_range(param)
    start = low if value is None else float(value)
    adjustment = Gtk.Adjustment(value=min(max(start, low), high), lower=low, upper=high,
                                step_increment=step, page_increment=step * 10)
    places = digits(param)
    if param.widget == "slider":
        # the label is the form's, left of it like every other option's
        scale = GimpUi.SpinScale.new(adjustment, "", places)
        scale.set_size_request(SLIDER_WIDTH, -1)
        scale.set_hexpand(True)
        return scale
    spin = Gtk.SpinButton(adjustment=adjustment, digits=places, hexpand=True)
    spin.set_numeric(True)
    return spin


def model_dropdown(param: ParamInfo, catalog: Catalog | None, value: Any) -> Gtk.ComboBoxText:
    """The models of the purposes the option names; a model the backend no longer has (a
    script's, an older run's) stays listed, so the value shown is the value sent."""
    combo = Gtk.ComboBoxText()
    if param.optional:
        combo.append("", param.none_label or DEFAULT_TEXT)
    for model in catalog.models_of(param.purposes) if catalog is not None else []:
        combo.append(model.name, model.name)
    if value and not combo.set_active_id(value):
        combo.append(value, value)
        combo.set_active_id(value)
    elif not value:
        combo.set_active(0)
    return combo
