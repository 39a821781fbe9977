"""Typed errors: each has a stable code, a message a person understands, and a hint.

The CLI prints them and exits non-zero; the server maps them to a JSON error body.
"""

from __future__ import annotations


class RestoraError(Exception):
    """Base class of every error Restora reports to a user."""

    code = "restora_error"
    http_status = 400

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ImageDecodeError(RestoraError):
    code = "image_decode"


class ImageTooLargeError(RestoraError):
    code = "image_too_large"
    http_status = 413


class ImageTooSmallError(RestoraError):
    code = "image_too_small"


class ModelNotFoundError(RestoraError):
    code = "model_not_found"
    http_status = 404


class ModelFormatError(RestoraError):
    """A file that is not a model, an unsafe pickle, or an architecture we cannot run."""

    code = "model_format"
    http_status = 422


class InvalidParameterError(RestoraError):
    code = "invalid_parameter"
    http_status = 422


class DeviceError(RestoraError):
    code = "device"


class CancelledError(RestoraError):
    code = "cancelled"
    http_status = 409


class OutOfMemoryError(RestoraError):
    code = "out_of_memory"
    http_status = 507


class UnsupportedOperatorError(ModelFormatError):
    """A model file that is well formed but uses operations Restora cannot run."""

    code = "unsupported_operator"


class TaskUnavailableError(RestoraError):
    """A task this install does not know, or cannot run (a package it needs is missing)."""

    code = "task_unavailable"
    http_status = 422


class OutputWriteError(RestoraError):
    """An output file could not be written (disk full, read-only folder, no permission)."""

    code = "output_write"
    http_status = 507
