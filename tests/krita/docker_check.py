"""The Restora docker built outside Krita, under whichever Qt binding this Python has
(PyQt5 as in Krita 5, or PyQt6 as in Krita 6), against a real backend.

    python docker_check.py PLUGIN_TREE BACKEND_URL   ->  prints one JSON line

PLUGIN_TREE is a built plug-in (installer/krita_plugin.py tree); fake_krita/ stands in for
Krita. Checks that the docker connects, builds its option form from the backend's
parameters (ranges, steps, units, none labels, choices, help, the advanced fold), builds the
menu from the backend's task list, caches that list, saves an edited option as the plug-in's
settings, and, after Upscale -> Split -> Upscale, keeps each task's options under its own
task; then that the edit task's reference image lists sit after its instruction and follow
the active document's layers.
"""

import json
import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> None:
    tree, url = sys.argv[1], sys.argv[2]
    sys.path[:0] = [tree, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_krita")]
    from restora.common.settings import Settings
    from restora.krita import actions
    from restora.krita.qt import QT6, QtCore, QtWidgets

    app = QtWidgets.QApplication([])
    import krita

    krita.Krita.instance().writeSetting("Restora", "backend_url", json.dumps(url))
    from restora.krita.docker import RestoraDocker

    host = krita.Krita.instance()  # importing restora registered the extension and docker
    (extension,) = host.extensions
    (factory,) = host.dock_factories
    window = krita.Window()
    extension.createActions(window)
    extension.setup()
    controller = actions.controller()
    docker = RestoraDocker()
    controller.start()
    deadline = time.monotonic() + 30
    while not controller.connection.connected and time.monotonic() < deadline:
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)
    app.processEvents()
    labels = [w.text() for w in docker.findChildren(QtWidgets.QLabel) if w.text()]

    def fields():
        found = {}
        for form in (docker.options, docker.advanced):
            for w in docker.options_box.findChildren(QtWidgets.QWidget):
                label = form.labelForField(w)
                if label is not None:
                    found[label.text()] = w
        return found

    def describe(w):
        out = {"type": type(w).__name__, "tooltip": w.toolTip(), "hidden": w.isHidden()}
        if hasattr(w, "minimum") and hasattr(w, "singleStep"):
            out.update(minimum=w.minimum(), maximum=w.maximum(), step=w.singleStep(),
                       suffix=w.suffix(), special=w.specialValueText())
        if hasattr(w, "minimumValue"):
            out.update(minimum=w.minimumValue(), maximum=w.maximumValue(), step=w.step)
        if isinstance(w, QtWidgets.QComboBox):
            out["items"] = [w.itemText(i) for i in range(w.count())]
        return out

    upscale_form = {name: describe(w) for name, w in fields().items()}
    scroll = docker.scroll.widget()
    layout_facts = {
        # the form scrolls; the status line, Run, the progress and Cancel never do
        "run_in_scroll": scroll.isAncestorOf(docker.run_button),
        "progress_in_scroll": scroll.isAncestorOf(docker.progress),
        "cancel_in_scroll": scroll.isAncestorOf(docker.cancel_button),
        "options_in_scroll": scroll.isAncestorOf(docker.options_box),
        "task_in_scroll": scroll.isAncestorOf(docker.task),
        "address_fields": [w.placeholderText() for w in docker.findChildren(QtWidgets.QLineEdit)
                           if "127.0.0.1" in w.placeholderText()],
        "status": docker.state.text(), "status_detail": docker.state.toolTip(),
        "run_text": docker.run_button.text(), "task_help": docker.task_help.text(),
    }
    dialog = docker.open_settings()
    app.processEvents()
    layout_facts["settings_url"] = dialog.url.text()
    layout_facts["settings_status"] = dialog.status.text()
    dialog.accept()
    advanced_folded = docker.advanced_box.isHidden()
    spins = {name: w for name, w in fields().items() if isinstance(w, QtWidgets.QSpinBox)}
    spins["Tile overlap"].setValue(24)
    app.processEvents()
    stored = Settings.from_strings({
        "options": krita.Krita.instance().readSetting("Restora", "options", "")})
    docker.task.setCurrentIndex(docker.task.findData("test-split"))
    app.processEvents()
    split_model_shown = not docker.model.isHidden()  # the task runs no model
    for task in ("test-split", "upscale"):  # each task's form is saved into its own task
        docker.task.setCurrentIndex(docker.task.findData(task))
        app.processEvents()
    switched = Settings.from_strings({
        "options": krita.Krita.instance().readSetting("Restora", "options", "")})
    facts = {
        "qt6": QT6, "binding": QtCore.__name__.split(".")[0], "docker_id": factory.name,
        "actions": sorted(window.created), "menu": [
            a.text() for a in window.created["restora_menu"][0].menu().actions()
            if a.isVisible() and not a.isSeparator()],
        "connected": controller.connection.connected, "labels": labels,
        "models": [docker.model.itemText(i) for i in range(docker.model.count())],
        "tasks": [docker.task.itemText(i) for i in range(docker.task.count())
                  if docker.task.itemData(i)],
        "separators": sum(1 for i in range(docker.task.count())
                          if not docker.task.itemData(i)),
        "upscale_form": upscale_form, "advanced_folded": advanced_folded,
        "split_model_shown": split_model_shown,
        "cached_tasks": [t["task"] for t in json.loads(krita.Krita.instance().readSetting(
            "Restora", "task_cache", "") or '{"tasks": []}')["tasks"]],
        "layout": layout_facts, "spins": sorted(spins),
        "stored_overlap": stored.options.get("upscale", {}).get("overlap"),
        "switched": switched.options}
    facts["references"] = reference_lists(app, docker, fields)  # switches to the edit task
    print(json.dumps(facts))


