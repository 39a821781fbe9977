"""Batch-mode Python run inside real GIMP 3 (python-fu-eval), headless.

Run by gimp_proof.sh as:
    gimp_run.sh ROOT env RESTORA_PROOF_URL=... RESTORA_PROOF_OUT=... \
        gimp-console-3.0 -i -n --batch-interpreter python-fu-eval -b - --quit \
        < gimp_proof_batch.py
python-eval exec()s this text with Gimp, Gegl, GObject, GLib, Gio already
imported; the imports below make it standalone-readable.

Proves: image + layer creation, pixel write/read through GEGL buffers,
rectangle selection + Gimp.Selection.bounds, HTTP GET to a server on the
host's 127.0.0.1 from inside the root, and calling a user plug-in
procedure with arguments via the PDB. Writes one JSON object to
$RESTORA_PROOF_OUT and prints it after "GIMP_PROOF_JSON ".
"""

import json
import os
import sys
import urllib.request

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Babl", "0.1")
from gi.repository import Babl, Gegl, Gimp  # noqa: E402

W, H = 64, 48
FMT = "R'G'B'A u8"
url = os.environ.get("RESTORA_PROOF_URL", "")
out_path = os.environ["RESTORA_PROOF_OUT"]
res = {"gimp_version": Gimp.version(), "python": sys.version.split()[0]}

# 1. Image with one RGBA layer.
image = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
layer = Gimp.Layer.new(
    image, "Background", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL
)
image.insert_layer(layer, None, 0)

# 2. Write a gradient through a GEGL buffer, flush, read back.
data = bytearray()
for y in range(H):
    for x in range(W):
        data += bytes((x * 4 % 256, y * 5 % 256, 200, 255))
buf = layer.get_buffer()
buf.set(Gegl.Rectangle.new(0, 0, W, H), FMT, bytes(data))
buf.flush()
layer.update(0, 0, W, H)
back = bytes(
    layer.get_buffer().get(Gegl.Rectangle.new(0, 0, W, H), 1.0, FMT, Gegl.AbyssPolicy.CLAMP)
)
res["layer_format"] = Babl.format_get_encoding(layer.get_format())
res["pixel_roundtrip_ok"] = back == bytes(data)

# 3. Rectangle selection -> bounds (x2/y2 exclusive).
image.select_rectangle(Gimp.ChannelOps.REPLACE, 10, 8, 20, 16)
res["selection_bounds"] = list(Gimp.Selection.bounds(image))

# 4. HTTP to the host.
if url:
    with urllib.request.urlopen(url + "/ping.txt", timeout=10) as r:
        res["http_from_batch"] = r.read().decode().strip()

# 5. Call the user plug-in procedure with arguments.
pdb = Gimp.get_pdb()
proc = pdb.lookup_procedure("restora-proof-invert")
res["plugin_found"] = proc is not None
if proc is not None:
    res["plugin_args"] = [p.name for p in proc.get_arguments()]
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    config.set_property("label", "upscaled")
    config.set_property("scale", 4)
    config.set_property("strength", 0.75)
    config.set_property("url", url + "/ping.txt" if url else "")
    result = proc.run(config)
    status = result.index(0)
    res["plugin_status"] = status.value_nick
    if status == Gimp.PDBStatusType.SUCCESS:
        res["plugin_summary"] = json.loads(result.index(1))
    else:
        res["plugin_error"] = str(result.index(1)) if result.length() > 1 else None

    # The plug-in's new layer, read back from batch (crossed two processes).
    layers = image.get_layers()
    res["layers"] = []
    for lay in layers:
        _, ox, oy = lay.get_offsets()
        res["layers"].append(
            {"name": lay.get_name(), "bounds": [ox, oy, lay.get_width(), lay.get_height()]}
        )
    top = layers[0]
    tw, th = top.get_width(), top.get_height()
    got = bytes(
        top.get_buffer().get(Gegl.Rectangle.new(0, 0, tw, th), 1.0, FMT, Gegl.AbyssPolicy.CLAMP)
    )
    src = bytes(
        layer.get_buffer().get(Gegl.Rectangle.new(10, 8, tw, th), 1.0, FMT, Gegl.AbyssPolicy.CLAMP)
    )
    want = bytearray(255 - b for b in src)
    want[3::4] = src[3::4]
    res["plugin_pixels_ok"] = got == bytes(want)

image.delete()
with open(out_path, "w") as f:
    json.dump(res, f, sort_keys=True)
print("GIMP_PROOF_JSON " + json.dumps(res, sort_keys=True), flush=True)
