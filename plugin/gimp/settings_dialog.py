"""Filters > Restora > Settings: where the backend is and the token a shared one needs, with
its status, a Check button and Start backend. One of the few modules that import GIMP.

The values go to the plug-in's own settings file (store.py), which every Restora procedure
reads, and not into GIMP's remembered procedure values, which GIMP keeps in plain text for
every procedure. A person on one computer never needs to change anything here.
"""

from __future__ import annotations

import os

import gi

gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
from gi.repository import GimpUi, GLib, Gtk  # noqa: E402

from ..common.errors import PluginError  # noqa: E402
from ..common.settings import DEFAULT_URL, Settings  # noqa: E402
from .backend_status import BackendStatus  # noqa: E402
from .procedures import SETTINGS_NAME, backend_address  # noqa: E402
from .ui import dim, start_ui, ui_available  # noqa: E402

TITLE = "Restora settings"
EXPLANATION = ("Restora's backend does the work, on this computer or on another one. On this "
               "computer it needs no change here.")
TOKEN_TIP = ("Only a backend shared over the network asks for one; its owner gives it to you. "
             "Leave it empty for the backend on this computer.")
ADDRESS_TIP = f"Where the backend answers; on this computer: {DEFAULT_URL}"


class SettingsDialog:
    def __init__(self, stored: Settings, tasks_path: str | None = None) -> None:
        self.stored = stored
        self.tasks_path = tasks_path
        self.result: Settings | None = None
        self.dialog = GimpUi.Dialog(title=TITLE, role=SETTINGS_NAME)
        self.dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
        self.dialog.add_button("_OK", Gtk.ResponseType.OK)
        self.dialog.set_default_response(Gtk.ResponseType.OK)

        self.address = Gtk.Entry(hexpand=True, activates_default=True)
        self.address.set_text(stored.backend_url)
        self.address.set_placeholder_text(DEFAULT_URL)
        self.address.set_tooltip_text(ADDRESS_TIP)
        self.token = Gtk.Entry(hexpand=True, activates_default=True, visibility=False)
        self.token.set_text(stored.token)
        self.token.set_placeholder_text("none")
        self.token.set_tooltip_text(TOKEN_TIP)
        self.token.set_input_purpose(Gtk.InputPurpose.PASSWORD)
        # Check asks the backend at the address typed, saved or not
        self.backend = BackendStatus(stored.backend_url, stored.token,
                                     on_change=lambda _c: None, on_check=self.check,
                                     tasks_path=tasks_path)
        for entry in (self.address, self.token):
            entry.connect("changed", lambda _e: self._edited())
        self.error = Gtk.Label(xalign=0.0, wrap=True, max_width_chars=60)

        grid = Gtk.Grid(row_spacing=6, column_spacing=8)
        for row, (mnemonic, entry) in enumerate((("Backend _address", self.address),
                                                 ("Access _token", self.token))):
            label = Gtk.Label.new_with_mnemonic(mnemonic)
            label.set_xalign(0.0)
            label.set_mnemonic_widget(entry)
            label.set_tooltip_text(entry.get_tooltip_text())
            grid.attach(label, 0, row, 1, 1)
            grid.attach(entry, 1, row, 1, 1)
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=10, margin=12)
        box.pack_start(dim(EXPLANATION), False, False, 0)
        box.pack_start(grid, False, False, 0)
        box.pack_start(self.backend.widget, False, False, 0)
        if os.environ.get("RESTORA_URL"):  # set for a test or a script: it wins over this
            box.pack_start(dim("RESTORA_URL is set: Restora's commands use that address "
                               "instead of this one."), False, False, 0)
        box.pack_start(self.error, False, False, 0)
        self.dialog.get_content_area().pack_start(box, True, True, 0)
        box.show_all()
        self.error.hide()
        self.error.set_no_show_all(True)
        self.backend.begin()

    def typed(self, quiet: bool = False) -> Settings | None:
        """The address and token as typed; None (and, unless quiet, a message) for an
        address that is not one."""
        text = self.address.get_text().strip()
        url = backend_address(text) if text else DEFAULT_URL
        if url is None:
            if quiet:
                return None
            self.error.set_markup("<b>" + GLib.markup_escape_text(
                f"'{text}' is not an address; write it like {DEFAULT_URL}.") + "</b>")
            self.error.show()
            return None
        self.error.hide()
        return Settings(backend_url=url, token=self.token.get_text().strip())

    def check(self) -> None:
        """Ask the backend at the typed address (Check, Enter in a field)."""
        settings = self.typed()
        if settings is not None:
            self.backend.configure(settings.backend_url, settings.token)

    def _edited(self) -> None:
        """A new address or token: what the status line says is about the old one now."""
        self.error.hide()
        typed = self.typed(quiet=True)
        client = self.backend.connection.client
        if typed is not None and (typed.backend_url, typed.token) == (client.url, client.token):
            return
        self.backend.label.set_text("Press Check to ask the backend at this address.")

    def run(self) -> Settings | None:
        """The settings to store after OK; None after Cancel."""
        try:
            while True:
                response = self.dialog.run()
                if response != Gtk.ResponseType.OK:
                    return None
                settings = self.typed()
                if settings is not None:
                    self.result = settings
                    return settings
        finally:
            self.backend.stop()
            self.dialog.destroy()


def run_settings_dialog(stored: Settings, tasks_path: str | None = None) -> Settings | None:
    """The settings to store, or None when the person cancelled."""
    if not ui_available():
        raise PluginError("Restora's settings cannot open: there is no display.",
                          "From scripts and batch mode, call restora-settings with run-mode "
                          "Gimp.RunMode.NONINTERACTIVE, backend-url and token.")
    start_ui()
    return SettingsDialog(stored, tasks_path).run()
