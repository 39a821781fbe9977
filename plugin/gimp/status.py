"""What the GIMP plug-in says about its backend, in words for the person at the screen.

The common code's errors are written for every editor and keep some words for people who run
the backend by hand (a command line, a file name). In GIMP a person mostly needs to know
whether Restora is there, and where in GIMP to change that: the status line of every dialog
and the message boxes come from here. Standard library only, so it is tested without GIMP.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ..common.catalog import Catalog, task_title
from ..common.connection import ConnectionState
from ..common.errors import (
    BackendLost,
    BackendUnavailable,
    PluginError,
    ProtocolMismatch,
    Unauthorized,
)
from ..common.launcher import BackendNotInstalled, BackendStartFailed, is_local
from ..shared.protocol import TaskInfo

#: where in GIMP the address and token are set
SETTINGS_MENU = "Filters > Restora > Settings"


@dataclass(frozen=True)
class Status:
    """One line about the backend, and what the line's buttons may offer."""

    text: str
    connected: bool = False
    #: nothing answers, and the backend installed on this computer can be started
    can_start: bool = False


def place(url: str) -> str:
    """The backend's address as a person reads it: host and port, no scheme."""
    parts = urlsplit(url)
    return parts.netloc or url


def connection_status(state: ConnectionState, catalog: Catalog | None,
                      error: PluginError | None, url: str, can_start: bool,
                      starting: bool = False) -> Status:
    """The line a dialog shows for the connection's state."""
    if starting:
        return Status("Starting Restora's backend; the first start can take a minute...")
    if state == ConnectionState.CONNECTED and catalog is not None:
        health = catalog.health
        device = health.device_name or health.device or "this computer"
        count = sum(1 for m in catalog.models if m.usable)
        models = f"{count} model{'s' if count != 1 else ''}"
        if not health.ready:
            return Status(f"Connected to Restora on {device}; it is still getting ready.",
                          connected=True)
        return Status(f"Connected to Restora on {device} ({models}).", connected=True)
    if state == ConnectionState.CONNECTING:
        return Status("Looking for Restora's backend...")
    if error is None or isinstance(error, BackendUnavailable):
        can_start = can_start and is_local(url)  # another computer's is not ours to start
        words = not_running(url, can_start)
        # with the Start backend button beside it, the line needs no advice
        return Status(words.message if can_start else words.text, can_start=can_start)
    return Status(for_artists(error, url, can_start).text)


def not_running(url: str, can_start: bool) -> PluginError:
    if not is_local(url):
        return BackendUnavailable(f"Restora's backend at {place(url)} does not answer.",
                                  "It runs on another computer: start it there, or set "
                                  f"another address in {SETTINGS_MENU}.")
    if can_start:
        return BackendUnavailable("Restora's backend is not running.",
                                  f"Start it with Start backend in {SETTINGS_MENU}; a Restora "
                                  "command also starts it.")
    return BackendUnavailable("Restora's backend is not running, and this computer has none "
                              "installed that GIMP could start.",
                              "Install Restora on this computer, or set the address of "
                              f"another computer's backend in {SETTINGS_MENU}.")


def for_artists(error: PluginError, url: str, can_start: bool = False) -> PluginError:
    """The error with GIMP's words where the common words send a person to a terminal or a
    file; any other error as it is (the backend's own words)."""
    if isinstance(error, BackendNotInstalled):
        return BackendNotInstalled("Restora's backend is not installed on this computer.",
                                   "Install Restora on this computer, or set the address of "
                                   f"another computer's backend in {SETTINGS_MENU}.")
    if isinstance(error, BackendStartFailed):  # what it said stays, for whoever repairs it
        return BackendStartFailed("Restora's backend could not start.",
                                  f"Run Restora's installer again to repair it. ({error.text})")
    if isinstance(error, BackendLost):
        return BackendLost(error.message, "Run the command again; if Restora's backend has "
                           f"stopped, start it from {SETTINGS_MENU}.")
    if isinstance(error, BackendUnavailable):
        return not_running(url, can_start)
    if isinstance(error, Unauthorized):
        refused = "refused the access token" if "refused" in error.message else \
            "needs an access token"
        return Unauthorized(f"Restora's backend at {place(url)} {refused}.",
                            "Enter the token its owner gave you in "
                            f"{SETTINGS_MENU}.")
    if isinstance(error, ProtocolMismatch):
        return ProtocolMismatch(f"What answers at {place(url)} is not a Restora backend this "
                                "plug-in can work with.",
                                "Check the address in Settings, and install the GIMP plug-in "
                                "and the backend of the same Restora release.")
    return error


def missing_model(info: TaskInfo) -> str:
    """What a dialog says about a task that runs once a model is installed."""
    return f"{task_title(info)} needs a model, and none is installed yet."
