"""Proof that Python runs inside real Krita, headless, with pixel I/O.

Run (see krita_proof.sh):
    HOME=$(mktemp -d) PYTHONPATH=tests/editors QT_QPA_PLATFORM=offscreen \
        kritarunner -s krita_proof -f main [OUT.json]

kritarunner calls main(args) with the extra command-line words as a tuple.
Result: one JSON object, printed on a stdout line starting with
"KRITA_PROOF_JSON " and, if an OUT path is given, written to that file.

Facts this pins down (Krita 5.1.5):
  * Krita.instance().createDocument(w, h, name, "RGBA", "U8", "", dpi) makes a
    document with one paint layer "Background"; activeNode() is None without a
    window, so use doc.rootNode().childNodes().
  * Node.pixelData / setPixelData use the colour space's native byte order,
    which for 8-bit RGBA is B, G, R, A.
  * doc.projection(x, y, w, h) gives a QImage of the composited image
    (ordinary RGB semantics), after doc.refreshProjection() + waitForDone().
"""

import json
import sys

from krita import Krita, Selection

W, H = 64, 48


def bgra_from_rgba(rgba: bytes) -> bytes:
    out = bytearray(rgba)
    out[0::4], out[2::4] = rgba[2::4], rgba[0::4]
    return bytes(out)


def rect(node_or_sel):
    r = node_or_sel.bounds()
    return [r.x(), r.y(), r.width(), r.height()]


def main(args):
    out_path = args[0] if args else None
    app = Krita.instance()
    doc = app.createDocument(W, H, "restora-proof", "RGBA", "U8", "", 72.0)
    doc.setBatchmode(True)
    root = doc.rootNode()
    base = root.childNodes()[0]

    # 1. Write an RGBA gradient into the Background layer (converted to BGRA).
    rgba = bytearray()
    for y in range(H):
        for x in range(W):
            rgba += bytes((x * 4 % 256, y * 5 % 256, 200, 255))
    base.setPixelData(bgra_from_rgba(bytes(rgba)), 0, 0, W, H)

    # 2. A second paint layer with an opaque pure-red 20x16 patch at (10, 8).
    top = doc.createNode("Restora result", "paintlayer")
    root.addChildNode(top, None)  # None = on top of the stack
    px, py, pw, ph = 10, 8, 20, 16
    red_rgba = bytes((255, 0, 0, 255)) * (pw * ph)
    top.setPixelData(bgra_from_rgba(red_rgba), px, py, pw, ph)

    # 3. Selection round trip (a plug-in may work on the selection only).
    sel = Selection()
    sel.select(4, 6, 30, 20, 255)
    doc.setSelection(sel)
    dsel = doc.selection()

    doc.refreshProjection()
    doc.waitForDone()

    # 4. Read back.
    back_base = bytes(base.pixelData(0, 0, W, H))
    back_top = bytes(top.pixelData(px, py, pw, ph))
    raw_first = list(back_top[:4])  # native bytes of a red pixel
    qimg = doc.projection(0, 0, W, H)
    c_in = qimg.pixelColor(px + 1, py + 1)  # inside the red patch
    c_out = qimg.pixelColor(0, 0)  # gradient pixel (0, 0)

    result = {
        "krita_version": app.version(),
        "document": [doc.width(), doc.height(), doc.colorModel(), doc.colorDepth()],
        "layers": [
            {"name": n.name(), "type": n.type(), "bounds": rect(n)} for n in root.childNodes()
        ],
        "selection": [dsel.x(), dsel.y(), dsel.width(), dsel.height()] if dsel else None,
        "base_roundtrip_ok": back_base == bgra_from_rgba(bytes(rgba)),
        "top_roundtrip_ok": back_top == bgra_from_rgba(red_rgba),
        "red_pixel_native_bytes": raw_first,  # expect [0, 0, 255, 255] = BGRA
        "projection_inside_patch_rgba": [c_in.red(), c_in.green(), c_in.blue(), c_in.alpha()],
        "projection_at_0_0_rgba": [c_out.red(), c_out.green(), c_out.blue(), c_out.alpha()],
        "python": sys.version.split()[0],
    }
    doc.close()
    text = json.dumps(result, sort_keys=True)
    print("KRITA_PROOF_JSON " + text, flush=True)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text + "\n")
    return "ok"
