"""What can go wrong in a plug-in, as types with words a painter understands.

Every error has a `message` (what happened) and a `hint` (what to do); the docker shows both.
The server's own errors keep the server's code, message and hint.
"""

from __future__ import annotations

#: the same words in both editors: each has a "Start backend" button in Restora's settings
START_HINT = "Click Start backend in Restora's settings, then try again."


class PluginError(Exception):
    """A failure shown to the user: what happened and what to do about it."""

    code = "plugin_error"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    @property
    def text(self) -> str:
        """Message and hint as one paragraph, for a status label or a message box."""
        return f"{self.message} {self.hint}".strip()

    def __str__(self) -> str:
        return self.text


class BackendUnavailable(PluginError):
    """Nothing answers at the backend's address: it is not running, or the address is wrong."""

    code = "backend_unavailable"

    @classmethod
    def at(cls, url: str, reason: str = "") -> BackendUnavailable:
        detail = f" ({reason})" if reason else ""
        return cls(f"Restora's backend is not running at {url}{detail}.", START_HINT)


class BackendLost(PluginError):
    """The backend stopped or restarted while it worked on a job; the job is gone."""

    code = "backend_lost"


class ProtocolMismatch(PluginError):
    code = "protocol_mismatch"


class Unauthorized(PluginError):
    code = "unauthorized"


class ServerError(PluginError):
    """An error answer of the server, with the server's own code."""

    def __init__(self, message: str, hint: str = "", code: str = "server_error",
                 status: int = 0) -> None:
        super().__init__(message, hint)
        self.code = code
        self.status = status


class JobFailed(ServerError):
    """The job ran and failed on the server (out of memory, a broken model...)."""


class JobCancelled(PluginError):
    code = "cancelled"


class UnsupportedDocument(PluginError):
    """The document's colour model or depth is one Restora cannot send."""

    code = "unsupported_document"


class NothingSelected(PluginError):
    code = "nothing_selected"


class DocumentGone(PluginError):
    """The document or layer went away before the result arrived."""

    code = "document_gone"


class NothingFound(PluginError):
    """The job ran but found nothing to change (no face in the image): the document is left
    as it was, and the message is news, not a failure."""
