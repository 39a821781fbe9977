"""Batch Python run inside real GIMP 3 on an X display (Xvfb) by tests/gimp/test_gimp_dialog.py.

Builds Restora's real dialogs for real procedures (from the installed plug-in's restora_lib),
drives them from GLib timeouts as a person would (wait for the backend, pick a model, type an
option, press OK), and records what they showed and what landed in the procedure's config.
Screenshots go next to the JSON for a person to look at.
"""

import json
import os
import sys
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
gi.require_version("Gdk", "3.0")
from gi.repository import Gdk, Gimp, GimpUi, GLib, Gtk  # noqa: E402

OUT = os.environ["RESTORA_E2E_OUT"]
URL = os.environ["RESTORA_E2E_URL"]
DOWN_URL = os.environ["RESTORA_E2E_DOWN_URL"]
MODEL = os.environ["RESTORA_E2E_MODEL"]
results = {}

sys.path.insert(0, os.path.join(Gimp.directory(), "plug-ins", "restora"))
GimpUi.init("restora-dialog-test")
from restora_lib.common import task_cache  # noqa: E402
from restora_lib.common.errors import BackendUnavailable  # noqa: E402
from restora_lib.common.settings import Settings  # noqa: E402
from restora_lib.gimp import dialog as restora_dialog  # noqa: E402
from restora_lib.gimp.procedures import spec_for  # noqa: E402

CACHED = task_cache.load(os.path.join(Gimp.directory(), task_cache.FILE_NAME))


def screenshot(window, name):
    gdk_window = window.get_window()
    pixbuf = Gdk.pixbuf_get_from_window(gdk_window, 0, 0, gdk_window.get_width(),
                                        gdk_window.get_height())
    pixbuf.savev(os.path.join(os.path.dirname(OUT), name), "png", [], [])


def drive(dialog, steps):
    """Run `steps` (functions returning True to be called again) one after another."""
    queue = list(steps)
    ticks = {"n": 0}

    def tick():
        ticks["n"] += 1
        if not queue or ticks["n"] > 300:  # 30 s: never hang the test
            dialog.dialog.response(Gtk.ResponseType.CANCEL)
            return False
        if not queue[0]():
            queue.pop(0)
        return bool(queue)

    GLib.timeout_add(100, tick)


def field(dialog, name):
    return dialog.field(name).widget


def describe(dialog, name):
    """What a person sees of one option: its widget, range, default toggle, visibility."""
    item = dialog.field(name)
    out = {"widget": type(item.widget).__name__, "shown": item.box.get_visible(),
           "tooltip": item.widget.get_tooltip_text(), "label": item.label.get_text(),
           "advanced": item.box.get_parent() is dialog.advanced_grid}
    if isinstance(item.widget, (Gtk.SpinButton, Gtk.Scale)):
        adj = item.widget.get_adjustment()
        out.update(lower=adj.get_lower(), upper=adj.get_upper(),
                   step=round(adj.get_step_increment(), 6), digits=item.widget.get_digits())
    if item.default_toggle is not None:
        out["default_toggle"] = [item.default_toggle.get_label(),
                                 item.default_toggle.get_active()]
    return out


def case(name):
    def wrap(fn):
        try:
            results[name] = fn()
        except Exception:
            results[name] = {"crashed": traceback.format_exc()}
        return fn
    return wrap


@case("restore")
def restore_dialog():
    proc = Gimp.get_pdb().lookup_procedure("restora-restore-selection")
    config = proc.create_config()
    config.set_property("backend-url", URL)
    config.set_property("token", "secret")
    dialog = restora_dialog.RestoraDialog(proc, config,
                                          spec_for("restora-restore-selection", CACHED),
                                          Settings(), CACHED)
    seen = {}

    def connected():
        return not dialog.connection.connected  # again until connected

    def look():
        seen["status"] = dialog.status.get_text()
        seen["models"] = [row[0] for row in dialog.models.get_model()]
        seen["form"] = [f.param.name for f in dialog.form]
        seen["tasks"] = [row[0] for row in dialog.tasks.get_model()]
        seen["feather_auto"] = dialog.feather[1].get_active()
        token = dialog.dialog.get_widget("token", GimpUi.LabelEntry.__gtype__)
        seen["token_hidden"] = not token.get_entry().get_visibility()
        screenshot(dialog.dialog, "restore-dialog.png")
        dialog.models.set_active(seen["models"].index(MODEL))
        field(dialog, "overlap").set_value(16)
        dialog.feather[1].set_active(False)
        dialog.feather[0].set_value(6.5)
        dialog.dialog.response(Gtk.ResponseType.OK)
        return False

    drive(dialog, [connected, look])
    seen["ok"] = dialog.run()
    seen["model"] = config.get_property("model")
    seen["options"] = config.get_property("options")
    seen["feather"] = config.get_property("feather")
    seen["padding"] = config.get_property("padding")
    return seen


