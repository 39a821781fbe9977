"""Scenarios run inside real Krita (kritarunner) through the installed plug-in's own code.

    kritarunner -s krita_scenarios -f main CONFIG.json

CONFIG names the pykrita folder the plug-in was installed into, the backend's address, a dead
address, and optionally a backend process to kill. Every scenario builds a document, paints
it, maybe selects, calls the plug-in's action functions (`restora.krita.actions`, the same
code the menu runs: pixels read on the UI thread, the job on a worker, the result handed back
through a queued Qt signal and inserted on the UI thread) and records what happened in
OUT_DIR/results.json, with raw RGBA dumps of layers that test_krita_e2e.py compares with the
engine's own output. Krita's Python has no numpy: plain bytes only.
"""

import json
import os
import signal
import struct
import sys
import time
import traceback

from krita import Krita, Selection

W, H = 128, 96
SEL = (40, 30, 36, 24)  # x, y, w, h
PADDING, FEATHER = 8, 4.0
EXACT = {"upscale": {"tile": 0}}  # one pass: the result can be compared with the engine's

CONFIG = {}
OUT = {}
DOCKERS = []  # the docker built by one scenario and used by the next


def main(args):
    with open(args[0]) as f:
        CONFIG.update(json.load(f))
    sys.path.insert(0, CONFIG["pykrita"])
    results = {"python": sys.version.split()[0], "krita": Krita.instance().version()}
    for name, scenario in SCENARIOS:
        t0 = time.monotonic()
        try:
            results[name] = scenario()
        except Exception:
            results[name] = {"exception": traceback.format_exc()}
        results[name]["seconds"] = round(time.monotonic() - t0, 2)
    with open(os.path.join(CONFIG["out_dir"], "results.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    print("KRITA_SCENARIOS_DONE", flush=True)


# --- helpers ---


def settings(**kw):
    from restora.common.settings import Settings

    base = dict(backend_url=CONFIG["url"], models={"upscale": "tiny-x2"},
                options={k: dict(v) for k, v in EXACT.items()}, padding=PADDING,
                feather=FEATHER)
    base.update(kw)
    return Settings(**base)


def pattern_rgba(width, height, depth=8):
    """Opaque RGBA: red and green ramps, a blue checkerboard."""
    out = bytearray()
    for y in range(height):
        for x in range(width):
            r, g = (x * 2) % 256, (y * 2) % 256
            b = 230 if (x // 8 + y // 8) % 2 else 30
            if depth == 16:
                out += struct.pack("<4H", r * 257 + x, g * 257 + y, b * 257, 65535)
            else:
                out += bytes((r, g, b, 255))
    return bytes(out)


def swap_rb(data, depth=8):
    """RGBA <-> BGRA, written here again so the test does not trust the plug-in's own."""
    size = depth // 8
    step = 4 * size
    src = bytes(data)
    out = bytearray(src)
    for b in range(size):
        out[b::step] = src[2 * size + b::step]
        out[2 * size + b::step] = src[b::step]
    return bytes(out)


def new_doc(name, model="RGBA", depth="U8", profile="", width=W, height=H):
    doc = Krita.instance().createDocument(width, height, name, model, depth, profile, 72.0)
    doc.setBatchmode(True)
    return doc, doc.rootNode().childNodes()[0]


def paint(node, width=W, height=H, depth=8):
    rgba = pattern_rgba(width, height, depth)
    node.setPixelData(swap_rb(rgba, depth), 0, 0, width, height)
    return rgba


def select(doc, box=SEL):
    sel = Selection()
    sel.select(*box, 255)
    doc.setSelection(sel)


def layers(doc):
    return [n for n in doc.rootNode().childNodes() if n.type() == "paintlayer"]


def rect(node):
    r = node.bounds()
    return [r.x(), r.y(), r.width(), r.height()]


def dump(name, data):
    with open(os.path.join(CONFIG["out_dir"], name), "wb") as f:
        f.write(data)
    return name


def run_info(run):
    return {"status": run.status, "layer_name": run.layer_name,
            "error": run.error.text if run.error else None,
            "error_type": type(run.error).__name__ if run.error else None}


def alpha_outside(data, width, height, box, channels=4, size=1):
    """How many pixels outside `box` have any non-zero byte (should be none: transparent)."""
    x0, y0, bw, bh = box
    pixel = channels * size
    count = 0
    for y in range(height):
        row = data[y * width * pixel:(y + 1) * width * pixel]
        for x in range(width):
            if x0 <= x < x0 + bw and y0 <= y < y0 + bh:
                continue
            if any(row[x * pixel:(x + 1) * pixel]):
                count += 1
    return count


def alpha_values(data, width, box, channels=4, size=1):
    x0, y0, bw, bh = box
    pixel = channels * size
    values = []
    for y in range(y0, y0 + bh):
        for x in range(x0, x0 + bw):
            at = (y * width + x) * pixel + (channels - 1) * size
            values.append(int.from_bytes(data[at:at + size], "little"))
    return values


def pump_until(condition, timeout):
    from restora.krita.qt import QEventLoop, QtCore

    QCoreApplication = QtCore.QCoreApplication

    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)
    return condition()


# --- scenarios ---


def package():
    import restora
    from restora.krita import actions, colour, controller, docker, extension  # noqa: F401

    return {"version": restora.__version__, "file": restora.__file__,
            "shared": sys.modules["restora.shared.protocol"].__file__,
            "heavy": sorted(m for m in ("numpy", "torch", "pydantic", "PIL") if m in sys.modules)}


def restore_u8():
    from restora.krita import actions

    doc, base = new_doc("restore-u8")
    rgba = paint(base)
    select(doc)
    before = bytes(base.pixelData(0, 0, W, H))
    run = actions.restore_selection(doc, base, settings(), wait=True, timeout=120)
    out = run_info(run)
    new = [n for n in layers(doc) if n.name() == run.layer_name]
    out["layers"] = [n.name() for n in layers(doc)]
    out["doc_size"] = [doc.width(), doc.height()]
    out["source_unchanged"] = bytes(base.pixelData(0, 0, W, H)) == before
    if new:
        layer = new[0]
        data = swap_rb(bytes(layer.pixelData(0, 0, W, H)))
        out["bounds"] = rect(layer)
        out["depth"] = layer.colorDepth()
        out["outside_nonzero"] = alpha_outside(data, W, H, SEL)
        core = (SEL[0] + 5, SEL[1] + 5, SEL[2] - 10, SEL[3] - 10)
        out["core_alpha_min"] = min(alpha_values(data, W, core))
        out["edge_alpha"] = alpha_values(data, W, (SEL[0], SEL[1] + 12, 1, 1))[0]
        out["layer_file"] = dump("restore_u8_layer.rgba", data)
    out["source_file"] = dump("restore_u8_source.rgba", rgba)
    doc.close()
    return out


def upscale_u8():
    from restora.krita import actions

    doc, base = new_doc("upscale-u8")
    paint(base)
    top = doc.createNode("Above", "paintlayer")
    doc.rootNode().addChildNode(top, base)
    run = actions.upscale_image(doc, base, settings(), wait=True, timeout=120)
    out = run_info(run)
    out["doc_size"] = [doc.width(), doc.height()]
    out["layers"] = [n.name() for n in layers(doc)]
    new = [n for n in layers(doc) if n.name() == run.layer_name]
    if new:
        out["bounds"] = rect(new[0])
        out["layer_file"] = dump("upscale_u8_layer.rgba",
                                 swap_rb(bytes(new[0].pixelData(0, 0, doc.width(),
                                                                doc.height()))))
    # the source layer was scaled by Krita's own command, exactly as Image > Scale would
    twin, twin_base = new_doc("twin")
    paint(twin_base)
    twin.scaleImage(2 * W, 2 * H, 72, 72, "Bicubic")
    twin.waitForDone()
    out["source_scaled_by_krita"] = (bytes(base.pixelData(0, 0, 2 * W, 2 * H))
                                     == bytes(twin_base.pixelData(0, 0, 2 * W, 2 * H)))
    twin.close()
    doc.close()
    return out


def upscale_new_document():
    from restora.krita import actions

    doc, base = new_doc("upscale-doc", width=32, height=24)
    paint(base, 32, 24)
    before = len(Krita.instance().documents())
    run = actions.upscale_image(doc, base, settings(upscale_into="document"), wait=True)
    out = run_info(run)
    docs = Krita.instance().documents()
    made = [d for d in docs if d.name() == run.layer_name]
    out["documents_added"] = len(docs) - before
    out["doc_size"] = [doc.width(), doc.height()]
    out["layers"] = [n.name() for n in layers(doc)]
    if made:
        out["new_size"] = [made[0].width(), made[0].height()]
        out["new_layers"] = [n.name() for n in layers(made[0])]
        made[0].close()
    doc.close()
    return out


def restore_u16():
    from restora.krita import actions

    doc, base = new_doc("restore-u16", depth="U16", profile="sRGB-elle-V2-srgbtrc.icc")
    rgba = paint(base, depth=16)
    select(doc)
    before = bytes(base.pixelData(0, 0, W, H))
    run = actions.restore_selection(doc, base, settings(), wait=True, timeout=120)
    out = run_info(run)
    out["source_unchanged"] = bytes(base.pixelData(0, 0, W, H)) == before
    out["profile"] = doc.colorProfile()
    new = [n for n in layers(doc) if n.name() == run.layer_name]
    if new:
        data = swap_rb(bytes(new[0].pixelData(0, 0, W, H)), 16)
        out["depth"] = new[0].colorDepth()
        out["bounds"] = rect(new[0])
        out["outside_nonzero"] = alpha_outside(data, W, H, SEL, size=2)
        out["layer_file"] = dump("restore_u16_layer.rgba", data)
    out["source_file"] = dump("restore_u16_source.rgba", rgba)
    doc.close()
    return out


def restore_u16_linear():
    """Krita's default 16-bit profile is linear: converted to sRGB for the model and back."""
    from restora.krita import actions

    doc, base = new_doc("restore-u16-linear", depth="U16")
    paint(base, depth=16)
    select(doc)
    before = bytes(base.pixelData(0, 0, W, H))
    run = actions.restore_selection(doc, base, settings(), wait=True, timeout=120)
    out = run_info(run)
    out["profile"] = doc.colorProfile()
    out["source_unchanged"] = bytes(base.pixelData(0, 0, W, H)) == before
    out["document_profile_unchanged"] = doc.colorProfile() == out["profile"]
    new = [n for n in layers(doc) if n.name() == run.layer_name]
    if new:
        data = bytes(new[0].pixelData(0, 0, W, H))
        out["depth"] = new[0].colorDepth()
        out["layer_profile"] = new[0].colorProfile()
        out["bounds"] = rect(new[0])
        out["outside_nonzero"] = alpha_outside(data, W, H, SEL, size=2)
        core = (SEL[0] + 5, SEL[1] + 5, SEL[2] - 10, SEL[3] - 10)
        out["core_alpha_min"] = min(alpha_values(data, W, core, size=2))
    doc.close()
    return out


def upscale_f32():
    from restora.krita import actions

    doc, base = new_doc("upscale-f32", depth="F32", width=32, height=24)
    base.setPixelData(struct.pack("<4f", 0.8, 0.4, 0.1, 1.0) * (32 * 24), 0, 0, 32, 24)
    run = actions.upscale_image(doc, base, settings(), wait=True, timeout=120)
    out = run_info(run)
    out["doc_size"] = [doc.width(), doc.height()]
    out["doc_depth"] = doc.colorDepth()
    new = [n for n in layers(doc) if n.name() == run.layer_name]
    if new:
        out["depth"] = new[0].colorDepth()
        out["bounds"] = rect(new[0])
        out["centre"] = list(struct.unpack("<4f", bytes(new[0].pixelData(32, 24, 1, 1))))
    doc.close()
    return out


def restore_gray():
    from restora.krita import actions

    doc, base = new_doc("restore-gray", model="GRAYA")
    gray = bytearray()
    for y in range(H):
        for x in range(W):
            gray += bytes(((x * 2 + y) % 256, 255))
    base.setPixelData(bytes(gray), 0, 0, W, H)
    select(doc)
    run = actions.restore_selection(doc, base, settings(), wait=True, timeout=120)
    out = run_info(run)
    new = [n for n in layers(doc) if n.name() == run.layer_name]
    out["source_unchanged"] = bytes(base.pixelData(0, 0, W, H)) == bytes(gray)
    if new:
        data = bytes(new[0].pixelData(0, 0, W, H))
        out["model"] = new[0].colorModel()
        out["bytes_per_pixel"] = len(data) // (W * H)
        out["outside_nonzero"] = alpha_outside(data, W, H, SEL, channels=2)
        out["layer_file"] = dump("restore_gray_layer.ga", data)
    out["source_file"] = dump("restore_gray_source.ga", bytes(gray))
    doc.close()
    return out


def restore_projection():
    """With the "image as shown" option the composite is sent, not the active layer."""
    from restora.krita import actions

    doc, base = new_doc("restore-projection")
    paint(base)
    top = doc.createNode("Red veil", "paintlayer")
    doc.rootNode().addChildNode(top, base)
    top.setPixelData(bytes((0, 0, 255, 128)) * (W * H // 2), 0, 0, W, H // 2)
    select(doc)
    doc.refreshProjection()
    doc.waitForDone()
    composite = swap_rb(bytes(doc.pixelData(0, 0, W, H)))
    run = actions.restore_selection(doc, base, settings(source="projection"), wait=True)
    out = run_info(run)
    out["layers"] = [n.name() for n in layers(doc)]
    new = [n for n in layers(doc) if n.name() == run.layer_name]
    if new:
        out["layer_file"] = dump("restore_projection_layer.rgba",
                                 swap_rb(bytes(new[0].pixelData(0, 0, W, H))))
    out["source_file"] = dump("restore_projection_source.rgba", composite)
    doc.close()
    return out


def no_selection():
    from restora.krita import actions

    doc, base = new_doc("no-selection")
    paint(base)
    run = actions.restore_selection(doc, base, settings(), wait=True)
    out = run_info(run)
    out["layers"] = [n.name() for n in layers(doc)]
    doc.close()
    return out


def backend_down():
    from restora.krita import actions

    doc, base = new_doc("backend-down")
    paint(base)
    select(doc)
    t0 = time.monotonic()
    run = actions.restore_selection(doc, base, settings(backend_url=CONFIG["dead_url"]),
                                    wait=True)
    out = run_info(run)
    out["elapsed"] = time.monotonic() - t0
    out["layers"] = [n.name() for n in layers(doc)]
    doc.close()
    return out


def cancel():
    from restora.krita.controller import Controller

    doc, base = new_doc("cancel", width=320, height=320)
    paint(base, 320, 320)
    controller = Controller(settings(options={"upscale": {"tile": 32, "overlap": 8}}))
    run = controller.whole_image(doc, base)
    second = controller.whole_image(doc, base)  # queued behind the first, on the backend
    out = {"queued": [r is second for r in controller.queued]}
    out["started"] = pump_until(lambda: run.done or (
        run.progress > 0.02 and second.stage.startswith("waiting")), 60)
    out["second_waiting"] = second.stage
    out["stage_before_cancel"] = run.stage
    t0 = time.monotonic()
    controller.cancel()  # the docker's Cancel: the job the progress bar shows
    run.wait(30)
    out.update(run_info(run))
    out["cancel_seconds"] = time.monotonic() - t0
    out["second_started"] = pump_until(lambda: second.done or second.progress > 0.02, 60)
    controller.cancel()
    second.wait(30)
    out["second"] = run_info(second)
    out["history"] = [r.status for r in controller.history]
    out["doc_size"] = [doc.width(), doc.height()]
    out["layers"] = [n.name() for n in layers(doc)]
    doc.close()
    return out


def killed():
    """The backend process dies in the middle of a job."""
    if not CONFIG.get("kill_pid"):
        return {"skipped": True}
    from restora.common import job_runner
    from restora.krita.controller import Controller

    job_runner.RECONNECT_TIMEOUT = 2.0
    doc, base = new_doc("killed", width=320, height=320)
    paint(base, 320, 320)
    controller = Controller(settings(backend_url=CONFIG["kill_url"],
                                     options={"upscale": {"tile": 32, "overlap": 8}}))
    run = controller.whole_image(doc, base)
    out = {"started": pump_until(lambda: run.done or run.progress > 0.02, 60)}
    os.kill(CONFIG["kill_pid"], signal.SIGKILL)
    t0 = time.monotonic()
    run.wait(60)
    out.update(run_info(run))
    out["seconds_to_report"] = time.monotonic() - t0
    out["doc_size"] = [doc.width(), doc.height()]
    out["layers"] = [n.name() for n in layers(doc)]
    out["connection"] = controller.connection.state.value
    doc.close()
    return out


def face_settings():
    return settings(backend_url=CONFIG["face_url"], models={"face-restore": CONFIG["face_model"]},
                    options={})


def faces_photo():
    """Restore faces on a real photo: one new layer holding the face, transparent elsewhere."""
    from restora.krita import actions

    size = CONFIG["photo_size"]
    with open(os.path.join(CONFIG["out_dir"], CONFIG["photo"]), "rb") as f:
        rgba = f.read()
    doc, base = new_doc("faces", width=size, height=size)
    base.setPixelData(swap_rb(rgba), 0, 0, size, size)
    before = bytes(base.pixelData(0, 0, size, size))
    run = actions.run_task("face-restore", doc, base, face_settings(), wait=True, timeout=300)
    out = run_info(run)
    out["stage"] = run.stage
    out["layers"] = [n.name() for n in layers(doc)]
    out["source_unchanged"] = bytes(base.pixelData(0, 0, size, size)) == before
    new = [n for n in layers(doc) if n.name() == run.layer_name]
    if new:
        out["bounds"] = rect(new[0])
        out["layer_file"] = dump("faces_layer.rgba",
                                 swap_rb(bytes(new[0].pixelData(0, 0, size, size))))
    doc.close()
    return out


def faces_none():
    """No face in the image: no layer is added and the message says so."""
    from restora.krita import actions

    doc, base = new_doc("no-faces")
    paint(base)
    run = actions.run_task("face-restore", doc, base, face_settings(), wait=True, timeout=300)
    out = run_info(run)
    out["stage"] = run.stage
    out["layers"] = [n.name() for n in layers(doc)]
    doc.close()
    return out


def form_fields(docker):
    """The docker's option form as the user sees it (with its advanced fold): label ->
    field widget."""
    from restora.krita.qt import QtWidgets

    found = {}
    for form in (docker.options, docker.advanced):
        for w in docker.options_box.findChildren(QtWidgets.QWidget):
            if form.labelForField(w) is not None:
                found[form.labelForField(w).text()] = w
    return found


def split():
    """test-split's two outputs: one group named after the task, "Brighter" over "Inverse"."""
    from restora.krita import actions

    doc, base = new_doc("split", width=32, height=24)
    rgba = paint(base, 32, 24)
    run = actions.run_task("test-split", doc, base,
                           settings(options={"test-split": {"gain": 2.0}}), wait=True)
    out = run_info(run)
    out["source_file"] = dump("split_source.rgba", rgba)
    top = [n for n in doc.rootNode().childNodes() if n.type() in ("paintlayer", "grouplayer")]
    out["top_level"] = [[n.name(), n.type()] for n in top]
    groups = [n for n in top if n.type() == "grouplayer"]
    if groups:
        children = list(reversed(groups[0].childNodes()))  # Krita lists bottom to top
        out["children"] = [n.name() for n in children]
        out["child_files"] = [dump(f"split_{i}.rgba", swap_rb(bytes(n.pixelData(0, 0, 32, 24))))
                              for i, n in enumerate(children)]
    doc.close()
    return out


def denoise():
    """Denoise from its own task action on a backend with a restoration model."""
    from restora.krita import actions

    doc, base = new_doc("denoise", width=40, height=32)
    rgba = paint(base, 40, 32)
    run = actions.run_task("denoise", doc, base,
                           settings(backend_url=CONFIG["denoise_url"], models={}, options={}),
                           wait=True, timeout=120)
    out = run_info(run)
    out["source_file"] = dump("denoise_source.rgba", rgba)
    out["layers"] = [n.name() for n in layers(doc)]
    out["doc_size"] = [doc.width(), doc.height()]
    new = [n for n in layers(doc) if n.name() == run.layer_name]
    if new:
        out["bounds"] = rect(new[0])
        out["layer_file"] = dump("denoise_layer.rgba",
                                 swap_rb(bytes(new[0].pixelData(0, 0, 40, 32))))
    doc.close()
    return out


def docker_denoise():
    """The docker and the menu on a backend that runs Denoise: its entry, its form with the
    spec's ranges, its strength as a slider."""
    import dataclasses

    from restora.krita import actions
    from restora.krita.extension import TaskMenu
    from restora.krita.qt import QAction, QtCore, QtWidgets

    docker = DOCKERS[0]
    controller = actions.controller()
    controller.update_settings(dataclasses.replace(controller.settings,
                                                   backend_url=CONFIG["denoise_url"]))
    out = {"connected": pump_until(lambda: controller.connection.connected
                                   and controller.connection.client.url == CONFIG["denoise_url"]
                                   and not controller.connection.refreshing, 60)}
    pump_until(lambda: docker.task.findData("denoise") >= 0, 10)
    out["tasks"] = [docker.task.itemText(i) for i in range(docker.task.count())]
    docker.task.setCurrentIndex(docker.task.findData("denoise"))
    QtCore.QCoreApplication.processEvents()
    fields = form_fields(docker)
    strength = fields["Strength"]
    out["strength"] = {"type": type(strength).__name__, "minimum": strength.minimumValue(),
                       "maximum": strength.maximumValue(), "step": strength.step,
                       "tooltip": strength.toolTip()}
    noise = fields["Noise level"]
    out["noise"] = {"minimum": noise.minimum(), "maximum": noise.maximum(),
                    "suffix": noise.suffix(), "hidden": noise.isHidden()}
    out["jpeg_hidden"] = fields["JPEG quality"].isHidden()  # FBCNN's: not for DnCNN
    tile = fields["Tile size"]
    out["tile"] = {"special": tile.specialValueText(), "advanced": docker.advanced_box.isAncestorOf(
        tile)}
    window = QtWidgets.QMainWindow()
    menu = TaskMenu(QtWidgets.QMenu("Restora", window),
                    lambda i, text: QAction(text, window))
    menu.update(controller.known_tasks())
    out["menu"] = [a.text() for a in menu.menu.actions() if not a.isSeparator()]
    return out


def stored(name):
    return json.loads(Krita.instance().readSetting("Restora", name, "") or "null")


def docker_upscale(name):
    """Upscale a small painted document with the plug-in's own controller, which holds the
    settings the docker saved (the same call as Tools > Restora > Upscale image)."""
    from restora.krita import actions

    doc, base = new_doc(name, width=32, height=24)
    paint(base, 32, 24)
    run = actions.upscale_image(doc, base, wait=True, timeout=120)
    out = run_info(run)
    out["doc_size"] = [doc.width(), doc.height()]
    out["layers"] = [n.name() for n in layers(doc)]
    doc.close()
    return out


def docker_poisoned_kritarc():
    """kritarc holds Restore faces' options under upscale, as the docker wrote them when it
    saved a task switch into the new task: the docker connects, drops them with a note, and
    an upscale runs."""
    from restora.krita import actions
    from restora.krita.docker import RestoraDocker
    from restora.krita.qt import QtWidgets

    out = {"stored_before": stored("options")}
    controller = actions.controller()  # loads the settings from kritarc
    docker = RestoraDocker()
    DOCKERS.append(docker)
    controller.start()
    out["connected"] = pump_until(lambda: controller.connection.connected, 60)
    pump_until(lambda: docker.task.count() > 1, 10)
    out["labels"] = [w.text() for w in docker.findChildren(QtWidgets.QLabel) if w.text()]
    out["stored_after"] = stored("options")
    out["upscale"] = docker_upscale("docker-poisoned")
    return out


def docker_task_switch():
    """Upscale -> Split (one option edited) -> Upscale in the docker, then upscale."""
    from restora.krita.qt import QtCore

    docker = DOCKERS[0]
    out = {"tasks": [docker.task.itemData(i) for i in range(docker.task.count())]}

    def choose(task):
        docker.task.setCurrentIndex(docker.task.findData(task))
        QtCore.QCoreApplication.processEvents()
        return sorted(form_fields(docker))

    out["upscale_form"] = choose("upscale")
    out["split_form"] = choose("test-split")
    form_fields(docker)["Gain"].setValue(1.7)
    out["back_form"] = choose("upscale")
    out["stored_options"] = stored("options")
    out["stored_models"] = stored("models")
    out["upscale"] = docker_upscale("docker-switch")
    return out


def download_then_upscale():
    from restora.krita.controller import Controller

    controller = Controller(settings(backend_url=CONFIG["download_url"], models={}))
    controller.start()
    out = {"connected": pump_until(lambda: controller.connection.connected, 60)}
    catalog = controller.connection.catalog
    info = catalog.task_info("upscale")
    out["needs_model"] = bool(info and info.needs_model)
    entry = catalog.recommended_download("upscale")
    out["offered"] = entry.name if entry else None
    download = controller.download_model(entry.name, entry.label)
    seen = []
    pump_until(lambda: (seen.append(download.done_bytes) or download.done), 60)
    out["download"] = download.status
    out["progress_seen"] = max(seen) > 0
    pump_until(lambda: controller.connection.catalog is not catalog
               and controller.connection.connected, 30)
    out["models_after"] = [m.name for m in controller.connection.catalog.models_for("upscale")]
    doc, base = new_doc("download", width=32, height=24)
    paint(base, 32, 24)
    run = controller.run_task("upscale", doc, base).wait(120)
    out["upscale"] = run_info(run)
    doc.close()
    return out


def diffusion_on_selection(task, name, models, options):
    """A diffusion task from its task action on a 64x64 layer with a selection: what it left
    in the document, the source's and the new layer's pixels, the stages progress said."""
    from restora.krita.controller import Controller

    doc, base = new_doc(name, width=64, height=64)
    rgba = paint(base, 64, 64)
    before = bytes(base.pixelData(0, 0, 64, 64))
    sel = Selection()
    sel.select(16, 12, 32, 36, 255)
    doc.setSelection(sel)
    controller = Controller(settings(backend_url=CONFIG["diffusion_url"], models=models,
                                     options={task: options}))
    controller.start()
    pump_until(lambda: controller.connection.connected, 60)
    run = controller.run_task(task, doc, base)
    stages = []
    pump_until(lambda: (stages.append(run.stage) or run.done), 180)
    out = run_info(run)
    out["stage"] = run.stage
    out["step_seen"] = any("step " in s and " of " in s for s in stages)
    out["selection"] = [16, 12, 32, 36]
    out["source_file"] = dump(f"{name}_source.rgba", rgba)
    out["source_unchanged"] = bytes(base.pixelData(0, 0, 64, 64)) == before
    out["layers"] = [n.name() for n in layers(doc)]
    out["doc_size"] = [doc.width(), doc.height()]
    new = [n for n in layers(doc) if n.name() == run.layer_name]
    if new:
        out["layer_file"] = dump(f"{name}_layer.rgba",
                                 swap_rb(bytes(new[0].pixelData(0, 0, 64, 64))))
    doc.close()
    return out


def refine_selection():
    """Refine (img2img at low denoise) from its task action on a selection."""
    return diffusion_on_selection("refine", "refine", {"refine": "tiny-sd15"},
                                  {"steps": 4, "strength": 0.5})


def hypir_selection():
    """HYPIR (one-step diffusion restoration) at scale 1 on a selection, in place."""
    return diffusion_on_selection("hypir", "hypir", {}, {"tile": 64, "stride": 32})


def tiled_refine_whole():
    """Tiled refine (upscale, then img2img tile by tile) on the whole image."""
    from restora.krita.controller import Controller

    doc, base = new_doc("tiled-refine", width=48, height=48)
    paint(base, 48, 48)
    controller = Controller(settings(backend_url=CONFIG["diffusion_url"],
                                     models={"tiled-refine": "tiny-sd15"},
                                     options={"tiled-refine": {"steps": 2}}))
    controller.start()
    pump_until(lambda: controller.connection.connected, 60)
    run = controller.run_task("tiled-refine", doc, base).wait(240)
    out = run_info(run)
    out["doc_size"] = [doc.width(), doc.height()]
    doc.close()
    return out


def hypir_whole():
    """HYPIR at scale 2 on the whole image, which the document follows."""
    from restora.krita.controller import Controller

    doc, base = new_doc("hypir-x2", width=48, height=40)
    paint(base, 48, 40)
    controller = Controller(settings(backend_url=CONFIG["diffusion_url"], models={},
                                     options={"hypir": {"tile": 64, "stride": 32,
                                                        "scale": 2.0}}))
    controller.start()
    pump_until(lambda: controller.connection.connected, 60)
    run = controller.run_task("hypir", doc, base).wait(180)
    out = run_info(run)
    out["doc_size"] = [doc.width(), doc.height()]
    out["layers"] = [n.name() for n in layers(doc)]
    new = [n for n in layers(doc) if n.name() == run.layer_name]
    out["layer_rect"] = rect(new[0]) if new else None
    doc.close()
    return out


def edit_colorize():
    """Edit by instruction, Colorize preset, on a selection and then on the whole layer."""
    from restora.common.catalog import apply_preset
    from restora.krita.controller import Controller

    doc, base = new_doc("edit", width=48, height=40)
    rgba = paint(base, 48, 40)
    controller = Controller(settings(backend_url=CONFIG["edit_url"], models={}, options={}))
    controller.start()
    pump_until(lambda: controller.connection.connected, 60)
    catalog = controller.connection.catalog
    _model, options = apply_preset(catalog, "edit", "colorize", {})
    options.update(steps=2, working_size=64)
    controller.settings.options["edit"] = options
    out = {"preset_instruction": options.get("instruction", ""),
           "source_file": dump("edit_source.rgba", rgba)}
    for key, box in (("selection", (12, 10, 24, 20)), ("layer", None)):
        sel = Selection()
        if box is not None:
            sel.select(*box, 255)
        doc.setSelection(sel if box is not None else Selection())
        run = controller.run_task("edit", doc, base).wait(240)
        out[key] = run_info(run)
        new = [n for n in layers(doc) if n.name() == run.layer_name]
        if new:
            out[key]["layer_file"] = dump(f"edit_{key}.rgba",
                                          swap_rb(bytes(new[0].pixelData(0, 0, 48, 40))))
            new[0].setVisible(False)
    doc.close()
    return out


#: where the reference layers' pixels are (x, y, w, h): each is sent as that box, whole
HAT, SCARF = (4, 6, 16, 12), (20, 2, 24, 30)


def paint_box(node, box, bgra):
    x, y, w, h = box
    node.setPixelData(bytes(bgra) * (w * h), x, y, w, h)


def combo_items(combo):
    return [combo.itemText(i) for i in range(combo.count())]


def edit_references():
    """Edit by instruction with two reference images picked in the docker's lists: Hat, and
    Scarf in a group, on a tiny Qwen-Image-Edit-2509, on a selection; again with Scarf
    deleted; then on InstructPix2Pix, which takes one picture."""
    import dataclasses

    from restora.krita import actions
    from restora.krita.controller import Controller
    from restora.krita.qt import QtCore

    doc, _background = new_doc("references", width=48, height=40)
    hat, group = doc.createNode("Hat", "paintlayer"), doc.createGroupLayer("Props")
    scarf, photo = doc.createNode("Scarf", "paintlayer"), doc.createNode("Photo", "paintlayer")
    paint_box(hat, HAT, (40, 40, 220, 255))
    paint_box(scarf, SCARF, (40, 200, 40, 255))
    paint(photo, 48, 40)
    group.addChildNode(scarf, None)
    for node in (hat, group, photo):  # bottom to top: Photo is the top layer, the active one
        doc.rootNode().addChildNode(node, None)
    doc.waitForDone()
    docker = DOCKERS[0]
    docker._active_document = lambda: doc  # kritarunner has no window: no active document
    controller = actions.controller()
    s = controller.settings
    controller.update_settings(dataclasses.replace(
        s, backend_url=CONFIG["edit_plus_url"], options={**s.options, "edit": {
            "instruction": "Put the hat from Picture 2 on the person.", "steps": 2,
            "working_size": 64, "seed": 5}}))
    out = {"connected": pump_until(lambda: controller.connection.connected
                                   and controller.connection.client.url == CONFIG["edit_plus_url"]
                                   and not controller.connection.refreshing, 60)}
    pump_until(lambda: docker.task.findData("edit") >= 0, 10)
    docker.task.setCurrentIndex(docker.task.findData("edit"))
    QtCore.QCoreApplication.processEvents()
    fields = form_fields(docker)
    first = fields["Reference image 1 (Picture 2)"]
    second = fields["Reference image 2 (Picture 3)"]
    out["listed"] = combo_items(first)
    first.setCurrentIndex(first.findData("Hat"))
    second.setCurrentIndex(second.findData("Scarf"))
    QtCore.QCoreApplication.processEvents()
    out["stored"] = stored("references")

    def edit_run(ctl):
        run = ctl.run_task("edit", doc, photo).wait(240)
        return {**run_info(run), "stage": run.stage,
                "references": run.details.get("references"), "note": run.details.get("note")}

    select(doc, (12, 10, 24, 20))
    out["both"] = edit_run(controller)
    scarf.remove()
    doc.waitForDone()
    out["noticed"] = pump_until(lambda: "Scarf (not in this image)" in combo_items(second), 5)
    doc.setSelection(Selection())
    out["one_gone"] = edit_run(controller)
    one_picture = Controller(settings(backend_url=CONFIG["edit_url"], models={},
                                      options={"edit": {"steps": 2, "working_size": 64}},
                                      references={"edit": {"reference_1": "Hat"}}))
    one_picture.start()
    pump_until(lambda: one_picture.connection.connected, 60)
    out["one_picture"] = edit_run(one_picture)
    del docker._active_document
    doc.close()
    return out


def old_photo_chain():
    """Restore old photo (the chain) on a scratched gray scan, every stage its own layer."""
    from restora.krita.controller import Controller

    doc, base = new_doc("old-photo", width=64, height=64)
    rgba = paint(base, 64, 64)
    gray = bytearray(rgba)
    for i in range(0, len(gray), 4):  # black and white, with two bright scratches
        y, x = divmod(i // 4, 64)
        v = (gray[i] * 3 + gray[i + 1] * 6 + gray[i + 2]) // 10
        if x == 20 or y == 40:
            v = 250
        gray[i:i + 3] = bytes((v, v, v))
    base.setPixelData(swap_rb(bytes(gray)), 0, 0, 64, 64)
    doc.refreshProjection()
    before = bytes(base.pixelData(0, 0, 64, 64))
    controller = Controller(settings(backend_url=CONFIG["old_photo_url"], models={},
                                     options={"restore-old-photo": {"upscale": False}}))
    controller.start()
    pump_until(lambda: controller.connection.connected, 60)
    run = controller.run_task("restore-old-photo", doc, base).wait(300)
    out = run_info(run)
    out["stage"] = run.stage
    groups = [n for n in doc.rootNode().childNodes() if n.type() == "grouplayer"]
    out["group"] = groups[0].name() if groups else None
    out["children_top_first"] = ([c.name() for c in reversed(groups[0].childNodes())]
                                 if groups else [])
    out["source_unchanged"] = bytes(base.pixelData(0, 0, 64, 64)) == before
    out["doc_size"] = [doc.width(), doc.height()]
    doc.close()
    return out


SCENARIOS = [
    ("package", package), ("restore_u8", restore_u8), ("upscale_u8", upscale_u8),
    ("upscale_new_document", upscale_new_document), ("restore_u16", restore_u16),
    ("restore_u16_linear", restore_u16_linear), ("upscale_f32", upscale_f32),
    ("restore_gray", restore_gray), ("restore_projection", restore_projection),
    ("no_selection", no_selection), ("backend_down", backend_down), ("cancel", cancel),
    ("killed", killed), ("faces_photo", faces_photo), ("faces_none", faces_none),
    ("docker_poisoned_kritarc", docker_poisoned_kritarc),
    ("docker_task_switch", docker_task_switch), ("split", split), ("denoise", denoise),
    ("docker_denoise", docker_denoise), ("download_then_upscale", download_then_upscale),
    ("refine_selection", refine_selection), ("tiled_refine_whole", tiled_refine_whole),
    ("hypir_selection", hypir_selection), ("hypir_whole", hypir_whole),
    ("edit_colorize", edit_colorize), ("edit_references", edit_references),
    ("old_photo_chain", old_photo_chain),
]