def reference_lists(app, docker, fields) -> dict:
    """The edit task's reference image lists on an image of four layers: where they sit in
    the form, what they list, what a choice stores, and how they follow the layers."""
    import krita
    from restora.krita.qt import QtCore, QtWidgets

    host = krita.Krita.instance()
    base, hat, scarf = krita.Node("Background"), krita.Node("Hat"), krita.Node("Scarf")
    document = krita.Document([base, hat, krita.Node("Group", "grouplayer", [scarf])], base)
    host.active_document = document
    docker.task.setCurrentIndex(docker.task.findData("edit"))
    app.processEvents()
    role = QtWidgets.QFormLayout.ItemRole.LabelRole
    rows = [docker.options.itemAt(row, role).widget().text()
            for row in range(docker.options.rowCount())
            if docker.options.itemAt(row, role) is not None]
    first, second = (fields()[f"Reference image {n} (Picture {n + 1})"] for n in (1, 2))

    def items(combo):
        return [combo.itemText(i) for i in range(combo.count())]

    def tick_until(condition):
        deadline = time.monotonic() + 5
        while not condition() and time.monotonic() < deadline:
            app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
            time.sleep(0.02)
        return condition()

    out = {"rows": rows, "listed": items(first), "tooltip": first.toolTip()}
    first.setCurrentIndex(first.findData("Hat"))
    app.processEvents()
    out["stored"] = json.loads(host.readSetting("Restora", "references", "") or "null")
    document.root.add(krita.Node("Sky"))  # a new layer: the tick lists it
    out["new_layer_listed"] = tick_until(lambda: "Sky" in items(second))
    document.root.remove(hat)  # the picked layer deleted: kept, marked, not lost
    tick_until(lambda: "Hat" not in items(second))
    out["after_delete"] = items(first)
    out["still_chosen"] = first.currentText()
    document.setActiveNode(scarf)  # the active layer is never a reference
    tick_until(lambda: "Scarf" not in items(second))
    out["active_changed"] = items(second)
    host.active_document = None
    return out


if __name__ == "__main__":
    main()