@case("upscale")
def upscale_dialog():
    proc = Gimp.get_pdb().lookup_procedure("restora-upscale-image")
    config = proc.create_config()
    config.set_property("backend-url", URL)
    dialog = restora_dialog.RestoraDialog(proc, config,
                                          spec_for("restora-upscale-image", CACHED),
                                          Settings(), CACHED)
    seen = {}

    def look():
        if not dialog.connection.connected:
            return True
        seen["form"] = [f.param.name for f in dialog.form]
        seen["scale"] = describe(dialog, "scale")
        seen["tile"] = describe(dialog, "tile")
        seen["alpha"] = [row[0] for row in field(dialog, "alpha").get_model()]
        screenshot(dialog.dialog, "upscale-dialog.png")
        dialog.dialog.response(Gtk.ResponseType.CANCEL)
        return False

    drive(dialog, [look])
    seen["ok"] = dialog.run()
    return seen


@case("backend_down")
def backend_down_dialog():
    proc = Gimp.get_pdb().lookup_procedure("restora-upscale-image")
    config = proc.create_config()
    config.set_property("backend-url", DOWN_URL)
    dialog = restora_dialog.RestoraDialog(proc, config,
                                          spec_for("restora-upscale-image", CACHED),
                                          Settings(), CACHED)
    seen = {}

    def look():
        seen["form_before_backend"] = [f.param.name for f in dialog.form]  # from the cache
        if dialog.connection.state.value in ("disconnected", "connecting") and \
                dialog.connection.error is None:
            return True
        seen["status"] = dialog.status.get_text()
        seen["models"] = [row[0] for row in dialog.models.get_model()]
        screenshot(dialog.dialog, "backend-down-dialog.png")
        dialog.dialog.response(Gtk.ResponseType.CANCEL)
        return False

    drive(dialog, [look])
    seen["ok"] = dialog.run()
    return seen


@case("denoise")
def denoise_dialog():
    proc = Gimp.get_pdb().lookup_procedure("restora-denoise")
    config = proc.create_config()
    config.set_property("backend-url", URL)
    dialog = restora_dialog.RestoraDialog(proc, config, spec_for("restora-denoise", CACHED),
                                          Settings(), CACHED)
    seen = {"title": dialog.dialog.get_title()}

    def look():
        if not dialog.connection.connected:
            return True
        seen["form"] = [f.param.name for f in dialog.form]
        seen["models"] = [row[0] for row in dialog.models.get_model()]
        for name in ("strength", "noise_level", "jpeg_quality", "tile"):
            seen[name] = describe(dialog, name)
        screenshot(dialog.dialog, "denoise-dialog.png")
        field(dialog, "strength").set_value(0.25)
        dialog.dialog.response(Gtk.ResponseType.OK)
        return False

    drive(dialog, [look])
    seen["ok"] = dialog.run()
    seen["options"] = config.get_property("options")
    return seen


@case("error_box")
def error_box():
    seen = {}

    def look():
        boxes = [w for w in Gtk.Window.list_toplevels()
                 if isinstance(w, Gtk.MessageDialog) and w.get_visible()]
        if not boxes:
            return True
        box = boxes[0]
        seen["title"] = box.get_title()
        seen["text"] = box.get_property("text")
        seen["secondary"] = box.get_property("secondary-text")
        screenshot(box, "error-box.png")
        box.response(Gtk.ResponseType.CLOSE)
        return False

    GLib.timeout_add(100, look)  # again while it returns True
    seen["shown"] = restora_dialog.show_error(BackendUnavailable.at("http://127.0.0.1:8765"))
    return seen


with open(OUT, "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)
