"""Qt for the Krita adapter: the binding Krita itself uses, PyQt5 (Krita 5) or PyQt6 (Krita 6).

The choice follows the host, not what happens to be installed: Krita imports its binding
before any plug-in, and a system Python with both bindings must not load Qt 6 into Krita 5.
Code elsewhere writes Qt 6 style (fully scoped enums such as Qt.AlignmentFlag.AlignLeft,
`exec()`), which PyQt5 5.15 accepts too, and takes QAction from here because Qt 6 moved it
from QtWidgets to QtGui.
"""

from __future__ import annotations

import importlib.util
import sys


def _binding() -> str:
    if "PyQt6" in sys.modules and "PyQt5" not in sys.modules:
        return "PyQt6"  # Krita 6 loaded its binding
    if "PyQt5" in sys.modules or importlib.util.find_spec("PyQt5") is not None:
        return "PyQt5"  # Krita 5 loaded its binding, or, outside Krita, Qt 5 is there
    return "PyQt6"


if _binding() == "PyQt6":
    from PyQt6 import QtCore, QtGui, QtWidgets
    from PyQt6.QtCore import QEventLoop, QObject, Qt, QTimer, pyqtSignal
    from PyQt6.QtGui import QAction

    QT6 = True
else:
    from PyQt5 import QtCore, QtGui, QtWidgets
    from PyQt5.QtCore import QEventLoop, QObject, Qt, QTimer, pyqtSignal
    from PyQt5.QtWidgets import QAction

    QT6 = False

__all__ = ["QT6", "QAction", "QEventLoop", "QObject", "QTimer", "Qt", "QtCore", "QtGui",
           "QtWidgets", "pyqtSignal"]
