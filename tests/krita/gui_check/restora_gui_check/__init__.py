"""A test-only Krita plug-in: drives Restora through Krita's own menus, docker and undo.

Installed next to Restora by test_krita_gui.py into a throw-away Krita home; when Krita's
window appears it checks the Tools > Restora menu and the docker, paints a document, triggers
the menu actions as a click would, undoes, writes what it saw to the JSON file named by
RESTORA_GUI_CHECK (its "out" key) and quits Krita.
"""

import dataclasses
import gc
import json
import os
import time
import traceback

from krita import Extension, Krita, Selection
from restora.krita.qt import QEventLoop, QtCore, QTimer, QtWidgets

QCoreApplication = QtCore.QCoreApplication
QDockWidget, QLabel, QProgressBar = QtWidgets.QDockWidget, QtWidgets.QLabel, QtWidgets.QProgressBar

W, H = 128, 96
SEL = (40, 30, 36, 24)


def pump(condition, timeout):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)
    return condition()


def settle(doc, seconds=0.5):
    doc.waitForDone()
    pump(lambda: False, seconds)
    doc.waitForDone()


class GuiCheck(Extension):
    def setup(self):
        Krita.instance().notifier().windowCreated.connect(self._later)

    def createActions(self, window):
        pass

    def _later(self):
        QTimer.singleShot(1500, self.run)

    def run(self):
        with open(os.environ["RESTORA_GUI_CHECK"]) as f:
            config = json.load(f)
        out = {}
        try:
            self.check(config, out)
        except Exception:
            out["exception"] = traceback.format_exc()
        with open(config["out"], "w") as f:
            json.dump(out, f, indent=1, sort_keys=True)
        app = Krita.instance()
        for doc in app.documents():
            doc.setModified(False)
        app.action("file_quit").trigger()

    def check(self, config, out):
        from restora.common.settings import Settings
        from restora.krita import actions

        app = Krita.instance()
        window = app.activeWindow()
        qwin = window.qwindow()
        controller = actions.controller()

        # 1. settings from the docker's point of view, the connection
        settings = Settings(backend_url=config["url"], models={"upscale": "tiny-x2"},
                            options={"upscale": {"tile": 0}}, padding=8, feather=4.0)
        controller.update_settings(settings)
        out["connected"] = pump(lambda: controller.connection.connected, 30)
        out["stored_url"] = app.readSetting("Restora", "backend_url", "")

        # 2. the menu from the backend's task list, and the registered (shortcut-able) actions
        out["menu"] = restora_menu(qwin)
        ids = ["restora_upscale_image", "restora_restore_selection", "restora_cancel",
               "restora_task_upscale", "restora_task_test_split"]
        out["actions"] = {i: app.action(i) is not None for i in ids}
        docker = find_docker(qwin)
        out["docker"] = docker is not None
        # a laptop's window fills the screen (no window manager here to maximise it)
        qwin.setGeometry(QtWidgets.QApplication.instance().primaryScreen().availableGeometry())
        docker.show()
        docker.raise_()  # docked with Krita's own dockers: its tab in front
        pump(lambda: False, 1.0)
        out["docker_labels_connected"] = labels(docker)
        out["layout_connected"] = layout_report(docker, qwin)

        # 3. Restore selection from the menu, then undo
        doc = app.createDocument(W, H, "gui-check", "RGBA", "U8", "", 72.0)
        window.addView(doc)
        base = doc.rootNode().childNodes()[0]
        base.setPixelData(pattern(), 0, 0, W, H)
        sel = Selection()
        sel.select(*SEL, 255)
        doc.setSelection(sel)
        doc.setActiveNode(base)
        settle(doc)
        before = bytes(base.pixelData(0, 0, W, H))
        out["restore"] = trigger(app, controller, "restora_restore_selection", doc)
        out["restore"]["docker_progress"] = progress(docker)
        out["restore"]["docker_labels"] = labels(docker)
        pump(lambda: False, 0.5)
        out["layout_result"] = layout_report(docker, qwin)
        shots = config.get("shots")
        if shots:
            qwin.grab().save(os.path.join(shots, "krita-docker.png"))
            dialog = docker.open_settings()
            pump(lambda: False, 0.5)
            out["settings_dialog"] = layout_report(dialog, dialog, [
                "url", "token", "start_button", "connect_button", "close_button", "status"])
            dialog.grab().save(os.path.join(shots, "krita-settings.png"))
            dialog.accept()
        # a result with a speed note (the words both editors add under the new layer's line)
        # wraps at the docked width: every line shows, and the fixed controls still fit
        from restora.common.result_words import result_notes

        last = controller.last
        kept_stage = last.stage
        last.stage = " ".join(["Added 'Upscale x4 - realesrgan-x4plus'.",
                               *result_notes({"speed_note": SPEED_NOTE})])
        docker.refresh()
        pump(lambda: False, 0.5)
        stage = docker.stage
        out["long_note"] = {"text": stage.text(), "width": stage.width(),
                            "height": stage.height(), "needed": stage.heightForWidth(stage.width()),
                            "line": stage.fontMetrics().lineSpacing(),
                            "layout": layout_report(docker, qwin)}
        if shots:
            qwin.grab().save(os.path.join(shots, "krita-docker-note.png"))
        last.stage = kept_stage
        docker.refresh()
        # compare and keep: Before hides the result, the strength is its layer's opacity
        result = next(n for n in doc.rootNode().childNodes()
                      if n.name().startswith("Upscale selection"))
        docker.before_button.click()
        pump(lambda: False, 0.3)
        before_hidden = not result.visible()
        docker.before_button.click()
        pump(lambda: False, 0.3)
        docker.strength.setValue(40)
        pump(lambda: False, 0.3)
        out["compare"] = {"before_hides": before_hidden, "after_shows": result.visible(),
                          "opacity": result.opacity(), "label": docker.strength_label.text()}
        docker.strength.setValue(100)
        out["history"] = [a.text() for a in docker.history_menu.actions()]
        app.action("edit_undo").trigger()
        settle(doc)
        out["restore_undo"] = {"layers": names(doc),
                               "source_unchanged": bytes(base.pixelData(0, 0, W, H)) == before}

        # 4. Upscale image from the menu, then undo twice; the view zooms out with it
        doc.setSelection(Selection())  # deselect: upscale uses the whole layer anyway
        canvas = window.activeView().canvas()
        canvas.setZoomLevel(2.0)
        settle(doc)
        zoom_before = canvas.zoomLevel()
        out["upscale"] = trigger(app, controller, "restora_upscale_image", doc)
        out["upscale"]["zoom"] = [zoom_before, window.activeView().canvas().zoomLevel()]
        for step in (1, 2):
            app.action("edit_undo").trigger()
            settle(doc)
            out[f"upscale_undo{step}"] = {"layers": names(doc), "size": [doc.width(),
                                                                         doc.height()]}

        # 5. Upscale into a new document: it must stay open once the plug-in lets go of it
        controller.update_settings(dataclasses.replace(controller.settings,
                                                       upscale_into="document"))
        count = len(app.documents())
        out["new_document"] = trigger(app, controller, "restora_upscale_image", doc)
        gc.collect()
        settle(doc)
        out["new_document"]["documents_added"] = len(app.documents()) - count
        out["new_document"]["views"] = len(window.views())

        # 6. The edit's reference lists on the active document, following its layers
        out["references"] = reference_lists(app, window, qwin, docker)

        # 7. The backend gone: the docker shows the painter what to do
        controller.update_settings(dataclasses.replace(controller.settings,
                                                       backend_url=config["dead_url"],
                                                       upscale_into="layer"))
        doc2 = next(d for d in app.documents() if d.name() == "gui-check")
        window.showView(next(v for v in window.views() if v.document() == doc2))
        out["down"] = trigger(app, controller, "restora_upscale_image", doc2)
        out["down"]["docker_labels"] = labels(docker)


