"""The docker with a backend that has no model for Upscale, outside Krita (see docker_check.py):
the form says so in words with the catalog's recommended model, its size and licence; the
Download button has the backend fetch it (from a local mirror) with a progress bar; the model
list then offers it and Run is enabled; a preset sets its options and picks a model by its
traits; a licence that limits use is asked about before the download starts.

    python docker_download_check.py PLUGIN_TREE BACKEND_URL   ->  prints one JSON line
"""

import json
import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> None:
    tree, url = sys.argv[1], sys.argv[2]
    sys.path[:0] = [tree, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_krita")]
    from restora.krita import actions
    from restora.krita.qt import QtCore, QtWidgets

    app = QtWidgets.QApplication([])
    import krita

    krita.Krita.instance().writeSetting("Restora", "backend_url", json.dumps(url))
    from restora.krita.docker import RestoraDocker

    def pump(condition, seconds):
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
            time.sleep(0.01)
        app.processEvents()
        return condition()

    controller = actions.controller()
    docker = RestoraDocker()
    controller.start()
    pump(lambda: controller.connection.connected, 30)
    docker.task.setCurrentIndex(docker.task.findData("upscale"))
    pump(lambda: False, 0.2)
    out = {"missing": docker.missing.text(), "button": docker.download_button.text(),
           "button_shown": not docker.download_button.isHidden(),
           "run_enabled_before": docker.run_button.isEnabled(),
           "model_shown_before": not docker.model.isHidden()}
    seen = []
    started = docker._download_clicked()
    seen.append(not docker.download_progress.isHidden())
    pump(lambda: controller.download is not None and controller.download.done, 60)
    out["started"] = started
    out["progress_shown_while_running"] = seen[0]
    out["download_status"] = controller.download.status if controller.download else None
    pump(lambda: controller.connection.catalog is not None
         and controller.connection.catalog.models_for("upscale"), 30)
    pump(lambda: docker.model.count() > 1, 10)
    out["models_after"] = [docker.model.itemText(i) for i in range(docker.model.count())]
    out["run_enabled_after"] = docker.run_button.isEnabled()
    out["missing_after"] = docker.missing.text() if not docker.missing.isHidden() else ""
    out["presets"] = [docker.preset.itemText(i) for i in range(docker.preset.count())]
    fast = docker.preset.findData("fast")
    docker.preset.setCurrentIndex(fast)
    docker.preset.activated.emit(fast)
    pump(lambda: False, 0.2)
    out["after_fast"] = {"options": controller.settings.options.get("upscale", {}),
                         "model": controller.settings.models.get("upscale"),
                         "preset_list_back": docker.preset.currentIndex() == 0}

    # a licence that limits use: asked first; "No" starts nothing
    questions = []
    Box = QtWidgets.QMessageBox

    def answer(reply):
        def question(parent, title, text, *args):
            questions.append(text)
            return reply
        return question

    catalog = controller.connection.catalog
    nc = next(d for d in catalog.downloads if d.non_commercial)
    catalog.recommended_download = lambda task: nc  # offer the non-commercial one
    Box.question = staticmethod(answer(Box.StandardButton.No))
    out["declined_started"] = docker._download_clicked()
    Box.question = staticmethod(answer(Box.StandardButton.Yes))
    out["accepted_started"] = docker._download_clicked()
    pump(lambda: controller.download is not None and controller.download.done, 60)
    out["accepted_status"] = controller.download.status
    out["questions"] = questions
    print(json.dumps(out))


if __name__ == "__main__":
    main()
