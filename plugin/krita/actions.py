"""The menu actions as plain functions, for the extension, for scripts and for the tests.

    from restora.krita import actions
    run = actions.restore_selection(doc, node, settings, wait=True)
    run.status, run.layer_name, run.error

Without `settings` they use the plug-in's own controller (the one the menu and the docker use,
with the settings stored in Krita); with `settings`, a one-off controller that saves nothing.
`wait=True` runs Qt's event loop until the new layer is in place: the connection (when the
backend's task list is not known yet), the worker thread, the queued hand-over to the UI
thread and the insertion all happen as they do from the menu.
"""

from __future__ import annotations

from typing import Any

from ..common.settings import Settings
from .controller import ActionRun, Controller, TaskStore

_controller: Controller | None = None


def controller() -> Controller:
    """The plug-in's controller, made on first use with the settings stored in Krita."""
    global _controller
    if _controller is None:
        from .settings_store import load_settings, load_tasks, save_settings, save_tasks

        _controller = Controller(load_settings(), save_settings,
                                 TaskStore(load_tasks, save_tasks))
    return _controller


def _pick(settings: Settings | None) -> Controller:
    return Controller(settings) if settings is not None else controller()


def whole_image(document: Any = None, node: Any = None, settings: Settings | None = None,
                wait: bool = False, task: str | None = None,
                timeout: float = 600.0) -> ActionRun:
    """The chosen task (or `task`) on the whole layer or image; a task that resizes scales
    the document with Krita's own command and adds its layer above the source layer, or
    opens a new document (by setting)."""
    run = _pick(settings).whole_image(document, node, task)
    return run.wait(timeout) if wait else run


def upscale_image(document: Any = None, node: Any = None, settings: Settings | None = None,
                  wait: bool = False, timeout: float = 600.0) -> ActionRun:
    """The name older scripts call: the chosen task on the whole image."""
    return whole_image(document, node, settings, wait, None, timeout)


def restore_selection(document: Any = None, node: Any = None, settings: Settings | None = None,
                      wait: bool = False, task: str | None = None,
                      timeout: float = 600.0) -> ActionRun:
    """Restore the selection with the chosen task (or `task`) into a new layer, feathered,
    transparent outside the selection."""
    run = _pick(settings).restore_selection(document, node, task)
    return run.wait(timeout) if wait else run


def run_task(task: str, document: Any = None, node: Any = None,
             settings: Settings | None = None, wait: bool = False,
             timeout: float = 600.0) -> ActionRun:
    """A task by its id, as its menu entry runs it: on the selection when there is one (and
    the task uses selections), else on the whole layer."""
    run = _pick(settings).run_task(task, document, node)
    return run.wait(timeout) if wait else run