def trigger(app, controller, action_id, doc):
    previous = controller.last
    t0 = time.monotonic()
    app.action(action_id).trigger()
    ended = pump(lambda: controller.last is not previous and controller.current is None, 90)
    settle(doc)
    run = controller.last
    return {"ended": ended, "seconds": round(time.monotonic() - t0, 2),
            "status": run.status if run else None, "layer": run.layer_name if run else None,
            "error": run.error.text if run and run.error else None, "layers": names(doc),
            "size": [doc.width(), doc.height()]}


def reference_lists(app, window, qwin, docker):
    """The docker on Edit by instruction with a new active document: its first reference
    list offers the other paint layers and lists a new one at the docker's tick, and the
    docker still fits the screen with the edit's form. (A new active layer is followed too,
    docker_check.py shows; Document.setActiveNode does not move Krita's own choice here.)"""
    doc = app.createDocument(64, 48, "gui-refs", "RGBA", "U8", "", 72.0)
    window.showView(window.addView(doc))
    base = doc.rootNode().childNodes()[0]
    hat = doc.createNode("Hat", "paintlayer")
    doc.rootNode().addChildNode(hat, None)
    doc.setActiveNode(base)
    settle(doc)
    docker.task.setCurrentIndex(docker.task.findData("edit"))
    pump(lambda: False, 1.0)
    form, role = docker.options, QtWidgets.QFormLayout.ItemRole
    fields = {}
    for row in range(form.rowCount()):
        label, field = form.itemAt(row, role.LabelRole), form.itemAt(row, role.FieldRole)
        if label is not None and field is not None:
            fields[label.widget().text()] = field.widget()
    first = fields["Reference image 1 (Picture 2)"]

    def items():
        return [first.itemText(i) for i in range(first.count())]

    out = {"active_document": app.activeDocument() == doc, "listed": items()}
    scarf = doc.createNode("Scarf", "paintlayer")
    doc.rootNode().addChildNode(scarf, None)
    settle(doc)
    out["new_layer"] = pump(lambda: "Scarf" in items(), 3)
    out["after"] = items()
    out["layout"] = layout_report(docker, qwin)
    docker.task.setCurrentIndex(docker.task.findData("upscale"))
    pump(lambda: False, 0.3)
    doc.setModified(False)
    doc.close()
    return out


