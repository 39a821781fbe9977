"""The widgets of a task's form, one per parameter, from the backend's `ParamInfo`.

Spin boxes carry the real range, step and unit; an optional value gets one step below its
minimum, shown as the parameter's none label, so no magic number is ever shown; sliders show
their value and unit beside them; models come from the backend's list by purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..common.catalog import Catalog, model_label
from ..shared.protocol import ParamInfo
from .qt import QObject, Qt, QtWidgets, pyqtSignal

DEFAULT_TEXT = "default"
#: a spin box's bounds where a parameter gives none
NO_LIMIT = 1_000_000


def narrow_combo() -> QtWidgets.QComboBox:
    """A list that shrinks with a narrow docker instead of pushing the form wider than the
    docker (a long model name would otherwise cut every row off at the right)."""
    combo = QtWidgets.QComboBox()
    combo.setSizeAdjustPolicy(
        QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(8)
    return combo


def narrow_form(form: QtWidgets.QFormLayout) -> QtWidgets.QFormLayout:
    """Fields grow with the docker; in a narrow one a label goes above its field."""
    form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    form.setRowWrapPolicy(QtWidgets.QFormLayout.RowWrapPolicy.WrapLongRows)
    return form


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



def make_widget(param: ParamInfo, catalog: Catalog | None,
                on_change: Callable[..., None]) -> QtWidgets.QWidget:
    """The widget for one parameter, as its spec asks; `on_change` runs on every edit."""
    W = QtWidgets
    widget: QtWidgets.QWidget
    if param.widget == "model":
        combo = narrow_combo()
        if param.optional:
            combo.addItem(param.none_label or DEFAULT_TEXT, None)
        for m in catalog.models_of(param.purposes) if catalog is not None else []:
            combo.addItem(model_label(m), m.name)
        combo.currentIndexChanged.connect(on_change)
        widget = combo
    elif param.choices:
        combo = narrow_combo()
        if param.optional:
            combo.addItem(param.none_label or DEFAULT_TEXT, None)
        for i, choice in enumerate(param.choices):
            text = param.choice_labels[i] if i < len(param.choice_labels) else str(choice)
            combo.addItem(text, choice)
        combo.currentIndexChanged.connect(on_change)
        widget = combo
    elif param.widget == "prompt" and param.type == "str":
        text = W.QPlainTextEdit()
        text.setTabChangesFocus(True)
        text.setFixedHeight(text.fontMetrics().lineSpacing() * 3 + 12)  # three lines
        if param.none_label:
            text.setPlaceholderText(param.none_label)
        text.textChanged.connect(on_change)
        widget = text
    elif param.type == "bool":
        box = W.QCheckBox()
        box.toggled.connect(on_change)
        widget = box
    elif param.widget == "slider" and param.type in ("int", "float") and not param.optional:
        slider = ParamSlider(param)
        slider.relay.changed.connect(on_change)
        widget = slider
    elif param.type == "int":
        spin = W.QSpinBox()
        low, high, step = _range(param)
        spin.setRange(int(low), int(min(high, 2**31 - 1)))
        spin.setSingleStep(max(1, int(step)))
        _decorate(spin, param)
        spin.valueChanged.connect(on_change)
        widget = spin
    elif param.type == "float":
        dspin = W.QDoubleSpinBox()
        low, high, step = _range(param)
        dspin.setDecimals(_decimals(param))
        dspin.setRange(low, high)
        dspin.setSingleStep(step)
        _decorate(dspin, param)
        dspin.valueChanged.connect(on_change)
        widget = dspin
    else:
        line = W.QLineEdit()
        if param.optional and param.none_label:
            line.setPlaceholderText(param.none_label)
        line.editingFinished.connect(on_change)
        widget = line
    return widget


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
        # a long none label ("the model's own (Qwen 40, Kontext 28, ...)") would make the
        # box, and with it the whole form, wider than a docker beside Krita's own: it may
        # shrink to what its numbers need, cutting the label instead (its tooltip has help)
        numbers = spin.minimumSizeHint().width()
        spin.setSpecialValueText(param.none_label or DEFAULT_TEXT)
        spin.setMinimumWidth(min(numbers, spin.minimumSizeHint().width()))
        policy = spin.sizePolicy()
        policy.setHorizontalPolicy(QtWidgets.QSizePolicy.Policy.Preferred)
        spin.setSizePolicy(policy)


def set_value(widget: QtWidgets.QWidget, param: ParamInfo, value: Any) -> None:
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
    elif isinstance(widget, W.QPlainTextEdit):
        text = "" if value is None else str(value)
        if widget.toPlainText() != text:  # the same text: the cursor stays where it is
            widget.setPlainText(text)


def get_value(widget: QtWidgets.QWidget, param: ParamInfo) -> Any:
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
    if isinstance(widget, W.QPlainTextEdit):
        text = widget.toPlainText().strip()
        return text or (None if param.optional else "")
    return None
