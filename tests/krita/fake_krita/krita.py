"""A stand-in for Krita's `krita` module, just enough to build the Restora docker and
extension outside Krita (docker_check.py): settings in a dict, no documents, no windows."""

from __future__ import annotations

from typing import Any

try:  # not through restora.krita.qt: importing restora imports this module
    from PyQt5 import QtWidgets
except ImportError:
    from PyQt6 import QtWidgets

_settings: dict[tuple[str, str], str] = {}


class Krita:
    _instance: Krita | None = None

    def __init__(self) -> None:
        self.extensions: list[Any] = []
        self.dock_factories: list[Any] = []
        self.open_windows: list[Any] = []

    def addExtension(self, extension: Any) -> None:
        self.extensions.append(extension)

    def addDockWidgetFactory(self, factory: Any) -> None:
        self.dock_factories.append(factory)

    @classmethod
    def instance(cls) -> Krita:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def readSetting(self, group: str, name: str, default: str) -> str:
        return _settings.get((group, name), default)

    def writeSetting(self, group: str, name: str, value: str) -> None:
        _settings[(group, name)] = value

    def documents(self) -> list[Any]:
        return []

    def windows(self) -> list[Any]:
        return list(self.open_windows)

    def activeDocument(self) -> Any:
        return None

    def activeWindow(self) -> Any:
        return None


class DockWidget(QtWidgets.QDockWidget):
    pass


class Extension:
    def __init__(self, parent: Any) -> None:
        self.parent = parent


class DockWidgetFactoryBase:
    DockRight = 2


class DockWidgetFactory:
    def __init__(self, name: str, position: Any, cls: type) -> None:
        self.name, self.position, self.cls = name, position, cls


class Selection:
    pass


class Window:
    """Krita's Window: actions created into its action collection, here a plain list."""

    def __init__(self) -> None:
        self.main = QtWidgets.QMainWindow()
        self.created: dict[str, Any] = {}
        Krita.instance().open_windows.append(self)

    def qwindow(self) -> Any:
        return self.main

    def createAction(self, action_id: str, text: str, location: str) -> Any:
        from restora.krita.qt import QAction

        action = QAction(text, self.main)
        action.setObjectName(action_id)
        self.created[action_id] = (action, location)
        return action
