"""Batch Python run inside real GIMP 3 by tests/gimp/test_gimp_e2e.py: one slow upscale (tiny tiles
on a 256 x 256 image take the tiny model about half a minute) that the test ends by killing the
plug-in, as GIMP does when Cancel is pressed on its progress bar. Records how the call ended and
what the image holds afterwards.
"""

import json
import os
import time

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

SIZE = 256
image = Gimp.Image.new(SIZE, SIZE, Gimp.ImageBaseType.RGB)
layer = Gimp.Layer.new(image, "Source", SIZE, SIZE, Gimp.ImageType.RGBA_IMAGE, 100.0,
                       Gimp.LayerMode.NORMAL)
image.insert_layer(layer, None, 0)
buf = layer.get_buffer()
buf.set(Gegl.Rectangle.new(0, 0, SIZE, SIZE), "R'G'B'A u8",
        bytes((x * 7 + y) % 256 for y in range(SIZE) for x in range(SIZE * 4)))
buf.flush()

proc = Gimp.get_pdb().lookup_procedure("restora-upscale-image")
config = proc.create_config()
config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
config.set_property("image", image)
config.set_core_object_array("drawables", [layer])
config.set_property("model", os.environ["RESTORA_E2E_MODEL"])
config.set_property("options", '{"tile": 16, "overlap": 8}')
config.set_property("backend-url", os.environ["RESTORA_E2E_URL"])
started = time.monotonic()
result = proc.run(config)
status = result.index(0)
out = {
    "status": status.value_nick,
    "seconds": time.monotonic() - started,
    "error": str(result.index(1)) if status != Gimp.PDBStatusType.SUCCESS and result.length() > 1
    else None,
    "layers": [la.get_name() for la in image.get_layers()],
    "image_size": [image.get_width(), image.get_height()],
}
image.delete()
with open(os.environ["RESTORA_E2E_OUT"], "w") as f:
    json.dump(out, f)
