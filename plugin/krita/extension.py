"""The menu (Tools > Restora) and the plug-in's registration with Krita.

Every action is created through Window.createAction, so it sits in Krita's action collection
and can get a shortcut in Settings > Configure Krita > Keyboard Shortcuts. The task actions
exist for every task of the protocol and are shown only for the tasks the backend runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from krita import DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

from ..common.catalog import task_action_id, task_title
from ..shared.protocol import Task
from . import actions
from .docker import RestoraDocker
from .qt import QAction, QtWidgets

MENU_ID = "restora_menu"
DOCKER_ID = "restora_docker"
UPSCALE_ID = "restora_upscale_image"
RESTORE_ID = "restora_restore_selection"
CANCEL_ID = "restora_cancel"
#: tasks with their own menu entry ("Upscale image" and "Restore selection" cover upscale)
MENU_TASKS = tuple(t for t in Task if t != Task.UPSCALE)


class RestoraExtension(Extension):
    def __init__(self, parent: Any) -> None:
        super().__init__(parent)
        self._task_actions: list[tuple[Task, QAction]] = []

    def setup(self) -> None:
        controller = actions.controller()
        controller.changed.connect(self._show_offered_tasks)
        controller.start()

    def createActions(self, window: Any) -> None:
        menu_action = window.createAction(MENU_ID, "Restora", "tools")
        menu = QtWidgets.QMenu("Restora", window.qwindow())
        menu_action.setMenu(menu)

        def add(action_id: str, text: str, run: Callable[[], Any]) -> QAction:
            action = window.createAction(action_id, text, "")
            action.triggered.connect(lambda _checked=False: run())
            menu.addAction(action)
            return action

        add(UPSCALE_ID, "Upscale image", lambda: actions.upscale_image())
        add(RESTORE_ID, "Restore selection", lambda: actions.restore_selection())
        menu.addSeparator()
        for task in MENU_TASKS:
            action = add(task_action_id(task), task_title(task),
                         lambda task=task: actions.run_task(task))
            self._task_actions.append((task, action))
        menu.addSeparator()
        add(CANCEL_ID, "Cancel Restora job", lambda: actions.controller().cancel())
        self._show_offered_tasks()

    def _show_offered_tasks(self) -> None:
        catalog = actions.controller().connection.catalog
        for task, action in self._task_actions:
            action.setVisible(catalog is not None and catalog.offers(task))


def register() -> None:
    """Called by the packaged restora/__init__.py when Krita loads the plug-in."""
    app = Krita.instance()
    app.addExtension(RestoraExtension(app))
    position = getattr(DockWidgetFactoryBase, "DockRight", None)
    if position is None:  # Krita 6 / PyQt6: scoped enums
        position = DockWidgetFactoryBase.DockPosition.DockRight
    app.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, position, RestoraDocker))
