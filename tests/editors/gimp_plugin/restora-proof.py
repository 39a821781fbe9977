#!/usr/bin/env python3
"""Minimal GIMP 3.0 Python plug-in used by gimp_proof.sh.

Installed as $HOME/.config/GIMP/3.0/plug-ins/restora-proof/restora-proof
(the file name must equal its folder name and be executable; GIMP runs it
through the #! line). It registers one image procedure,
"restora-proof-invert", which:
  * reads the selection bounds (whole drawable if nothing is selected),
  * reads those pixels of the first drawable through a GEGL buffer,
  * writes their inverse into a new layer named "<label> x<scale>" placed at
    the selection, and
  * optionally GETs `url` (proves HTTP from a plug-in inside the root),
and returns a JSON summary string as its first return value.
"""

import json
import sys
import urllib.request

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

PROC = "restora-proof-invert"
FMT = "R'G'B'A u8"


def run(procedure, run_mode, image, drawables, config, data):
    label = config.get_property("label")
    scale = config.get_property("scale")
    strength = config.get_property("strength")
    url = config.get_property("url")
    if not drawables:
        return procedure.new_return_values(
            Gimp.PDBStatusType.CALLING_ERROR, GLib.Error("no drawable")
        )
    drawable = drawables[0]

    _ok, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    _, ox, oy = drawable.get_offsets()
    if not non_empty:
        x1, y1 = ox, oy
        x2, y2 = ox + drawable.get_width(), oy + drawable.get_height()
    w, h = x2 - x1, y2 - y1

    src = drawable.get_buffer()
    pixels = bytes(
        src.get(Gegl.Rectangle.new(x1 - ox, y1 - oy, w, h), 1.0, FMT, Gegl.AbyssPolicy.CLAMP)
    )
    inv = bytearray(255 - b for b in pixels)
    inv[3::4] = pixels[3::4]  # keep alpha

    layer = Gimp.Layer.new(
        image, f"{label} x{scale}", w, h, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL
    )
    image.insert_layer(layer, None, 0)  # parent None, position 0 = top
    layer.set_offsets(x1, y1)
    dst = layer.get_buffer()
    dst.set(Gegl.Rectangle.new(0, 0, w, h), FMT, bytes(inv))
    dst.flush()  # push the tiles to the GIMP core
    layer.update(0, 0, w, h)

    http = None
    if url:
        with urllib.request.urlopen(url, timeout=10) as r:
            http = r.read().decode()

    summary = json.dumps(
        {
            "proc": PROC,
            "run_mode": int(run_mode),
            "label": label,
            "scale": scale,
            "strength": strength,
            "selection": [x1, y1, x2, y2],
            "n_pixels_read": len(pixels) // 4,
            "new_layer": layer.get_name(),
            "http": http,
            "python": sys.version.split()[0],
        }
    )
    retval = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
    # new_return_values() already holds defaults for the declared return
    # values at index 1..; replace the "summary" slot.
    retval.remove(1)
    retval.insert(1, GObject.Value(GObject.TYPE_STRING, summary))
    return retval


class RestoraProof(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROC]

    def do_set_i18n(self, name):
        return False  # no translations

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("RGB*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label("Restora proof (invert selection)")
        procedure.add_menu_path("<Image>/Filters/Development")
        procedure.set_documentation(
            "Restora test plug-in", "Inverts the selection into a new layer", name
        )
        procedure.set_attribution("Restora", "Restora", "2025")
        rw = GObject.ParamFlags.READWRITE
        procedure.add_string_argument(
            "label", "Label", "Name prefix of the new layer", "restora", rw
        )
        procedure.add_int_argument("scale", "Scale", "Scale factor", 1, 8, 2, rw)
        procedure.add_double_argument("strength", "Strength", "Strength", 0.0, 1.0, 0.5, rw)
        procedure.add_string_argument("url", "URL", "Optional URL to GET", "", rw)
        procedure.add_string_return_value("summary", "Summary", "JSON summary", "", rw)
        return procedure


Gimp.main(RestoraProof.__gtype__, sys.argv)
