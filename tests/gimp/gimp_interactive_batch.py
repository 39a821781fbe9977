"""Batch Python run inside real GIMP 3 on an X display by tests/gimp/test_gimp_dialog.py: Restora's
procedures run INTERACTIVE, as from the menu. The plug-in shows its own dialog and message box;
the test answers them from the host with key presses. Records how each call ended. The backend's
address comes from RESTORA_URL, as Settings' would for a person.
"""

import json
import os

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

MODEL = os.environ["RESTORA_E2E_MODEL"]
results = {}


def make_image(width, height):
    image = Gimp.Image.new(width, height, Gimp.ImageBaseType.RGB)
    layer = Gimp.Layer.new(image, "Source", width, height, Gimp.ImageType.RGBA_IMAGE, 100.0,
                           Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, width, height), "R'G'B'A u8",
            bytes((x * 5 + y * 3) % 256 if x % 4 != 3 else 255
                  for y in range(height) for x in range(width * 4)))
    buf.flush()
    return image, layer


def interactive(image, layer):
    proc = Gimp.get_pdb().lookup_procedure("restora-restore-selection")
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    config.set_property("backend-url", "http://127.0.0.1:1")  # a script's: not for a person
    config.set_property("model", MODEL)
    result = proc.run(config)
    return {"status": result.index(0).value_nick,
            "layers": [la.get_name() for la in image.get_layers()]}


# 1. OK in the dialog: the job runs with GIMP's progress, the layer appears
image, layer = make_image(48, 40)
image.select_rectangle(Gimp.ChannelOps.REPLACE, 10, 8, 20, 16)
results["ok"] = interactive(image, layer)
image.delete()

# 2. nothing selected: after OK, the plug-in's own message box, then CANCEL (already told)
image, layer = make_image(16, 16)
results["error"] = interactive(image, layer)
image.delete()

# 3. Settings, with no image: its dialog, OK as it is; it stores what it showed
proc = Gimp.get_pdb().lookup_procedure("restora-settings")
config = proc.create_config()
config.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
result = proc.run(config)
with open(os.path.join(Gimp.directory(), "restora-settings.json")) as f:
    stored = json.loads(json.load(f)["backend_url"])
results["settings"] = {"status": result.index(0).value_nick, "url": result.index(1),
                       "stored": stored}

with open(os.environ["RESTORA_E2E_OUT"], "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)
