"""The Restora docker: connection, task, model, options, progress, Cancel and the last error.

Widgets are built from the backend's catalog (tasks, models, each task's parameters as
`ParamInfo` describes them: spin boxes with the real range, step and unit, sliders,
checkboxes, choices, model lists by purpose, help as tooltips, advanced options folded away,
options for other model architectures hidden), so a task or option added to the backend
shows up here without code. Every edit is saved as the plug-in's settings at once; nothing
here talks to the network (the controller does, off the UI thread).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from krita import DockWidget

from ..common.catalog import Catalog, applies, param_label
from ..common.connection import ConnectionState
from ..common.settings import normalise_url
from ..shared.protocol import ParamInfo
from . import actions
from .qt import QObject, Qt, QtWidgets, pyqtSignal

AUTO = "auto"
DEFAULT_TEXT = "default"
#: a spin box's bounds where a parameter gives none
NO_LIMIT = 1_000_000
STARTING_TEXT = "Starting Restora's backend... (the first start can take a minute)"
_STATE_COLOURS = {ConnectionState.CONNECTED: "#2e7d32", ConnectionState.CONNECTING: "#8d6e00",
                  ConnectionState.DISCONNECTED: "#b71c1c", ConnectionState.FAILED: "#b71c1c"}


class _Relay(QObject):
    changed = pyqtSignal()


class ParamSlider(QtWidgets.QWidget):
    """A slider over a parameter's range in its steps, with the value shown beside it."""

    def __init__(self, param: ParamInfo) -> None:
        super().__init__()
        self.param = param
        self.minimum = param.minimum if param.minimum is not None else 0.0
        maximum = param.maximum if param.maximum is not None else 1.0
        self.step = param.step or (1.0 if param.type == "int" else (maximum - self.minimum) / 100)
        self.relay = _Relay()
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.slider = QtWidgets.QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, max(1, round((maximum - self.minimum) / self.step)))
        self.label = QtWidgets.QLabel()
        self.label.setMinimumWidth(48)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.label)
        self.slider.valueChanged.connect(self._moved)

    def value(self) -> float | int:
        raw = self.minimum + self.slider.value() * self.step
        return round(raw) if self.param.type == "int" else round(raw, 6)

    def setValue(self, value: float) -> None:
        self.slider.setValue(round((float(value) - self.minimum) / self.step))
        self._show()

    def minimumValue(self) -> float:
        return self.minimum

    def maximumValue(self) -> float:
        return self.minimum + self.slider.maximum() * self.step

    def _moved(self, _position: int) -> None:
        self._show()
        self.relay.changed.emit()

    def _show(self) -> None:
        unit = f" {self.param.unit}" if self.param.unit else ""
        self.label.setText(f"{self.value():g}{unit}")


class RestoraDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Restora")
        self.controller = actions.controller()
        self._updating = False
        self._form_task: str | None = None
        self._param_widgets: dict[str, tuple[ParamInfo, QtWidgets.QWidget]] = {}
        self._param_labels: dict[str, QtWidgets.QLabel] = {}
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
        self.task_form = form
        form.addRow("Task", self.task)
        form.addRow("Model", self.model)
        layout.addLayout(form)

        self.options_box = W.QGroupBox("Options")
        box = W.QVBoxLayout(self.options_box)
        options_widget = W.QWidget()
        self.options = W.QFormLayout(options_widget)
        self.options.setContentsMargins(0, 0, 0, 0)
        self.advanced_button = W.QToolButton()
        self.advanced_button.setText("Advanced")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_button.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_box = W.QWidget()
        self.advanced = W.QFormLayout(self.advanced_box)
        self.advanced.setContentsMargins(0, 0, 0, 0)
        self.advanced_box.setVisible(False)
        box.addWidget(options_widget)
        box.addWidget(self.advanced_button)
        box.addWidget(self.advanced_box)
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
        self.upscale_button = W.QPushButton("Whole image")
        self.upscale_button.setToolTip("Run the task on the whole layer (or image).")
        self.restore_button = W.QPushButton("Selection")
        self.restore_button.setToolTip("Run the task on the selection, into a new layer "
                                       "over it.")
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
        self.advanced_button.toggled.connect(self._fold)
        self.start_button.clicked.connect(lambda _c=False: self.controller.start_backend())
        self.connect_button.clicked.connect(self._apply_backend)
        self.url.returnPressed.connect(self._apply_backend)
        self.task.currentIndexChanged.connect(self._task_changed)
        self.model.currentIndexChanged.connect(self._save)
        for spin in (self.feather, self.padding):
            spin.valueChanged.connect(self._save)
        for combo in (self.source, self.upscale_into):
            combo.currentIndexChanged.connect(self._save)
        self.upscale_button.clicked.connect(lambda _c=False: self.controller.whole_image())
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

    def _fold(self, shown: bool) -> None:
        self.advanced_box.setVisible(shown)
        self.advanced_button.setArrowType(Qt.ArrowType.DownArrow if shown
                                          else Qt.ArrowType.RightArrow)

    def _fill_tasks(self) -> None:
        tasks = self.controller.known_tasks()
        items = [(t.title or t.task, t.task) for t in tasks]
        current = self.controller.settings.task
        if current and current not in [task for _, task in items]:
            items.append((current, current))  # the saved choice, until the backend answers
        if [(self.task.itemText(i), self.task.itemData(i))
                for i in range(self.task.count())] != items:
            self.task.clear()
            for title, task in items:
                self.task.addItem(title, task)
            for i, info in enumerate(tasks):
                self.task.setItemData(i, info.help, Qt.ItemDataRole.ToolTipRole)
        self.task.setCurrentIndex(max(self.task.findData(current), 0))

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
        takes = catalog is None or catalog.takes_model(task)
        self.model.setVisible(takes)
        label = self.task_form.labelForField(self.model)
        if label is not None:
            label.setVisible(takes)

    def _fill_options(self) -> None:
        catalog = self.controller.connection.catalog
        task = self._current_task()
        params = catalog.params(task) if catalog is not None else []
        names = [p.name for p in params]
        if self._form_task != task or list(self._param_widgets) != names:
            for form in (self.options, self.advanced):
                while form.rowCount():
                    form.removeRow(0)
            self._param_widgets, self._param_labels = {}, {}
            for param in params:
                widget = self._param_widget(param, catalog)
                widget.setToolTip(param.help)
                label = QtWidgets.QLabel(param_label(param))
                label.setToolTip(param.help)
                (self.advanced if param.advanced else self.options).addRow(label, widget)
                self._param_widgets[param.name] = (param, widget)
                self._param_labels[param.name] = label
            self._form_task = task
        values = self.controller.settings.options.get(task, {})
        for name, (param, widget) in self._param_widgets.items():
            _set_value(widget, param, values.get(name, param.default))
        self._show_applicable(catalog, task)
        self.options_box.setVisible(bool(params))
        self.advanced_button.setVisible(any(p.advanced for p in params))

    def _show_applicable(self, catalog: Catalog | None, task: str) -> None:
        """Options for another model architecture than the chosen model's are hidden."""
        chosen = self.model.currentData() or (catalog.default_model(task) if catalog else None)
        model = catalog.model_info(chosen) if catalog is not None else None
        for name, (param, widget) in self._param_widgets.items():
            shown = applies(param, model)
            widget.setVisible(shown)
            self._param_labels[name].setVisible(shown)

    def _param_widget(self, param: ParamInfo, catalog: Catalog | None) -> QtWidgets.QWidget:
        W = QtWidgets
        widget: QtWidgets.QWidget
        if param.widget == "model":
            combo = W.QComboBox()
            if param.optional:
                combo.addItem(param.none_label or DEFAULT_TEXT, None)
            for m in catalog.models_of(param.purposes) if catalog is not None else []:
                combo.addItem(m.name, m.name)
            combo.currentIndexChanged.connect(self._save)
            widget = combo
        elif param.choices:
            combo = W.QComboBox()
            if param.optional:
                combo.addItem(param.none_label or DEFAULT_TEXT, None)
            for i, choice in enumerate(param.choices):
                text = param.choice_labels[i] if i < len(param.choice_labels) else str(choice)
                combo.addItem(text, choice)
            combo.currentIndexChanged.connect(self._save)
            widget = combo
        elif param.type == "bool":
            box = W.QCheckBox()
            box.toggled.connect(self._save)
            widget = box
        elif param.widget == "slider" and param.type in ("int", "float") and not param.optional:
            slider = ParamSlider(param)
            slider.relay.changed.connect(self._save)
            widget = slider
        elif param.type == "int":
            spin = W.QSpinBox()
            low, high, step = _range(param)
            spin.setRange(int(low), int(min(high, 2**31 - 1)))
            spin.setSingleStep(max(1, int(step)))
            _decorate(spin, param)
            spin.valueChanged.connect(self._save)
            widget = spin
        elif param.type == "float":
            dspin = W.QDoubleSpinBox()
            low, high, step = _range(param)
            dspin.setDecimals(_decimals(param))
            dspin.setRange(low, high)
            dspin.setSingleStep(step)
            _decorate(dspin, param)
            dspin.valueChanged.connect(self._save)
            widget = dspin
        else:
            line = W.QLineEdit()
            if param.optional and param.none_label:
                line.setPlaceholderText(param.none_label)
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

    def _current_task(self) -> str:
        data = self.task.currentData()
        if data:
            return str(data)
        tasks = self.controller.known_tasks()
        return self.controller.settings.task or (tasks[0].task if tasks else "")

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

    def _save(self, *_args: object, task: str | None = None) -> None:
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
            s, task=task or self._form_task or s.task,
            feather=None if feather < 0 else feather, padding=None if padding < 0 else padding,
            source=self.source.currentData() or "layer",
            upscale_into=self.upscale_into.currentData() or "layer"))


