"""The line at the top of every Restora dialog: is the backend there, in plain words, with a
Start backend button when it is not running and the installer recorded one on this computer.

It asks the backend on a worker thread (common Connection) and again every few seconds while
nothing answers, so a backend started by other means is noticed without a button. Every answer
refreshes the task list GIMP registers its menu from at its next start. One of the few modules
that import GIMP.
"""

from __future__ import annotations

from collections.abc import Callable

import gi

gi.require_version("Gtk", "3.0")
from gi.repository import GLib, Gtk  # noqa: E402

from ..common import task_cache  # noqa: E402
from ..common.connection import Connection, ConnectionState  # noqa: E402
from ..common.errors import PluginError  # noqa: E402
from ..common.launcher import BackendLauncher  # noqa: E402
from .flow import autostart_available  # noqa: E402
from .status import Status, connection_status, for_artists  # noqa: E402
from .ui import on_ui_thread  # noqa: E402

#: seconds between tries while the backend does not answer
RETRY_SECONDS = 3
_DOTS = {True: "#4caf50", False: "#e0a030"}  # connected, not (yet)


class BackendStatus:
    """The status line and its buttons; `widget` goes into a dialog."""

    def __init__(self, url: str, token: str, on_change: Callable[[Connection], None],
                 on_check: Callable[[], None] | None = None,
                 tasks_path: str | None = None) -> None:
        """`on_check`: what a Check button does (none without it)."""
        self.on_change = on_change
        self.tasks_path = tasks_path
        self.launcher = BackendLauncher(on_ui_thread)
        self.start_error: PluginError | None = None
        self.status = Status("")
        self.connection = Connection(url, token, dispatch=on_ui_thread,
                                     on_change=lambda _c: self._changed())

        self.dot = Gtk.Label()
        self.label = Gtk.Label(xalign=0.0, wrap=True, max_width_chars=52, selectable=True)
        self.start = Gtk.Button.new_with_mnemonic("_Start backend")
        self.start.set_valign(Gtk.Align.CENTER)
        self.start.set_tooltip_text("Start Restora's backend on this computer, as installed")
        self.start.connect("clicked", lambda _b: self.start_backend())
        self.check: Gtk.Button | None = None
        self.widget = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        self.widget.pack_start(self.dot, False, False, 0)
        self.widget.pack_start(self.label, True, True, 0)
        self.widget.pack_start(self.start, False, False, 0)
        if on_check is not None:
            self.check = Gtk.Button.new_with_mnemonic("C_heck")
            self.check.set_valign(Gtk.Align.CENTER)
            self.check.set_tooltip_text("Ask the backend at this address whether it answers")
            self.check.connect("clicked", lambda _b: on_check())
            self.widget.pack_start(self.check, False, False, 0)
        self._timer = 0
        self._stopped = False
        self.widget.connect("destroy", lambda _w: self.stop())

    def begin(self) -> None:
        """Ask the backend now and every few seconds while it does not answer (the owner
        calls it once it can hear `on_change`)."""
        self._timer = GLib.timeout_add_seconds(RETRY_SECONDS, self._retry)
        self.refresh()

    @property
    def url(self) -> str:
        return self.connection.client.url

    def configure(self, url: str, token: str) -> None:
        """Another address or token: ask that backend."""
        self.start_error = None
        self.connection.configure(url, token)
        self.refresh()

    def refresh(self) -> None:
        self.start_error = None
        self.connection.refresh()
        self._changed()

    def start_backend(self) -> None:
        client = self.connection.client
        if self.launcher.start(client.url, client.token, self._started):
            self.start_error = None
            self._changed()

    def stop(self) -> None:
        """No more tries, and no more updates: an answer that arrives after the dialog has
        closed has no widgets left to show it in."""
        self._stopped = True
        if self._timer:
            GLib.source_remove(self._timer)
            self._timer = 0

    def _started(self, error: PluginError | None) -> None:
        self.start_error = error
        self.connection.refresh()
        self._changed()

    def _retry(self) -> bool:
        if (self.connection.state == ConnectionState.DISCONNECTED
                and not self.launcher.busy and not self.connection.refreshing):
            self.connection.refresh()
        return True  # until stop()

    def _changed(self) -> None:
        if self._stopped:
            return
        connection = self.connection
        can_start = (not self.launcher.busy and autostart_available(connection.client.url))
        detail = connection.client.url
        if self.start_error is not None:
            # the line says what happened; the details, for whoever repairs it, on hovering
            words = for_artists(self.start_error, connection.client.url)
            self.status = Status(words.message, can_start=can_start)
            detail = words.hint
        else:
            self.status = connection_status(connection.state, connection.catalog,
                                            connection.error, connection.client.url, can_start,
                                            starting=self.launcher.busy)
        self.label.set_text(self.status.text)
        self.label.set_tooltip_text(detail)
        colour = _DOTS[self.status.connected]
        self.dot.set_markup(f'<span foreground="{colour}">\u25cf</span>')
        self.start.set_visible(self.status.can_start)
        self.start.set_no_show_all(not self.status.can_start)
        if connection.connected and connection.catalog is not None and self.tasks_path:
            task_cache.save(self.tasks_path, connection.catalog.tasks)
        self.on_change(connection)
