"""The process's model manager: where the face detector lives when no job passes one."""

from __future__ import annotations

import threading

from backend.models.manager.manager import ModelManager

_default: ModelManager | None = None
_default_lock = threading.Lock()


def default_manager() -> ModelManager:
    """The process's manager (the face detector's home when no job passes one)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ModelManager()
        return _default


def set_default_manager(manager: ModelManager) -> None:
    """Make `manager` (the server's) the one default_manager() returns."""
    global _default
    with _default_lock:
        _default = manager
