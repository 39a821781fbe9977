"""The Restora docker: a status line, the task and its form, one Run button, progress.

Laid out for a laptop screen beside Krita's own dockers: the status line stays at the top, Run,
the progress bar, Cancel and the compare controls stay at the bottom, and everything between
(task, preset, model, options, the selection's options) scrolls, so nothing is ever pushed off
screen or squeezed to slivers. Connection settings live in a dialog behind the settings
button; a local user never needs them.

Widgets are built from the backend's catalog (tasks, models, each task's parameters as
`ParamInfo` describes them; see option_widgets.py), so a task or option added to the backend
shows up here without code. Every edit is saved as the plug-in's settings at once; nothing
here talks to the network (the controller does, off the UI thread).

A task that takes further images (the edit's reference images) gets one list per image, right
after the instruction: the words name "Picture 2", so the picture they name is chosen where
they are written, and the edit's main form stays short enough for a 768-pixel-high screen.
Each list holds "(none)" and the active document's other paint layers, refreshed by the tick
when layers come, go or are renamed, or another layer becomes the active one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from krita import DockWidget, Krita

from ..common.catalog import (
    Catalog,
    applies,
    apply_preset,
    consent_question,
    describe_download,
    group_words,
    grouped,
    licence_needs_consent,
    model_label,
    param_label,
    resizes_now,
    size_text,
    task_title,
)
from ..common.progress import progress_line
from ..common.status import StatusKind
from ..shared.protocol import ImageInputInfo, ParamInfo
from . import actions, compare
from .document import KritaEditor
from .option_widgets import get_value, make_widget, narrow_combo, narrow_form, set_value
from .qt import Qt, QTimer, QtWidgets
from .settings_dialog import SettingsDialog

AUTO = "auto"
#: the first entry of a reference image's list: no layer sent for it
NO_REFERENCE = "(none)"
#: what the Run button says it works on
TARGET_TEXT = {"selection": "Run on the selection", "layer": "Run on the layer",
               "image": "Run on the whole image"}
_STATUS_ICONS = {StatusKind.READY: "SP_DialogApplyButton", StatusKind.BUSY: "SP_BrowserReload",
                 StatusKind.OFF: "SP_MediaStop", StatusKind.ERROR: "SP_MessageBoxWarning"}
#: how often the Run label (the selection may change) and the elapsed time are updated
TICK_MS = 500


class RestoraDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Restora")
        self.controller = actions.controller()
        self._updating = False
        self._form_task: str | None = None
        self._param_widgets: dict[str, tuple[ParamInfo, QtWidgets.QWidget]] = {}
        self._param_labels: dict[str, QtWidgets.QLabel] = {}
        #: the reference image lists of the form's task, by input name
        self._reference_combos: dict[str, QtWidgets.QComboBox] = {}
        #: the layers those lists show (None: not filled yet)
        self._layers_shown: list[str] | None = None
        self._history_shown: list[Any] = []
        self._settings_dialog: SettingsDialog | None = None
        self._build()
        self.controller.changed.connect(self.refresh)
        self._tick = QTimer(self)
        self._tick.setInterval(TICK_MS)
        self._tick.timeout.connect(self._on_tick)
        self._tick.start()
        self.refresh()

    def canvasChanged(self, canvas: Any) -> None:
        pass

    # --- layout ---

    def _build(self) -> None:
        W = QtWidgets
        root = W.QWidget(self)
        layout = W.QVBoxLayout(root)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)

        # the status line: an icon in the style's own colours, a few words, two buttons
        top = W.QHBoxLayout()
        self.state_icon = W.QLabel()
        self.state = W.QLabel()
        self.state.setSizePolicy(W.QSizePolicy.Policy.Ignored, W.QSizePolicy.Policy.Preferred)
        self.start_button = W.QToolButton()
        self.start_button.setText("Start backend")
        self.start_button.setToolTip("Start Restora's backend on this computer.")
        self.settings_button = W.QToolButton()
        self.settings_button.setText("Settings...")
        self.settings_button.setToolTip("Restora's settings: the backend's address, its "
                                        "token, starting it.")
        top.addWidget(self.state_icon)
        top.addWidget(self.state, 1)
        top.addWidget(self.start_button)
        top.addWidget(self.settings_button)
        layout.addLayout(top)

        # everything between the status line and Run scrolls
        self.scroll = W.QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(W.QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        content = W.QWidget()
        body = W.QVBoxLayout(content)
        body.setContentsMargins(0, 0, 0, 0)
        self.message_icon = W.QLabel()
        self.message = W.QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        message_row = W.QHBoxLayout()
        message_row.addWidget(self.message_icon, 0, Qt.AlignmentFlag.AlignTop)
        message_row.addWidget(self.message, 1)
        body.addLayout(message_row)

        form = narrow_form(W.QFormLayout())
        self.task_form = form
        self.task = narrow_combo()
        self.task_help = W.QLabel()
        self.task_help.setWordWrap(True)
        self.preset = narrow_combo()
        self.preset.setToolTip("Set several options at once for a kind of picture.")
        self.model = narrow_combo()
        self.missing = W.QLabel()
        self.missing.setWordWrap(True)
        self.download_button = W.QPushButton("Download...")
        self.download_button.setVisible(False)
        self.download_progress = W.QProgressBar()
        self.download_progress.setRange(0, 1000)
        self.download_progress.setVisible(False)
        form.addRow("Task", self.task)
        form.addRow(self.task_help)
        form.addRow("Preset", self.preset)
        form.addRow("Model", self.model)
        form.addRow(self.missing)
        form.addRow(self.download_button)
        form.addRow(self.download_progress)
        body.addLayout(form)

        self.options_box = W.QGroupBox("Options")
        box = W.QVBoxLayout(self.options_box)
        options_widget = W.QWidget()
        self.options = narrow_form(W.QFormLayout(options_widget))
        self.options.setContentsMargins(0, 0, 0, 0)
        self.advanced_button = W.QToolButton()
        self.advanced_button.setText("Advanced")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_button.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_box = W.QWidget()
        self.advanced = narrow_form(W.QFormLayout(self.advanced_box))
        self.advanced.setContentsMargins(0, 0, 0, 0)
        self.advanced_box.setVisible(False)
        box.addWidget(options_widget)
        box.addWidget(self.advanced_button)
        box.addWidget(self.advanced_box)
        body.addWidget(self.options_box)

        self.common_box = W.QGroupBox("Selection and result")
        common = narrow_form(W.QFormLayout(self.common_box))
        self.feather = W.QDoubleSpinBox()
        self.feather.setRange(-1, 1024)
        self.feather.setSpecialValueText(AUTO)
        self.feather.setSuffix(" px")
        self.feather.setToolTip("Width of the soft edge of a result on a selection.")
        self.padding = W.QSpinBox()
        self.padding.setRange(-1, 4096)
        self.padding.setSpecialValueText(AUTO)
        self.padding.setSuffix(" px")
        self.padding.setToolTip("Pixels around the selection the model sees as context.")
        self.source = narrow_combo()
        self.source.addItem("Active layer", "layer")
        self.source.addItem("Sample merged (all visible layers)", "projection")
        self.source.setToolTip("What is sent: the active layer, or the image as shown.")
        self.upscale_into = narrow_combo()
        self.upscale_into.addItem("New layer", "layer")
        self.upscale_into.addItem("New document", "document")
        self.upscale_into.setToolTip("Where an upscaled image goes: a new layer of this "
                                     "image, scaled up, or a new document.")
        common.addRow("Feather", self.feather)
        common.addRow("Context", self.padding)
        common.addRow("Sample", self.source)
        common.addRow("Upscale into", self.upscale_into)
        body.addWidget(self.common_box)
        body.addStretch(1)
        self.scroll.setWidget(content)
        layout.addWidget(self.scroll, 1)

        # always visible: Run, the progress, Cancel, compare and the history
        self.run_button = W.QPushButton(TARGET_TEXT["layer"])
        layout.addWidget(self.run_button)
        self.progress = W.QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.cancel_button = W.QPushButton("Cancel")
        row = W.QHBoxLayout()
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.stage = W.QLabel()
        # wrapped, not cut: a speed note or a result's "Faster: ..." runs to two or three lines
        # at a docked width, and its end (which model, how long) is what the painter needs
        self.stage.setWordWrap(True)
        self.stage.setSizePolicy(W.QSizePolicy.Policy.Ignored, W.QSizePolicy.Policy.Preferred)
        self.queue = W.QLabel()
        self.queue.setSizePolicy(W.QSizePolicy.Policy.Ignored, W.QSizePolicy.Policy.Preferred)
        layout.addWidget(self.stage)
        layout.addWidget(self.queue)
        keep = W.QHBoxLayout()
        self.before_button = W.QToolButton()
        self.before_button.setText("Before")
        self.before_button.setCheckable(True)
        self.before_button.setToolTip("Hide the last result to see the image before it; "
                                      "click again to see the result.")
        self.strength = W.QSlider(Qt.Orientation.Horizontal)
        self.strength.setRange(0, 100)
        self.strength.setValue(100)
        self.strength.setToolTip("How much of the last result shows over the original (its "
                                 "layer's opacity): no need to run it again.")
        self.strength_label = W.QLabel("100%")
        self.strength_label.setMinimumWidth(36)
        self.history_button = W.QToolButton()
        self.history_button.setText("History")
        self.history_button.setPopupMode(W.QToolButton.ToolButtonPopupMode.InstantPopup)
        self.history_menu = W.QMenu(self.history_button)
        self.history_button.setMenu(self.history_menu)
        keep.addWidget(self.before_button)
        keep.addWidget(self.strength, 1)
        keep.addWidget(self.strength_label)
        keep.addWidget(self.history_button)
        layout.addLayout(keep)
        self.setWidget(root)

        self.advanced_button.toggled.connect(self._fold)
        self.start_button.clicked.connect(lambda _c=False: self.controller.start_backend())
        self.settings_button.clicked.connect(lambda _c=False: self.open_settings())
        self.task.currentIndexChanged.connect(self._task_changed)
        self.model.currentIndexChanged.connect(self._model_changed)
        self.preset.activated.connect(self._preset_chosen)
        self.download_button.clicked.connect(lambda _c=False: self._download_clicked())
        for spin in (self.feather, self.padding):
            spin.valueChanged.connect(self._save)
        for combo in (self.source, self.upscale_into):
            combo.currentIndexChanged.connect(self._save)
        self.run_button.clicked.connect(lambda _c=False: self.controller.run())
        self.cancel_button.clicked.connect(lambda _c=False: self.controller.cancel())
        self.before_button.toggled.connect(self._before_toggled)
        self.strength.valueChanged.connect(self._strength_moved)

    def open_settings(self) -> SettingsDialog:
        if self._settings_dialog is None:
            self._settings_dialog = SettingsDialog(self.controller, self)
        self._settings_dialog.refresh()
        self._settings_dialog.show()
        self._settings_dialog.raise_()
        return self._settings_dialog

    # --- from the controller to the widgets ---

    def refresh(self) -> None:
        self._updating = True
        try:
            self._show_connection()
            self._fill_tasks()
            self._fill_presets()
            self._fill_models()
            self._fill_options()
            self._show_settings()
            self._show_message()
            self._show_progress()
            self._show_compare()
            self._fill_history()
            self._show_run_target()
        finally:
            self._updating = False

    def _show_connection(self) -> None:
        status = self.controller.status()
        self.state.setText(status.text)
        self.state.setToolTip(status.detail)
        self.state_icon.setToolTip(status.detail)
        icon = self.style().standardIcon(getattr(QtWidgets.QStyle.StandardPixmap,
                                                 _STATUS_ICONS[status.kind]))
        self.state_icon.setPixmap(icon.pixmap(16, 16))
        self.start_button.setVisible(status.can_start)

    def _fold(self, shown: bool) -> None:
        self.advanced_box.setVisible(shown)
        self.advanced_button.setArrowType(Qt.ArrowType.DownArrow if shown
                                          else Qt.ArrowType.RightArrow)

    def _fill_tasks(self) -> None:
        """The tasks by group (make bigger, restore, enhance...), a separator between
        groups; each task's help, and what its group means, as its tooltip."""
        tasks = self.controller.known_tasks()
        items: list[tuple[str, str | None]] = []
        tips: list[str] = []
        for group, members in grouped(tasks):
            if items:
                items.append(("", None))  # a separator
                tips.append("")
            name, meaning = group_words(group)
            for info in members:
                items.append((info.title or info.task, info.task))
                tips.append(f"{name}: {meaning} {info.help}".strip())
        current = self.controller.settings.task
        if current and current not in [task for _, task in items]:
            items.append((current, current))  # the saved choice, until the backend answers
            tips.append("")
        shown = [(self.task.itemText(i), self.task.itemData(i)) for i in range(self.task.count())]
        if shown != items:
            self.task.clear()
            for i, (title, task) in enumerate(items):
                if task is None:
                    self.task.insertSeparator(self.task.count())
                    continue
                self.task.addItem(title, task)
                self.task.setItemData(self.task.count() - 1, tips[i],
                                      Qt.ItemDataRole.ToolTipRole)
        self.task.setCurrentIndex(max(self.task.findData(current), 0))
        info = self.controller.task_info(self._current_task())
        if info is not None:
            # whether it keeps the original or redraws is what artists ask first
            _name, meaning = group_words(info.group)
            extra = f" <i>{meaning}</i>" if info.group in ("restore", "enhance") else ""
            self.task_help.setText(f"{info.help}{extra}")
        else:
            self.task_help.setText("")
        self.task_help.setVisible(bool(self.task_help.text()))

    def _fill_presets(self) -> None:
        catalog = self.controller.connection.catalog
        task = self._current_task()
        presets = catalog.presets(task) if catalog is not None else []
        items = [("Choose a preset...", "")] + [(p.label or p.name, p.name) for p in presets]
        if [(self.preset.itemText(i), self.preset.itemData(i))
                for i in range(self.preset.count())] != items:
            self.preset.clear()
            for text, name in items:
                self.preset.addItem(text, name)
            for i, p in enumerate(presets, start=1):
                self.preset.setItemData(i, p.help, Qt.ItemDataRole.ToolTipRole)
        self.preset.setCurrentIndex(0)
        self._row_visible(self.preset, bool(presets))

    def _fill_models(self) -> None:
        catalog = self.controller.connection.catalog
        task = self._current_task()
        wanted = self.controller.settings.model_for(task) or ""
        items: list[tuple[str, str]] = []
        if catalog is not None:
            default = catalog.model_info(catalog.default_model(task))
            if default is not None:
                items.append((f"Recommended: {model_label(default)}", ""))
            for m in catalog.models_for(task):
                items.append((model_label(m), m.name))
        else:
            items.append(("Recommended", ""))
            if wanted:
                items.append((wanted, wanted))
        if [(self.model.itemText(i), self.model.itemData(i))
                for i in range(self.model.count())] != items:
            self.model.clear()
            for text, data in items:
                self.model.addItem(text, data)
        self.model.setCurrentIndex(max(self.model.findData(wanted), 0))
        info = catalog.task_info(task) if catalog is not None else None
        lacks = info is not None and info.needs_model and not catalog.models_for(task)
        takes = (catalog is None or catalog.takes_model(task)) and not lacks
        self._row_visible(self.model, takes)
        self._show_download(catalog, task, lacks)

    def _show_download(self, catalog: Catalog | None, task: str, lacks: bool) -> None:
        """A task without a model says so, and offers the catalog's recommended model with
        its size and licence; a download under way shows its progress and can be stopped."""
        entry = catalog.recommended_download(task) if catalog is not None else None
        download = self.controller.download
        running = download is not None and not download.done
        info = catalog.task_info(task) if catalog is not None else None
        lines = []
        if lacks:
            lines.append(f"No model for {task_title(info, task)} is installed yet.")
        if running:
            total = size_text(download.total_bytes) if download.total_bytes else "?"
            lines.append(f"Downloading {download.label}: {size_text(download.done_bytes)} of "
                         f"{total}...")
        elif download is not None and download.status == "failed" and download.error:
            lines.append(download.error.text)
        elif lacks and entry is not None:
            lines.append(f"Restora can download {describe_download(entry)}.")
        elif lacks:
            lines.append("Put a model file for it in Restora's models folder.")
        self.missing.setText("\n".join(lines))
        self.missing.setVisible(bool(lines))
        self.download_button.setVisible(running or (lacks and entry is not None))
        self.download_button.setText("Stop download" if running else "Download...")
        self.download_button.setToolTip("" if entry is None else describe_download(entry))
        self.download_progress.setVisible(running)
        if running:
            if download.total_bytes:
                self.download_progress.setRange(0, 1000)
                self.download_progress.setValue(
                    int(1000 * download.done_bytes / download.total_bytes))
            else:
                self.download_progress.setRange(0, 0)

    def _download_clicked(self) -> bool:
        """Start (or stop) the download the form offers; a licence that limits use is shown
        and must be accepted first. True when a download started."""
        download = self.controller.download
        if download is not None and not download.done:
            self.controller.cancel_download()
            return False
        catalog = self.controller.connection.catalog
        entry = catalog.recommended_download(self._current_task()) if catalog else None
        if entry is None:
            return False
        accept = False
        if licence_needs_consent(entry):
            Box = QtWidgets.QMessageBox
            answer = Box.question(self, "Restora", consent_question(entry),
                                  Box.StandardButton.Yes | Box.StandardButton.No,
                                  Box.StandardButton.No)
            if answer != Box.StandardButton.Yes:
                return False
            accept = True
        return self.controller.download_model(entry.name, entry.label, accept) is not None

    def _row_visible(self, field: QtWidgets.QWidget, shown: bool) -> None:
        field.setVisible(shown)
        label = self.task_form.labelForField(field)
        if label is not None:
            label.setVisible(shown)

    def _fill_options(self) -> None:
        catalog = self.controller.connection.catalog
        task = self._current_task()
        params = catalog.params(task) if catalog is not None else []
        info = catalog.task_info(task) if catalog is not None else None
        images = list(info.images) if info is not None else []
        names = [p.name for p in params]
        if self._form_task != task or list(self._param_widgets) != names \
                or list(self._reference_combos) != [i.name for i in images]:
            for form in (self.options, self.advanced):
                while form.rowCount():
                    form.removeRow(0)
            self._param_widgets, self._param_labels = {}, {}
            for param in params:
                widget = make_widget(param, catalog, self._save)
                widget.setToolTip(param.help)
                label = QtWidgets.QLabel(param_label(param))
                label.setToolTip(param.help)
                (self.advanced if param.advanced else self.options).addRow(label, widget)
                self._param_widgets[param.name] = (param, widget)
                self._param_labels[param.name] = label
            self._add_reference_rows(images)
            self._form_task = task
        values = self.controller.settings.options.get(task, {})
        for name, (param, widget) in self._param_widgets.items():
            set_value(widget, param, values.get(name, param.default))
        self._fill_references()
        self._show_applicable(catalog, task)
        self.options_box.setVisible(bool(params) or bool(images))
        self.advanced_button.setVisible(any(p.advanced for p in params))

    def _add_reference_rows(self, images: list[ImageInputInfo]) -> None:
        """One list per further image, right after the instruction (see the module's
        docstring), or after the options for a task without one."""
        self._reference_combos, self._layers_shown = {}, None
        row = self._row_after_prompt()
        for wanted in images:
            combo = narrow_combo()
            combo.setToolTip(wanted.help)
            label = QtWidgets.QLabel(wanted.label or wanted.name)
            label.setToolTip(wanted.help)
            self.options.insertRow(row, label, combo)
            row += 1
            combo.currentIndexChanged.connect(
                lambda _index, name=wanted.name: self._reference_chosen(name))
            self._reference_combos[wanted.name] = combo

    def _row_after_prompt(self) -> int:
        for param, widget in self._param_widgets.values():
            if param.widget == "prompt" and not param.advanced:
                row, _role = self.options.getWidgetPosition(widget)
                return row + 1
        return self.options.rowCount()

    def _fill_references(self, layers: list[str] | None = None) -> None:
        """Each reference list: "(none)", then the active document's other paint layers; a
        saved choice this document lacks stays listed, marked, so that looking at another
        image does not lose it (the job leaves it out, with a note)."""
        if not self._reference_combos:
            return
        layers = self._reference_layers() if layers is None else layers
        picked = self.controller.settings.references_for(self._form_task or "")
        updating, self._updating = self._updating, True  # filling the lists saves nothing
        try:
            for name, combo in self._reference_combos.items():
                chosen = picked.get(name, "")
                items = [(NO_REFERENCE, "")] + [(layer, layer) for layer in layers]
                if chosen and chosen not in layers:
                    items.append((f"{chosen} (not in this image)", chosen))
                if [(combo.itemText(i), combo.itemData(i) or "")
                        for i in range(combo.count())] != items:
                    combo.clear()
                    for text, data in items:
                        combo.addItem(text, data)
                combo.setCurrentIndex(max(combo.findData(chosen), 0) if chosen else 0)
        finally:
            self._updating = updating
        self._layers_shown = layers

    def _reference_layers(self) -> list[str]:
        """The layers a reference can come from: the active document's paint layers but
        the active one (which is what the task works on)."""
        document = self._active_document()
        if document is None:
            return []
        try:
            return KritaEditor(document).list_layers()
        except Exception:  # a document closing under us, or one without a paint layer
            return []

    def _active_document(self) -> Any:
        return Krita.instance().activeDocument()

    def _show_applicable(self, catalog: Catalog | None, task: str) -> None:
        """Options for another model architecture than the chosen model's are hidden."""
        chosen = self.model.currentData() or (catalog.default_model(task) if catalog else None)
        model = catalog.model_info(chosen) if catalog is not None else None
        for name, (param, widget) in self._param_widgets.items():
            shown = applies(param, model)
            widget.setVisible(shown)
            self._param_labels[name].setVisible(shown)

    def _show_settings(self) -> None:
        s = self.controller.settings
        self.feather.setValue(-1 if s.feather is None else s.feather)
        self.padding.setValue(-1 if s.padding is None else s.padding)
        self.source.setCurrentIndex(max(self.source.findData(s.source), 0))
        self.upscale_into.setCurrentIndex(max(self.upscale_into.findData(s.upscale_into), 0))
        task = self._current_task()
        info = self.controller.task_info(task)
        uses_selection = info is None or (
            info.mask != "ignored" and not resizes_now(info, s.options_for(task)))
        for field in (self.feather, self.padding):
            field.setVisible(uses_selection)
            self.common_box.layout().labelForField(field).setVisible(uses_selection)
        resizes = info is None or info.resizes
        self.upscale_into.setVisible(resizes)
        self.common_box.layout().labelForField(self.upscale_into).setVisible(resizes)

    def _show_message(self) -> None:
        """The last action's error, or notes about the settings, in full."""
        last = self.controller.last
        icon = ""
        if self.controller.current is None and last is not None and last.status == "failed" \
                and last.error is not None:
            text, icon = last.error.text, "SP_MessageBoxWarning"
        elif self.controller.notes:
            text, icon = "\n".join(self.controller.notes), "SP_MessageBoxInformation"
        else:
            text = ""
        self.message.setText(text)
        self.message.setVisible(bool(text))
        self.message_icon.setVisible(bool(text))
        if icon:
            pixmap = getattr(QtWidgets.QStyle.StandardPixmap, icon)
            self.message_icon.setPixmap(self.style().standardIcon(pixmap).pixmap(16, 16))

    def _show_progress(self) -> None:
        controller = self.controller
        run = controller.current
        catalog = controller.connection.catalog
        info = catalog.task_info(self._current_task()) if catalog is not None else None
        lacks = info is not None and info.needs_model and not catalog.models_for(info.task)
        self.run_button.setEnabled(not lacks)
        self.cancel_button.setEnabled(run is not None and run.stage != "cancelling")
        queued = controller.queued
        self.queue.setText(
            f"Then: {', '.join(r.title for r in queued)}" if queued else "")
        self.queue.setVisible(bool(queued))
        if run is not None:
            if run.progress <= 0:
                # busy indicator: connecting, sending, loading the model, waiting in the
                # queue or reconnecting, when a bar at 0% would look stuck
                self.progress.setRange(0, 0)
            else:
                self.progress.setRange(0, 1000)
                self.progress.setValue(int(run.progress * 1000))
            self.stage.setText(f"{run.title}: {progress_line(run.stage, run.clock)}")
            self.stage.setToolTip(self.stage.text())
            return
        self.progress.setRange(0, 1000)
        last = controller.last
        self.progress.setValue(1000 if last is not None and last.status == "finished" else 0)
        if last is None:
            self.stage.setText("")
        elif last.status == "failed":
            self.stage.setText(f"{last.title} failed.")
        else:
            self.stage.setText(last.stage)
        self.stage.setToolTip(self.stage.text())

    def _last_result(self) -> Any:
        return next((r for r in self.controller.history if r.status == "finished"), None)

    def _show_compare(self) -> None:
        run = self._last_result()
        usable = run is not None and bool(compare.live_layers(run))
        self.before_button.setEnabled(usable)
        self.strength.setEnabled(usable)
        self.before_button.setChecked(usable and not compare.shown(run))
        value = round(compare.strength(run) * 100) if usable else 100
        self.strength.setValue(value)
        self.strength_label.setText(f"{value}%")

    def _fill_history(self) -> None:
        history = list(self.controller.history)
        if history == self._history_shown:
            return
        self._history_shown = history
        self.history_menu.clear()
        self.history_button.setEnabled(bool(history))
        for run in history:
            name = run.layer_name or run.title
            status = "" if run.status == "finished" else f" ({run.status})"
            sub = self.history_menu.addMenu(f"{name}{status}")
            sub.setToolTipsVisible(True)
            about = sub.addAction(run.describe())
            about.setEnabled(False)
            again = sub.addAction("Run again on the active layer")
            again.triggered.connect(lambda _c=False, r=run: self.controller.run_again(r))
            use = sub.addAction("Use these settings")
            use.triggered.connect(lambda _c=False, r=run: self.controller.use_settings_of(r))

    def _on_tick(self) -> None:
        """The parts that change without news from the controller: what Run would work on
        (the selection), the layers a reference image can come from, and the time a running
        job has taken."""
        if self._updating:
            return
        self._show_run_target()
        if self._reference_combos:
            layers = self._reference_layers()
            if layers != self._layers_shown:
                self._fill_references(layers)
        run = self.controller.current
        if run is not None and run.progress >= 0:
            self.stage.setText(f"{run.title}: {progress_line(run.stage, run.clock)}")

    def _show_run_target(self) -> None:
        task = self._current_task()
        try:
            target = self.controller.run_target(self._active_document(), task)
        except Exception:  # a document closing under us: the next tick sees it gone
            target = "layer"
        text = TARGET_TEXT[target]
        if self.run_button.text() != text:
            self.run_button.setText(text)
        info = self.controller.task_info(task)
        self.run_button.setToolTip(f"{task_title(info, task)}: {text[0].lower()}{text[1:]}.")

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

    def _model_changed(self) -> None:
        if self._updating:
            return
        self._save()
        self._show_applicable(self.controller.connection.catalog, self._current_task())

    def _reference_chosen(self, name: str) -> None:
        """A layer picked for one reference image: saved for the form's task at once."""
        combo = self._reference_combos.get(name)
        if self._updating or self._form_task is None or combo is None:
            return
        self.controller.update_settings(self.controller.settings.with_reference(
            self._form_task, name, combo.currentData() or ""))

    def _preset_chosen(self, index: int) -> None:
        """A preset sets several options (and maybe the model) at once, then the list goes
        back to "Choose a preset...": the options show what it set."""
        name = self.preset.itemData(index)
        catalog = self.controller.connection.catalog
        if not name or catalog is None:
            return
        task = self._current_task()
        model, options = apply_preset(catalog, task, name,
                               dict(self.controller.settings.options.get(task, {})))
        s = self.controller.settings
        models = {**s.models, task: model} if model is not None else dict(s.models)
        self.controller.update_settings(dataclasses.replace(
            s, models=models, options={**s.options, task: options}))

    def _before_toggled(self, before: bool) -> None:
        if self._updating:
            return
        run = self._last_result()
        if run is not None:
            compare.set_shown(run, not before)

    def _strength_moved(self, value: int) -> None:
        self.strength_label.setText(f"{value}%")
        if self._updating:
            return
        run = self._last_result()
        if run is not None:
            compare.set_strength(run, value / 100)

    def _save(self, *_args: object, task: str | None = None) -> None:
        """The widgets into the settings: the model and the options into the task the form
        was built for; `task`, the one now chosen, when that changed."""
        if self._updating:
            return
        s = self.controller.settings
        if self._form_task is not None:
            options = {name: get_value(widget, param)
                       for name, (param, widget) in self._param_widgets.items()}
            s = s.with_task_form(self._form_task, self.model.currentData() or "", options)
        feather = self.feather.value()
        padding = self.padding.value()
        self.controller.update_settings(dataclasses.replace(
            s, task=task or self._form_task or s.task,
            feather=None if feather < 0 else feather, padding=None if padding < 0 else padding,
            source=self.source.currentData() or "layer",
            upscale_into=self.upscale_into.currentData() or "layer"))
