"""A stand-in for Krita's `krita` module, just enough to build the Restora docker and
extension outside Krita (docker_check.py): settings in a dict, no windows, and an active
document only when a check sets one (a tree of named layers, no pixels)."""

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
        #: what activeDocument() answers; a check sets it
        self.active_document: Document | None = None

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
        return self.active_document

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


class Node:
    """A layer: its name, its type and its children, bottom to top as Krita lists them."""

    _last_id = 0

    def __init__(self, name: str, kind: str = "paintlayer",
                 children: list[Node] | None = None) -> None:
        Node._last_id += 1
        self._name, self._type, self._id = name, kind, Node._last_id
        self.children: list[Node] = []
        self.parent: Node | None = None
        for child in children or []:
            self.add(child)

    def add(self, child: Node) -> None:
        child.parent = self
        self.children.append(child)

    def remove(self, child: Node) -> None:
        self.children.remove(child)

    def name(self) -> str:
        return self._name

    def setName(self, name: str) -> None:
        self._name = name

    def type(self) -> str:
        return self._type

    def uniqueId(self) -> int:
        return self._id

    def childNodes(self) -> list[Node]:
        return list(self.children)

    def parentNode(self) -> Node | None:
        return self.parent


class Document:
    """The layers of one image, bottom to top, and the active one."""

    def __init__(self, layers: list[Node], active: Node) -> None:
        self.root = Node("", "", layers)
        self.active = active

    def rootNode(self) -> Node:
        return self.root

    def activeNode(self) -> Node:
        return self.active

    def setActiveNode(self, node: Node) -> None:
        self.active = node
