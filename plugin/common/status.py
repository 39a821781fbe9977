"""The backend's state as one short line and a kind of icon, the same in both editors.

One function decides what the status line says, from everything that knows something about
the backend (the connection's last answer, a start under way, a job that lost its stream), so
the line never says "Connected" beside "connection lost". Words are for artists: no command
lines, no file names; what to do is a button the editor shows beside the line.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .connection import Connection, ConnectionState


class StatusKind(str, enum.Enum):
    READY = "ready"  # connected, nothing wrong
    BUSY = "busy"  # connecting, starting, reconnecting
    OFF = "off"  # not running (a button can start it)
    ERROR = "error"  # something answered but cannot be used, or a start failed


@dataclass(frozen=True)
class Status:
    kind: StatusKind
    text: str  # one short line
    detail: str = ""  # the longer explanation, for a tooltip or the settings dialog
    can_start: bool = False  # a "Start backend" button does something now


def backend_status(connection: Connection, *, starting: bool = False,
                   start_error: str = "", can_start: bool = False,
                   reconnecting: bool = False) -> Status:
    """What the status line says now.

    `starting`: a start of the local backend is under way; `start_error`: the last start
    failed (shown until the next attempt or a connection); `can_start`: nothing answers at a
    local address, so the Start backend button would help; `reconnecting`: a running job lost
    its connection and is waiting for the backend to come back."""
    if starting:
        return Status(StatusKind.BUSY, "Starting the backend...",
                      "The first start can take a minute while the models are read.")
    if reconnecting:
        return Status(StatusKind.BUSY, "Connection lost, reconnecting...",
                      "The job goes on if the same backend answers again.")
    state = connection.state
    if state == ConnectionState.CONNECTED and connection.catalog is not None:
        h = connection.catalog.health
        device = h.device_name or h.device or "starting"
        count = sum(1 for m in connection.catalog.models if m.usable)
        return Status(StatusKind.READY, f"Ready on {device}",
                      f"Restora {h.version} at {connection.client.url}, {count} "
                      f"model{'s' if count != 1 else ''} installed.")
    if state == ConnectionState.CONNECTING:
        return Status(StatusKind.BUSY, "Connecting...",
                      f"Looking for Restora's backend at {connection.client.url}.")
    if start_error:
        return Status(StatusKind.ERROR, "The backend did not start", start_error,
                      can_start=can_start)
    error = connection.error
    if state == ConnectionState.FAILED:
        return Status(StatusKind.ERROR, "The backend cannot be used",
                      error.text if error is not None else "")
    if can_start:
        return Status(StatusKind.OFF, "The backend is not running",
                      f"Nothing answers at {connection.client.url}. Start backend starts "
                      "it on this computer.", can_start=True)
    if connection.client.is_local:
        return Status(StatusKind.OFF, "The backend is not running",
                      error.text if error is not None
                      else f"Nothing answers at {connection.client.url}.")
    return Status(StatusKind.OFF, "The backend does not answer",
                  f"Nothing answers at {connection.client.url}; it is on another computer: "
                  "start it there.")