def names(doc):
    return [n.name() for n in doc.rootNode().childNodes() if n.type() == "paintlayer"]


def pattern():
    out = bytearray()
    for y in range(H):
        for x in range(W):
            out += bytes((230 if (x // 8 + y // 8) % 2 else 30, (y * 2) % 256, (x * 2) % 256,
                          255))
    return bytes(out)


def restora_menu(qwin):
    for action in qwin.menuBar().actions():
        menu = action.menu()
        if menu is None or action.text().replace("&", "") != "Tools":
            continue
        for item in menu.actions():
            if item.text().replace("&", "") == "Restora" and item.menu() is not None:
                return [[a.text(), a.isVisible()] for a in item.menu().actions()
                        if not a.isSeparator()]
    return None


def find_docker(qwin):
    for dock in qwin.findChildren(QDockWidget):
        if dock.windowTitle() == "Restora":
            return dock
    return None


#: what the backend sends after a long automatic upscale on a CPU (speed_advice.SpeedNote)
SPEED_NOTE = {"model": "realesrgan-x4plus", "seconds": 312.0,
              "faster_model": "realesr-general-x4v3", "faster_seconds": 8.0}

FIXED = ["state", "settings_button", "run_button", "progress", "cancel_button",
         "before_button", "strength", "history_button"]


def layout_report(widget, window, names=None):
    """Which named controls are hidden, off the screen, or cut by their window; the window's
    and the screen's sizes; whether the scrolling part fits its width."""
    app = QtWidgets.QApplication.instance()
    screen = app.primaryScreen().availableGeometry()
    frame = window.frameGeometry()
    report = {"screen": [screen.width(), screen.height()],
              "window": [frame.x(), frame.y(), frame.width(), frame.height()],
              "hidden": [], "off_screen": [], "clipped": []}
    for name in names or FIXED:
        w = getattr(widget, name)
        if not w.isVisible():
            report["hidden"].append(name)
            continue
        top_left = w.mapToGlobal(QtCore.QPoint(0, 0))
        rect = QtCore.QRect(top_left, w.size())
        if not screen.contains(rect):
            report["off_screen"].append(name)
        inside = QtCore.QRect(w.mapTo(widget, QtCore.QPoint(0, 0)), w.size())
        if not widget.rect().contains(inside) or w.height() < w.minimumSizeHint().height():
            report["clipped"].append(name)
    scroll = getattr(widget, "scroll", None)
    if isinstance(scroll, QtWidgets.QScrollArea):
        report["scroll_fits_width"] = (scroll.widget().minimumSizeHint().width()
                                       <= scroll.viewport().width())
        report["docker_size"] = [widget.width(), widget.height()]
    return report


def labels(docker):
    if docker is None:
        return []
    return [label.text() for label in docker.findChildren(QLabel) if label.text()]


def progress(docker):
    bar = getattr(docker, "progress", None)  # the job's bar (a download has its own)
    return [bar.value(), bar.maximum()] if isinstance(bar, QProgressBar) else None


Krita.instance().addExtension(GuiCheck(Krita.instance()))