def _range(param: ParamInfo) -> tuple[float, float, float]:
    """The spin box's range and step; an optional parameter gets one step below its minimum
    for the "not set" value, shown as its none_label."""
    step = param.step or (1.0 if param.type == "int" else 0.1)
    low = param.minimum if param.minimum is not None else (0.0 if param.optional else -NO_LIMIT)
    high = param.maximum if param.maximum is not None else NO_LIMIT
    if param.optional:
        low -= step
    return low, high, step


def _decimals(param: ParamInfo) -> int:
    """Enough decimals for the step and the bounds (0.05 needs two)."""
    places = 2
    for value in (param.step, param.minimum, param.maximum):
        if value:
            text = f"{abs(value):.6f}".rstrip("0")
            places = max(places, len(text.split(".")[1]) if "." in text else 0)
    return min(places, 6)


def _decorate(spin: Any, param: ParamInfo) -> None:
    if param.unit:
        spin.setSuffix(f" {param.unit}")
    if param.optional:
        spin.setSpecialValueText(param.none_label or DEFAULT_TEXT)


def _set_value(widget: QtWidgets.QWidget, param: ParamInfo, value: Any) -> None:
    W = QtWidgets
    if isinstance(widget, W.QComboBox):
        widget.setCurrentIndex(max(widget.findData(value), 0))
    elif isinstance(widget, W.QCheckBox):
        widget.setChecked(bool(value))
    elif isinstance(widget, ParamSlider):
        widget.setValue(widget.minimumValue() if value is None else value)
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
    if isinstance(widget, ParamSlider):
        return widget.value()
    if isinstance(widget, (W.QSpinBox, W.QDoubleSpinBox)):
        if param.optional and widget.value() == widget.minimum():
            return None
        return widget.value()
    if isinstance(widget, W.QLineEdit):
        text = widget.text().strip()
        return text or (None if param.optional else "")
    return None
