"""Batch Python run inside real GIMP 3 on an X display (Xvfb) by tests/gimp/test_gimp_dialog.py.

Builds Restora's real dialogs for real procedures (from the installed plug-in's restora_lib),
drives them from GLib timeouts as a person would (wait for the backend, pick a model, type an
option, press OK), and records what they showed, read back from the live widgets, and what
landed in the procedure's config or the settings file. It checks each dialog's layout on the
screen (every control inside the window and the screen, none smaller than it needs) and saves
screenshots next to the JSON.
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
LAUNCHER_HOME = os.environ["RESTORA_E2E_LAUNCHER_HOME"]
DOWNLOAD_URL = os.environ["RESTORA_E2E_DOWNLOAD_URL"]
results = {}

sys.path.insert(0, os.path.join(Gimp.directory(), "plug-ins", "restora"))
GimpUi.init("restora-dialog-test")
from restora_lib.common import task_cache  # noqa: E402
from restora_lib.common.errors import BackendUnavailable  # noqa: E402
from restora_lib.common.settings import Settings  # noqa: E402
from restora_lib.gimp import dialog as restora_dialog  # noqa: E402
from restora_lib.gimp import settings_dialog, status, ui  # noqa: E402
from restora_lib.gimp.procedures import spec_for  # noqa: E402

CACHED = task_cache.load(os.path.join(Gimp.directory(), task_cache.FILE_NAME))
CONNECTED = Settings(backend_url=URL)


def screenshot(window, name):
    gdk_window = window.get_window()
    pixbuf = Gdk.pixbuf_get_from_window(gdk_window, 0, 0, gdk_window.get_width(),
                                        gdk_window.get_height())
    pixbuf.savev(os.path.join(os.path.dirname(OUT), name), "png", [], [])


def widgets(widget):
    """`widget` and everything a person can see inside it, internal children too (a
    dialog's buttons); a folded expander's content is not seen (GTK keeps it mapped)."""
    found = [widget]
    if isinstance(widget, Gtk.Expander) and not widget.get_expanded():
        label = widget.get_label_widget()
        return found + (widgets(label) if label is not None else [])
    if isinstance(widget, Gtk.Container):
        children = []
        widget.forall(children.append)
        for child in children:
            found += widgets(child)
    return found


def layout(window):
    """Where the window is on the screen, and every shown control that lies outside the
    window or the screen, or got less room than it asks for (so it is cut off)."""
    gdk_window = window.get_window()
    _, wx, wy = gdk_window.get_origin()
    width, height = gdk_window.get_width(), gdk_window.get_height()
    monitor = Gdk.Display.get_default().get_monitor_at_window(gdk_window).get_geometry()
    problems = []
    if wx < monitor.x or wy < monitor.y or wx + width > monitor.x + monitor.width \
            or wy + height > monitor.y + monitor.height:
        problems.append(f"window {width}x{height}+{wx}+{wy} is not inside the screen "
                        f"{monitor.width}x{monitor.height}")
    checked = 0
    for widget in widgets(window)[1:]:
        if not widget.get_mapped():
            continue
        checked += 1
        name = f"{type(widget).__name__}({_text_of(widget)})"
        found = widget.translate_coordinates(window, 0, 0)
        alloc = widget.get_allocation()
        if not found:
            problems.append(f"{name}: not placed in the window")
            continue
        x, y = found[-2], found[-1]
        if x < 0 or y < 0 or x + alloc.width > width or y + alloc.height > height:
            problems.append(f"{name}: {alloc.width}x{alloc.height}+{x}+{y} outside the "
                            f"window {width}x{height}")
        need_w, need_h = minimum_size(widget, alloc)
        if alloc.width < need_w or alloc.height < need_h:
            problems.append(f"{name}: {alloc.width}x{alloc.height}, needs {need_w}x{need_h}")
    return {"window": [wx, wy, width, height],
            "screen": [monitor.x, monitor.y, monitor.width, monitor.height],
            "checked": checked, "problems": problems}


def minimum_size(widget, alloc):
    """The least room the widget needs at the size it got (a wrapping label needs more
    height when narrower), less its margins and border: GTK 3's requests count them, its
    allocations (GtkContainer's handle_border_width) do not."""
    mode = widget.get_request_mode()
    if mode == Gtk.SizeRequestMode.HEIGHT_FOR_WIDTH:
        need_w = widget.get_preferred_width()[0]
        need_h = widget.get_preferred_height_for_width(max(alloc.width, need_w))[0]
    elif mode == Gtk.SizeRequestMode.WIDTH_FOR_HEIGHT:
        need_h = widget.get_preferred_height()[0]
        need_w = widget.get_preferred_width_for_height(max(alloc.height, need_h))[0]
    else:
        need_w, need_h = widget.get_preferred_width()[0], widget.get_preferred_height()[0]
    border = 2 * widget.get_border_width() if isinstance(widget, Gtk.Container) else 0
    return (need_w - widget.get_margin_start() - widget.get_margin_end() - border,
            need_h - widget.get_margin_top() - widget.get_margin_bottom() - border)


def settled(window):
    """A step that waits until GTK has laid the window out again after a change."""
    state = {"n": 0}

    def step():
        state["n"] += 1
        while Gtk.events_pending():
            Gtk.main_iteration()
        return state["n"] < 3 or window.get_window() is None
    step.__name__ = "settled"
    return step


def _text_of(widget):
    for getter in ("get_label", "get_text", "get_title"):
        try:
            value = getattr(widget, getter)()
        except (AttributeError, TypeError):
            continue
        if isinstance(value, str) and value:
            return value[:30]
    return ""


def shown_texts(window):
    """Every text a person can read in the window: labels, entries, buttons, tooltips."""
    texts = []
    for widget in widgets(window):
        if not widget.get_mapped():
            continue
        for getter in ("get_label", "get_text", "get_tooltip_text", "get_placeholder_text"):
            try:
                value = getattr(widget, getter)()
            except (AttributeError, TypeError):  # not a widget with this text
                continue
            if isinstance(value, str) and value:
                texts.append(value)
    return texts


def entries(window):
    return [w for w in widgets(window) if isinstance(w, Gtk.Entry)
            and not isinstance(w, Gtk.SpinButton) and w.get_mapped()]


def drive(dialog, steps, seen):
    """Run `steps` (functions returning True to be called again) one after another; a step
    that fails ends the dialog and is recorded in `seen`."""
    queue = list(steps)
    ticks = {"n": 0}

    def tick():
        ticks["n"] += 1
        if not queue or ticks["n"] > 300:  # 30 s: never hang the test
            seen.setdefault("timed_out_in", queue[0].__name__ if queue else "")
            dialog.response(Gtk.ResponseType.CANCEL)
            return False
        try:
            again = queue[0]()
        except Exception:
            seen["crashed"] = traceback.format_exc()
            dialog.response(Gtk.ResponseType.CANCEL)
            return False
        if not again:
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
           "advanced": item.box.get_parent() is dialog.advanced_grid,
           "unit": item.unit.get_text() if item.unit is not None else ""}
    if isinstance(item.widget, Gtk.SpinButton):
        adj = item.widget.get_adjustment()
        out.update(lower=adj.get_lower(), upper=adj.get_upper(),
                   step=round(adj.get_step_increment(), 6), digits=item.widget.get_digits(),
                   text=item.widget.get_text())
    if isinstance(item.widget, Gtk.ComboBoxText):
        out["items"] = [row[0] for row in item.widget.get_model()]
    if item.default_toggle is not None:
        out["default_toggle"] = [item.default_toggle.get_label(),
                                 item.default_toggle.get_active()]
    return out


def task_dialog(name, settings=CONNECTED, layers=None, values=None):
    """The dialog of a procedure on an image whose other layers are `layers`, its config
    holding `values` first (as GIMP remembers them from a last run)."""
    proc = Gimp.get_pdb().lookup_procedure(name)
    config = proc.create_config()
    for key, value in (values or {}).items():
        config.set_property(key, value)
    return restora_dialog.RestoraDialog(proc, config, spec_for(name, CACHED), settings,
                                        CACHED, layers=layers), config


def connected(dialog):
    return lambda: not dialog.connection.connected  # again until connected


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
    dialog, config = task_dialog("restora-restore-selection")
    seen = {}

    def look():
        seen["status"] = dialog.backend.label.get_text()
        seen["models"] = [row[0] for row in dialog.models.get_model()]
        seen["form"] = [f.param.name for f in dialog.form]
        seen["tasks"] = [row[0] for row in dialog.tasks.get_model()]
        seen["feather_auto"] = dialog.feather[1].get_active()
        seen["feather_text"] = dialog.feather[0].get_text()
        seen["entries"] = [e.get_text() for e in entries(dialog.dialog)]
        screenshot(dialog.dialog, "restore-dialog.png")
        seen["model_ids"] = [row[1] for row in dialog.models.get_model()]
        dialog.models.set_active_id(MODEL)
        field(dialog, "overlap").set_value(16)
        dialog.feather[1].set_active(False)
        dialog.feather[0].set_value(6.5)
        dialog.dialog.response(Gtk.ResponseType.OK)
        return False

    drive(dialog.dialog, [connected(dialog), look], seen)
    seen["ok"] = dialog.run()
    for name in ("model", "options", "feather", "padding", "backend-url", "token"):
        seen[name] = config.get_property(name)
    return seen


@case("upscale")
def upscale_dialog():
    dialog, _config = task_dialog("restora-upscale-image")
    seen = {"title": dialog.dialog.get_title()}

    def look():
        seen["status"] = dialog.backend.label.get_text()
        seen["start_shown"] = dialog.backend.start.get_visible()
        seen["form"] = [f.param.name for f in dialog.form]
        for name in ("scale", "width", "tile", "overlap", "alpha"):
            seen[name] = describe(dialog, name)
        seen["entries"] = [e.get_text() for e in entries(dialog.dialog)]
        seen["texts"] = shown_texts(dialog.dialog)
        new_image = dialog.dialog.get_widget("new-image", Gtk.CheckButton.__gtype__)
        seen["new_image_shown"] = new_image.get_visible()
        seen["layout"] = layout(dialog.dialog)
        screenshot(dialog.dialog, "gimp-upscale-dialog.png")
        dialog.advanced.set_expanded(True)
        return False

    def look_advanced():
        seen["layout_advanced"] = layout(dialog.dialog)
        seen["edge_shown"] = dialog.edge_grid.get_mapped()
        screenshot(dialog.dialog, "upscale-dialog-advanced.png")
        dialog.dialog.response(Gtk.ResponseType.CANCEL)
        return False

    drive(dialog.dialog, [connected(dialog), settled(dialog.dialog), look,
                          settled(dialog.dialog), look_advanced], seen)
    seen["ok"] = dialog.run()
    return seen


@case("denoise")
def denoise_dialog():
    dialog, config = task_dialog("restora-denoise")
    seen = {"title": dialog.dialog.get_title()}

    def look():
        seen["form"] = [f.param.name for f in dialog.form]
        seen["models"] = [row[0] for row in dialog.models.get_model()]
        for name in ("strength", "noise_level", "jpeg_quality", "tile"):
            seen[name] = describe(dialog, name)
        new_image = dialog.dialog.get_widget("new-image", Gtk.CheckButton.__gtype__)
        seen["new_image_shown"] = new_image.get_visible()
        screenshot(dialog.dialog, "denoise-dialog.png")
        field(dialog, "strength").set_value(0.25)
        dialog.dialog.response(Gtk.ResponseType.OK)
        return False

    drive(dialog.dialog, [connected(dialog), look], seen)
    seen["ok"] = dialog.run()
    seen["options"] = config.get_property("options")
    return seen


@case("faces")
def faces_dialog():
    dialog, config = task_dialog("restora-face-restore")
    seen = {}

    def look():
        seen["models"] = [row[0] for row in dialog.models.get_model()]
        seen["upscale_model"] = describe(dialog, "upscale_model")
        seen["fidelity_default_model"] = describe(dialog, "fidelity")["shown"]
        dialog.models.set_active_id("random-restoreformer")
        seen["fidelity_restoreformer"] = describe(dialog, "fidelity")["shown"]
        dialog.models.set_active_id("random-codeformer")
        seen["fidelity_codeformer"] = describe(dialog, "fidelity")["shown"]
        seen["strength"] = describe(dialog, "strength")
        field(dialog, "upscale_model").set_active_id(MODEL)
        screenshot(dialog.dialog, "faces-dialog.png")
        dialog.dialog.response(Gtk.ResponseType.OK)
        return False

    drive(dialog.dialog, [connected(dialog), look], seen)
    seen["ok"] = dialog.run()
    seen["model"] = config.get_property("model")
    seen["options"] = config.get_property("options")
    return seen


@case("needs_model")
def needs_model_dialog():
    dialog, _config = task_dialog("restora-colorize")
    seen = {}

    def look():
        seen["missing_shown"] = dialog.missing.get_visible()
        seen["missing"] = [t for t in shown_texts(dialog.missing) if t]
        seen["model_row_shown"] = dialog.models.get_visible()
        ok = dialog.dialog.get_widget_for_response(Gtk.ResponseType.OK)
        seen["ok_sensitive"] = ok.get_sensitive()
        screenshot(dialog.dialog, "needs-model-dialog.png")
        dialog.dialog.response(Gtk.ResponseType.CANCEL)
        return False

    drive(dialog.dialog, [connected(dialog), look], seen)
    seen["ok"] = dialog.run()
    return seen


@case("edit_references")
def edit_references_dialog():
    """Edit by instruction on an image with two other layers: a dropdown per reference image
    right after the instruction; a remembered layer the image lacks stays listed, marked."""
    dialog, config = task_dialog("restora-edit", layers=["Hat", "Scarf"],
                                 values={"references": '{"reference_2": "Gone"}'})
    seen = {}

    def look():
        grid = dialog.options_grid
        seen["rows"] = [_text_of(grid.get_child_at(0, row)) for row in range(4)
                        if grid.get_child_at(0, row) is not None]
        seen["items"] = {name: [row[0] for row in combo.get_model()]
                         for name, combo in dialog.references.items()}
        seen["chosen"] = {name: combo.get_active_id() or ""
                          for name, combo in dialog.references.items()}
        seen["tooltip"] = dialog.references["reference_1"].get_tooltip_text()
        seen["layout"] = layout(dialog.dialog)
        screenshot(dialog.dialog, "edit-dialog.png")
        dialog.references["reference_1"].set_active_id("Hat")
        dialog.dialog.response(Gtk.ResponseType.OK)
        return False

    drive(dialog.dialog, [connected(dialog), settled(dialog.dialog), look], seen)
    seen["ok"] = dialog.run()
    seen["references"] = config.get_property("references")
    return seen


@case("download")
def download_dialog():
    """Upscale on a backend without an upscale model: the dialog offers the catalog's
    recommended model; Download has the backend fetch it with a progress bar; then the model
    list has it and OK works; a preset sets options and picks a model by its traits."""
    dialog, config = task_dialog("restora-upscale-image", Settings(backend_url=DOWNLOAD_URL))
    seen = {"fractions": []}
    ok = dialog.dialog.get_widget_for_response(Gtk.ResponseType.OK)

    def shown():  # again until the row about the missing model is on the screen
        return not any(isinstance(w, Gtk.Button) and w.get_mapped()
                       for w in widgets(dialog.missing))

    def look():
        seen["missing"] = [t for t in shown_texts(dialog.missing) if t]
        seen["buttons"] = [w.get_label() for w in widgets(dialog.missing)
                           if isinstance(w, Gtk.Button) and w.get_mapped()]
        seen["ok_before"] = ok.get_sensitive()
        seen["started"] = dialog._download_clicked()
        return False

    def downloading():
        if dialog.download_bar is not None and dialog.download_bar.get_visible():
            seen["fractions"].append(dialog.download_bar.get_fraction())
        catalog = dialog.catalog
        return not (dialog.download is not None and dialog.download.done and catalog
                    is not None and catalog.models_for("upscale"))

    def after():
        seen["status"] = dialog.download.outcome.value
        seen["models"] = [row[0] for row in dialog.models.get_model()]
        seen["ok_after"] = ok.get_sensitive()
        seen["missing_after"] = dialog.missing.get_visible()
        seen["presets"] = [row[0] for row in dialog.presets.get_model()]
        dialog.presets.set_active_id("fast")
        seen["preset_back"] = dialog.presets.get_active_id() == ""
        seen["model_after_preset"] = config.get_property("model")
        seen["options_after_preset"] = config.get_property("options")
        seen["alpha_after_preset"] = dialog.field("alpha").value()
        dialog.dialog.response(Gtk.ResponseType.CANCEL)
        return False

    drive(dialog.dialog, [connected(dialog), shown, look, downloading, after], seen)
    seen["ok"] = dialog.run()
    return seen


@case("backend_down")
def backend_down_dialog():
    dialog, _config = task_dialog("restora-upscale-image", Settings(backend_url=DOWN_URL))
    seen = {}

    def look():
        seen["form_before_backend"] = [f.param.name for f in dialog.form]  # from the cache
        if dialog.connection.state.value in ("disconnected", "connecting") and \
                dialog.connection.error is None:
            return True
        seen["status"] = dialog.backend.label.get_text()
        seen["start_shown"] = dialog.backend.start.get_visible()
        seen["models"] = [row[0] for row in dialog.models.get_model()]
        screenshot(dialog.dialog, "backend-down-dialog.png")
        dialog.dialog.response(Gtk.ResponseType.CANCEL)
        return False

    drive(dialog.dialog, [look], seen)
    seen["ok"] = dialog.run()
    return seen


@case("start_backend")
def start_backend_dialog():
    """With a backend recorded by the installer (one that stops at once), the dialog offers
    Start backend, and says in words what came of it."""
    os.environ["RESTORA_HOME"] = LAUNCHER_HOME
    try:
        dialog, _config = task_dialog("restora-upscale-image", Settings(backend_url=DOWN_URL))
        seen = {}

        def down():
            return dialog.connection.error is None  # again until it has failed once

        def press():
            seen["status"] = dialog.backend.label.get_text()
            seen["start_shown"] = dialog.backend.start.get_visible()
            dialog.backend.start.clicked()
            return False

        def started():
            if dialog.backend.launcher.busy or dialog.backend.start_error is None:
                return True
            seen["after"] = dialog.backend.label.get_text()
            screenshot(dialog.dialog, "start-backend-failed.png")
            dialog.dialog.response(Gtk.ResponseType.CANCEL)
            return False

        drive(dialog.dialog, [down, press, started], seen)
        seen["ok"] = dialog.run()
        return seen
    finally:
        del os.environ["RESTORA_HOME"]


@case("settings")
def settings_dialog_case():
    # as a person has it: no RESTORA_URL (the note about it is for scripts and tests)
    env_url = os.environ.pop("RESTORA_URL", None)
    try:
        box = settings_dialog.SettingsDialog(Settings(backend_url=URL, token="secret"))
    finally:
        if env_url is not None:
            os.environ["RESTORA_URL"] = env_url
    seen = {"title": box.dialog.get_title()}

    def unfocus():  # the screenshot without GTK's select-all in the first field
        box.dialog.get_widget_for_response(Gtk.ResponseType.OK).grab_focus()
        box.address.select_region(0, 0)
        return False

    def look():
        seen["status"] = box.backend.label.get_text()
        seen["address"] = box.address.get_text()
        seen["token_hidden"] = not box.token.get_visibility()
        seen["token"] = box.token.get_text()
        seen["check_shown"] = box.backend.check.get_visible()
        seen["layout"] = layout(box.dialog)
        seen["texts"] = shown_texts(box.dialog)
        screenshot(box.dialog, "gimp-settings.png")
        box.address.set_text(DOWN_URL)
        box.backend.check.clicked()
        return False

    def checked_down():
        if box.backend.connection.error is None:
            return True
        seen["status_down"] = box.backend.label.get_text()
        box.address.set_text("not an address!")
        box.dialog.response(Gtk.ResponseType.OK)
        return False

    def refused():
        seen["error"] = box.error.get_text()
        seen["error_shown"] = box.error.get_visible()
        box.address.set_text("127.0.0.1:9999")
        box.token.set_text("new-token")
        box.dialog.response(Gtk.ResponseType.OK)
        return False

    drive(box.dialog, [connected(box.backend), unfocus, settled(box.dialog), look,
                       checked_down, refused], seen)
    saved = box.run()
    seen["saved"] = [saved.backend_url, saved.token] if saved is not None else None
    return seen


@case("settings_procedure")
def settings_procedure():
    """Settings from a script: the arguments given are stored, for every procedure."""
    proc = Gimp.get_pdb().lookup_procedure("restora-settings")
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("backend-url", URL)
    config.set_property("token", "from-a-script")
    result = proc.run(config)
    seen = {"status": result.index(0).value_nick, "url": result.index(1),
            "line": result.index(2), "menu_label": proc.get_menu_label(),
            "menu_paths": proc.get_menu_paths(), "image_types": proc.get_image_types()}
    with open(os.path.join(Gimp.directory(), "restora-settings.json")) as f:
        seen["file"] = json.load(f)
    config = proc.create_config()  # again without a token: the stored one stays
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("token", "")
    proc.run(config)
    with open(os.path.join(Gimp.directory(), "restora-settings.json")) as f:
        seen["file_after"] = json.load(f)
    return seen


@case("layout_check")
def layout_check():
    """The layout check itself sees what it should: a control outside its window, one cut
    off (a pane narrower than its label: GTK shifts the label out of the window), a window
    partly off the screen."""
    window = Gtk.Window(title="Layout check")
    box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL)
    layout_area = Gtk.Layout()
    layout_area.set_size_request(200, 40)
    layout_area.put(Gtk.Button(label="Far away"), 600, 4)
    paned = Gtk.Paned()
    paned.pack1(Gtk.Label(label="A label much wider than its pane"), False, True)
    paned.pack2(Gtk.Label(label="x"), True, True)
    paned.set_position(20)
    box.pack_start(layout_area, False, False, 0)
    box.pack_start(paned, False, False, 0)
    window.add(box)
    window.show_all()
    window.move(1200, 700)
    for _ in range(40):
        while Gtk.events_pending():
            Gtk.main_iteration()
        GLib.usleep(10000)
    found = layout(window)
    window.destroy()
    return found


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
    words = status.for_artists(BackendUnavailable.at("http://127.0.0.1:8765"),
                               "http://127.0.0.1:8765", False)
    seen["shown"] = ui.show_error(words)
    return seen


with open(OUT, "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)
