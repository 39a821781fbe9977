"""Restora's settings dialog: where the backend is, its token, and starting it.

A local user never needs any of this, so it lives behind the docker's settings button rather
than taking room in the docker: the docker shows only a one-line status.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from ..common.settings import normalise_url
from .qt import QtWidgets


class SettingsDialog(QtWidgets.QDialog):
    def __init__(self, controller: Any, parent: Any = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setWindowTitle("Restora settings")
        W = QtWidgets
        layout = W.QVBoxLayout(self)
        self.status = W.QLabel()
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        form = W.QFormLayout()
        self.url = W.QLineEdit()
        self.url.setPlaceholderText("http://127.0.0.1:8765")
        self.url.setToolTip("Where Restora's backend listens. The address the installer set "
                            "up is right for a backend on this computer.")
        self.token = W.QLineEdit()
        self.token.setEchoMode(W.QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("only for a backend on another computer")
        self.token.setToolTip("The password a backend shared over the network asks for.")
        form.addRow("Backend address", self.url)
        form.addRow("Token", self.token)
        layout.addLayout(form)
        self.error = W.QLabel()
        self.error.setWordWrap(True)
        self.error.setVisible(False)
        layout.addWidget(self.error)
        buttons = W.QHBoxLayout()
        self.start_button = W.QPushButton("Start backend")
        self.start_button.setToolTip("Start Restora's backend on this computer, as Restora's "
                                     "installer set it up.")
        self.connect_button = W.QPushButton("Connect")
        self.close_button = W.QPushButton("Close")
        buttons.addWidget(self.start_button)
        buttons.addStretch(1)
        buttons.addWidget(self.connect_button)
        buttons.addWidget(self.close_button)
        layout.addLayout(buttons)
        self.url.setText(controller.settings.backend_url)
        self.token.setText(controller.settings.token)
        self.start_button.clicked.connect(lambda _c=False: controller.start_backend())
        self.connect_button.clicked.connect(lambda _c=False: self.apply())
        self.url.returnPressed.connect(self.apply)
        self.close_button.clicked.connect(lambda _c=False: self.accept())
        controller.changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        status = self.controller.status()
        self.status.setText(f"<b>{status.text}</b><br>{status.detail}")
        self.start_button.setEnabled(status.can_start)

    def apply(self) -> bool:
        """The address and token into the settings; the connection is tried at once."""
        url = normalise_url(self.url.text())
        if url is None:
            self.error.setText(f"'{self.url.text()}' is not a backend address, such as "
                               "http://127.0.0.1:8765.")
            self.error.setVisible(True)
            return False
        self.error.setVisible(False)
        settings = dataclasses.replace(self.controller.settings, backend_url=url,
                                       token=self.token.text().strip())
        self.controller.update_settings(settings)
        self.controller.connection.refresh()
        return True

    def done(self, result: int) -> None:
        with contextlib.suppress(TypeError, RuntimeError):  # already disconnected
            self.controller.changed.disconnect(self.refresh)
        super().done(result)
