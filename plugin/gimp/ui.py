"""What every Restora window in GIMP needs: GTK started once, callbacks on GTK's thread, the
message box. One of the few modules that import GIMP."""

from __future__ import annotations

from collections.abc import Callable

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
from gi.repository import GimpUi, GLib, Gtk  # noqa: E402

from ..common.errors import PluginError  # noqa: E402

PLUG_IN_ID = "restora"


def on_ui_thread(fn: Callable[[], None]) -> None:
    """A worker's callback, run on GTK's main loop (the dialog's thread) instead."""

    def once() -> bool:
        fn()
        return False  # not again

    GLib.idle_add(once)


def ui_available() -> bool:
    """GTK can open a window (GimpUi.init would end the process when it cannot)."""
    return bool(Gtk.init_check(None)[0])


def start_ui() -> None:
    """GimpUi.init for this plug-in: GIMP's theme, and dialogs that stay above GIMP."""
    GimpUi.init(PLUG_IN_ID)


def show_error(error: PluginError) -> bool:
    """A message box in plain words; False when no window can be shown (batch mode)."""
    if not ui_available():
        return False  # the caller returns the error to GIMP instead
    start_ui()
    box = Gtk.MessageDialog(message_type=Gtk.MessageType.ERROR,
                            buttons=Gtk.ButtonsType.CLOSE, text=error.message)
    box.set_title("Restora")
    if error.hint:
        box.format_secondary_text(error.hint)
    box.run()
    box.destroy()
    return True


def dim(text: str) -> Gtk.Label:
    """A wrapped line in smaller, lighter type, for explanations under a control."""
    label = Gtk.Label(xalign=0.0, wrap=True, max_width_chars=60)
    label.set_markup(f"<small>{GLib.markup_escape_text(text)}</small>")
    label.get_style_context().add_class("dim-label")
    return label
