"""The menu (Tools > Restora) and the plug-in's registration with Krita.

Every action is created through Window.createAction, so it sits in Krita's action collection
and can get a shortcut in Settings > Configure Krita > Keyboard Shortcuts. The task actions
come from the backend's task list (or the last one seen, before it answers), one per task it
runs, in its order, titled as it titles them; a task that goes away is hidden, not deleted, so
its shortcut survives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from krita import DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

from ..common.catalog import grouped, task_action_id, task_title
from ..shared.protocol import TaskInfo
from . import actions
from .docker import RestoraDocker
from .qt import QAction, QtWidgets

MENU_ID = "restora_menu"
DOCKER_ID = "restora_docker"
UPSCALE_ID = "restora_upscale_image"  # the id older versions gave "Upscale image"
RESTORE_ID = "restora_restore_selection"
CANCEL_ID = "restora_cancel"

Create = Callable[[str, str], QAction]


class TaskMenu:
    """Tools > Restora: one entry per task offered, by group (make bigger, restore, enhance),
    then the chosen task on the selection or the whole image, then Cancel. `create(id, text)`
    makes an action in the window."""

    def __init__(self, menu: Any, create: Create) -> None:
        self.menu = menu
        self._create = create
        self._actions: dict[str, QAction] = {}
        self.fixed = [self._action(RESTORE_ID, "Restore selection",
                                   lambda: actions.restore_selection()),
                      self._action(UPSCALE_ID, "Whole image", lambda: actions.whole_image())]
        self.cancel = self._action(CANCEL_ID, "Cancel Restora job",
                                   lambda: actions.controller().cancel())
        self.shown: list[str] = []

    def _action(self, action_id: str, text: str, run: Callable[[], Any]) -> QAction:
        action = self._actions.get(action_id)
        if action is None:
            action = self._create(action_id, text)
            action.triggered.connect(lambda _checked=False: run())
            self._actions[action_id] = action
        action.setText(text)
        return action

    def update(self, tasks: list[TaskInfo]) -> None:
        ids = [t.task for t in tasks]
        if ids == self.shown and all(self._actions[task_action_id(t.task)].text()
                                     == task_title(t) for t in tasks):
            return
        self.menu.clear()
        for i, (_group, members) in enumerate(grouped(tasks)):
            if i:
                self.menu.addSeparator()  # make bigger | restore | enhance (redraws) | edit
            for info in members:
                action = self._action(task_action_id(info.task), task_title(info),
                                      lambda task=info.task: actions.run_task(task))
                action.setToolTip(info.help)
                action.setVisible(True)
                self.menu.addAction(action)
        for action_id, action in self._actions.items():
            if action_id.startswith("restora_task_") and action not in self.menu.actions():
                action.setVisible(False)  # not offered now: kept for its shortcut
        if tasks:
            self.menu.addSeparator()
        for action in self.fixed:
            self.menu.addAction(action)
        self.menu.addSeparator()
        self.menu.addAction(self.cancel)
        self.shown = ids


class RestoraExtension(Extension):
    def __init__(self, parent: Any) -> None:
        super().__init__(parent)
        self._menus: list[TaskMenu] = []

    def setup(self) -> None:
        controller = actions.controller()
        controller.changed.connect(self._show_offered_tasks)
        controller.start()

    def createActions(self, window: Any) -> None:
        menu_action = window.createAction(MENU_ID, "Restora", "tools")
        qwindow = window.qwindow()
        menu = QtWidgets.QMenu("Restora", qwindow)
        menu_action.setMenu(menu)
        during = [window]  # Krita deletes this wrapper once createActions returns

        def create(action_id: str, text: str) -> QAction:
            if during:
                return during[0].createAction(action_id, text, "")
            return _create_action(qwindow, action_id, text)

        self._menus.append(TaskMenu(menu, create))
        self._show_offered_tasks()
        during.clear()

    def _show_offered_tasks(self) -> None:
        tasks = actions.controller().known_tasks()
        for menu in list(self._menus):
            try:
                menu.update(tasks)
            except RuntimeError:  # its window was closed: Qt deleted the menu with it
                self._menus.remove(menu)


def _create_action(qwindow: Any, action_id: str, text: str) -> QAction:
    """A Krita action in the window that owns `qwindow`, registered so shortcuts can be set.

    The `Window` that createActions receives is a wrapper Krita deletes after the call, so the
    live one is looked up each time a task appears later."""
    live = next((w for w in Krita.instance().windows() if w.qwindow() == qwindow), None)
    if live is None:  # the window is closing
        return QAction(text, qwindow)
    return live.createAction(action_id, text, "")


def register() -> None:
    """Called by the packaged restora/__init__.py when Krita loads the plug-in."""
    app = Krita.instance()
    app.addExtension(RestoraExtension(app))
    position = getattr(DockWidgetFactoryBase, "DockRight", None)
    if position is None:  # Krita 6 / PyQt6: scoped enums
        position = DockWidgetFactoryBase.DockPosition.DockRight
    app.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, position, RestoraDocker))
