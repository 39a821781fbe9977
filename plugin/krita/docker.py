"""The Restora docker: connection, task, model, options, progress, Cancel and the last error.

Widgets are rebuilt from the backend's catalog (tasks, models, each task's parameters), so a
task or option added to the backend shows up here without code. Every edit is saved as the
plug-in's settings at once; nothing here talks to the network (the controller does, off the
UI thread).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from krita import DockWidget

from ..common.catalog import param_label, task_title
from ..common.connection import ConnectionState
from ..common.settings import normalise_url
from ..shared.protocol import ParamInfo, Task
from . import actions
from .qt import Qt, QtWidgets

AUTO = "auto"
STARTING_TEXT = "Starting Restora's backend... (the first start can take a minute)"
_STATE_COLOURS = {ConnectionState.CONNECTED: "#2e7d32", ConnectionState.CONNECTING: "#8d6e00",
                  ConnectionState.DISCONNECTED: "#b71c1c", ConnectionState.FAILED: "#b71c1c"}


class RestoraDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Restora")
        self.controller = actions.controller()
        self._updating = False
        self._form_task: Task | None = None
        self._param_widgets: dict[str, tuple[ParamInfo, QtWidgets.QWidget]] = {}
        self._build()
        self.controller.changed.connect(self.refresh)
        self.refresh()

    def canvasChanged(self, canvas: Any) -> None:
        pass

    # --- layout ---

    def _build(self) -> None:
        W = QtWidgets
        root = W.QWidget(self)
        layout = W.QVBoxLayout(root)

        self.state = W.QLabel()
        self.state.setWordWrap(True)
        self.backend_button = W.QToolButton()
        self.backend_button.setText("Backend...")
        self.backend_button.setCheckable(True)
        top = W.QHBoxLayout()
        top.addWidget(self.state, 1)
        top.addWidget(self.backend_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(top)
        self.start_button = W.QPushButton("Start backend")
        self.start_button.setToolTip("Start Restora's backend on this computer (restora serve), "
                                     "as Restora's installer set it up.")
        self.start_button.setVisible(False)
        layout.addWidget(self.start_button)

        self.backend_box = W.QGroupBox("Backend")
        backend = W.QFormLayout(self.backend_box)
        self.url = W.QLineEdit()
        self.url.setPlaceholderText("http://127.0.0.1:8765")
        self.token = W.QLineEdit()
        self.token.setEchoMode(W.QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("only for a backend started with --token")
        self.connect_button = W.QPushButton("Connect")
        backend.addRow("Address", self.url)
        backend.addRow("Token", self.token)
        backend.addRow("", self.connect_button)
        self.backend_box.setVisible(False)
        layout.addWidget(self.backend_box)

        form = W.QFormLayout()
        self.task = W.QComboBox()
        self.model = W.QComboBox()
        form.addRow("Task", self.task)
        form.addRow("Model", self.model)
        layout.addLayout(form)

        self.options_box = W.QGroupBox("Options")
        self.options = W.QFormLayout(self.options_box)
        layout.addWidget(self.options_box)

        common = W.QFormLayout()
        self.feather = W.QDoubleSpinBox()
        self.feather.setRange(-1, 1024)
        self.feather.setSpecialValueText(AUTO)
        self.feather.setSuffix(" px")
        self.feather.setToolTip("Width of the soft edge of a restored selection.")
        self.padding = W.QSpinBox()
        self.padding.setRange(-1, 4096)
        self.padding.setSpecialValueText(AUTO)
        self.padding.setSuffix(" px")
        self.padding.setToolTip("Pixels around the selection the model sees for context.")
        self.source = W.QComboBox()
        self.source.addItem("Active layer", "layer")
        self.source.addItem("Image as shown", "projection")
        self.upscale_into = W.QComboBox()
        self.upscale_into.addItem("New layer", "layer")
        self.upscale_into.addItem("New document", "document")
        common.addRow("Feather", self.feather)
        common.addRow("Padding", self.padding)
        common.addRow("Send", self.source)
        common.addRow("Upscale into", self.upscale_into)
        layout.addLayout(common)

        buttons = W.QHBoxLayout()
        self.upscale_button = W.QPushButton("Upscale image")
        self.restore_button = W.QPushButton("Restore selection")
        buttons.addWidget(self.upscale_button)
        buttons.addWidget(self.restore_button)
        layout.addLayout(buttons)

        self.progress = W.QProgressBar()
        self.progress.setRange(0, 1000)
        self.cancel_button = W.QPushButton("Cancel")
        row = W.QHBoxLayout()
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.stage = W.QLabel()
        self.stage.setWordWrap(True)
        self.error = W.QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b71c1c")
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note = W.QLabel()
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #8d6e00")
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.stage)
        layout.addWidget(self.error)
        layout.addWidget(self.note)
        layout.addStretch(1)
        self.setWidget(root)

        self.backend_button.toggled.connect(self.backend_box.setVisible)
        self.start_button.clicked.connect(lambda _c=False: self.controller.start_backend())
        self.connect_button.clicked.connect(self._apply_backend)
        self.url.returnPressed.connect(self._apply_backend)
        self.task.currentIndexChanged.connect(self._task_changed)
        self.model.currentIndexChanged.connect(self._save)
        for spin in (self.feather, self.padding):
            spin.valueChanged.connect(self._save)
        for combo in (self.source, self.upscale_into):
            combo.currentIndexChanged.connect(self._save)
        self.upscale_button.clicked.connect(lambda _c=False: self.controller.upscale_image())
        self.restore_button.clicked.connect(lambda _c=False: self.controller.restore_selection())
        self.cancel_button.clicked.connect(lambda _c=False: self.controller.cancel())

    # --- from the controller to the widgets ---

    def refresh(self) -> None:
        self._updating = True
        try:
            self._show_connection()
            self._fill_tasks()
            self._fill_models()
            self._fill_options()
            self._show_settings()
            self._show_notes()
            self._show_progress()
        finally:
            self._updating = False

    def _show_connection(self) -> None:
        conn = self.controller.connection
        launcher = self.controller.launcher
        colour = _STATE_COLOURS.get(conn.state, "")
        text = conn.describe()
        if launcher.busy:
            text, colour = STARTING_TEXT, _STATE_COLOURS[ConnectionState.CONNECTING]
        elif self.controller.can_start_backend:
            text = (launcher.error.text if launcher.error is not None
                    else f"Restora's backend is not running at {conn.client.url}.")
        self.state.setText(text)
        self.state.setStyleSheet(f"color: {colour}" if colour else "")
        self.start_button.setVisible(launcher.busy or self.controller.can_start_backend)
        self.start_button.setEnabled(not launcher.busy)
        if not self.url.hasFocus():
            self.url.setText(self.controller.settings.backend_url)
        if not self.token.hasFocus():
            self.token.setText(self.controller.settings.token)

    def _fill_tasks(self) -> None:
        catalog = self.controller.connection.catalog
        current = self.controller.settings.restore_task()
        tasks = catalog.available_tasks() if catalog is not None else [current]
        if [self.task.itemData(i) for i in range(self.task.count())] != [t.value for t in tasks]:
            self.task.clear()
            for task in tasks:
                self.task.addItem(task_title(task), task.value)
        index = self.task.findData(current.value)
        self.task.setCurrentIndex(max(index, 0))

    def _fill_models(self) -> None:
        catalog = self.controller.connection.catalog
        task = self._current_task()
        wanted = self.controller.settings.model_for(task) or ""
        items: list[tuple[str, str]] = []
        if catalog is not None:
            default = catalog.default_model(task)
            items.append((f"Default ({default})" if default else "Default", ""))
            for m in catalog.models_for(task):
                items.append((f"{m.name} (x{m.scale})" if m.scale else m.name, m.name))
        else:
            items.append(("Default", ""))
            if wanted:
                items.append((wanted, wanted))
        if [(self.model.itemText(i), self.model.itemData(i))
                for i in range(self.model.count())] != items:
            self.model.clear()
            for text, data in items:
                self.model.addItem(text, data)
        self.model.setCurrentIndex(max(self.model.findData(wanted), 0))

    def _fill_options(self) -> None:
        catalog = self.controller.connection.catalog
        task = self._current_task()
        params = catalog.params(task) if catalog is not None else []
        names = [p.name for p in params]
        if self._form_task != task or list(self._param_widgets) != names:
            while self.options.rowCount():
                self.options.removeRow(0)
            self._param_widgets = {p.name: (p, self._param_widget(p)) for p in params}
            for param, widget in self._param_widgets.values():
                self.options.addRow(param_label(param), widget)
            self._form_task = task
        values = self.controller.settings.options.get(task.value, {})
        for name, (param, widget) in self._param_widgets.items():
            _set_value(widget, param, values.get(name, param.default))
        self.options_box.setVisible(bool(params))

    def _param_widget(self, param: ParamInfo) -> QtWidgets.QWidget:
        W = QtWidgets
        widget: QtWidgets.QWidget
        if param.choices:
            combo = W.QComboBox()
            if param.optional:
                combo.addItem(AUTO, None)
            for choice in param.choices:
                combo.addItem(str(choice), choice)
            combo.currentIndexChanged.connect(self._save)
            widget = combo
        elif param.type == "bool":
            box = W.QCheckBox()
            box.toggled.connect(self._save)
            widget = box
        elif param.type == "int":
            spin = W.QSpinBox()
            spin.setRange(-1 if param.optional else 0, 1_000_000)
            if param.optional:
                spin.setSpecialValueText(AUTO)
            spin.valueChanged.connect(self._save)
            widget = spin
        elif param.type == "float":
            dspin = W.QDoubleSpinBox()
            dspin.setRange(-1 if param.optional else 0, 100_000)
            dspin.setDecimals(2)
            if param.optional:
                dspin.setSpecialValueText(AUTO)
            dspin.valueChanged.connect(self._save)
            widget = dspin
        else:
            line = W.QLineEdit()
            line.editingFinished.connect(self._save)
            widget = line
        return widget

    def _show_settings(self) -> None:
        s = self.controller.settings
        self.feather.setValue(-1 if s.feather is None else s.feather)
        self.padding.setValue(-1 if s.padding is None else s.padding)
        self.source.setCurrentIndex(max(self.source.findData(s.source), 0))
        self.upscale_into.setCurrentIndex(max(self.upscale_into.findData(s.upscale_into), 0))

    def _show_notes(self) -> None:
        self.note.setText("\n".join(self.controller.notes))
        self.note.setVisible(bool(self.controller.notes))

    def _show_progress(self) -> None:
        run = self.controller.current
        busy = run is not None
        self.cancel_button.setEnabled(busy and run.stage != "cancelling")
        self.upscale_button.setEnabled(not busy)
        self.restore_button.setEnabled(not busy)
        if run is not None:
            if run.progress < 0:
                self.progress.setRange(0, 0)  # busy indicator: reconnecting
            else:
                self.progress.setRange(0, 1000)
                self.progress.setValue(int(run.progress * 1000))
            self.stage.setText(f"{run.title}: {run.stage}")
            self.error.setText("")
            return
        self.progress.setRange(0, 1000)
        last = self.controller.last
        self.progress.setValue(1000 if last is not None and last.status == "finished" else 0)
        if last is None:
            self.stage.setText("")
            self.error.setText("")
        elif last.status == "failed" and last.error is not None:
            self.stage.setText(f"{last.title} failed.")
            self.error.setText(last.error.text)
        else:
            self.stage.setText(f"{last.title}: {last.stage}")
            self.error.setText("")

    # --- from the widgets to the settings ---

    def _current_task(self) -> Task:
        data = self.task.currentData()
        try:
            return Task(data) if data else self.controller.settings.restore_task()
        except ValueError:
            return Task.UPSCALE

    def _task_changed(self) -> None:
        if self._updating:
            return
        # the model and the form still show the previous task: saved under that one
        self._save(task=self._current_task())
        self.refresh()

    def _apply_backend(self) -> None:
        url = normalise_url(self.url.text())
        if url is None:
            self.error.setText(f"'{self.url.text()}' is not a backend address, such as "
                               "http://127.0.0.1:8765.")
            return
        settings = dataclasses.replace(self.controller.settings, backend_url=url,
                                       token=self.token.text().strip())
        self.controller.update_settings(settings)
        self.controller.connection.refresh()

    def _save(self, *_args: object, task: Task | None = None) -> None:
        """The widgets into the settings: the model and the options into the task the form
        was built for; `task`, the one now chosen, when that changed."""
        if self._updating:
            return
        s = self.controller.settings
        if self._form_task is not None:
            options = {name: _get_value(widget, param)
                       for name, (param, widget) in self._param_widgets.items()}
            s = s.with_task_form(self._form_task, self.model.currentData() or "", options)
        feather = self.feather.value()
        padding = self.padding.value()
        self.controller.update_settings(dataclasses.replace(
            s, task=(task or self._form_task or s.restore_task()).value,
            feather=None if feather < 0 else feather, padding=None if padding < 0 else padding,
            source=self.source.currentData() or "layer",
            upscale_into=self.upscale_into.currentData() or "layer"))


def _set_value(widget: QtWidgets.QWidget, param: ParamInfo, value: Any) -> None:
    W = QtWidgets
    if isinstance(widget, W.QComboBox):
        widget.setCurrentIndex(max(widget.findData(value), 0))
    elif isinstance(widget, W.QCheckBox):
        widget.setChecked(bool(value))
    elif isinstance(widget, W.QSpinBox):
        widget.setValue(widget.minimum() if value is None else int(value))
    elif isinstance(widget, W.QDoubleSpinBox):
        widget.setValue(widget.minimum() if value is None else float(value))
    elif isinstance(widget, W.QLineEdit):
        widget.setText("" if value is None else str(value))


def _get_value(widget: QtWidgets.QWidget, param: ParamInfo) -> Any:
    W = QtWidgets
    if isinstance(widget, W.QComboBox):
        return widget.currentData()
    if isinstance(widget, W.QCheckBox):
        return widget.isChecked()
    if isinstance(widget, (W.QSpinBox, W.QDoubleSpinBox)):
        if param.optional and widget.value() == widget.minimum():
            return None
        return widget.value()
    if isinstance(widget, W.QLineEdit):
        text = widget.text().strip()
        return text or (None if param.optional else "")
    return None
