"""Batch Python run inside real GIMP 3 (python-fu-eval) by tests/gimp/test_gimp_e2e.py.

It calls Restora's installed procedures non-interactively, with arguments, on images it makes,
and writes what it finds to $RESTORA_E2E_OUT as JSON for the test to check on the host. Every
case catches its own failure, so one broken case does not hide the others.

Env: RESTORA_E2E_URL (the backend), RESTORA_E2E_DOWN_URL (a port nobody listens on),
RESTORA_E2E_MODEL, RESTORA_E2E_OUT (a path inside the root).
"""

import json
import os
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Babl", "0.1")
from gi.repository import Babl, Gegl, Gimp  # noqa: E402

URL = os.environ["RESTORA_E2E_URL"]
DOWN_URL = os.environ["RESTORA_E2E_DOWN_URL"]
MODEL = os.environ["RESTORA_E2E_MODEL"]
OUT = os.environ["RESTORA_E2E_OUT"]
FACE_URL = os.environ["RESTORA_E2E_FACE_URL"]
FACE_MODEL = os.environ["RESTORA_E2E_FACE_MODEL"]
PHOTO = os.environ["RESTORA_E2E_PHOTO"]  # 512x512 RGBA 8-bit, raw
# a tiny SD 1.5 checkpoint, a tiny x2 upscaler and a tiny HYPIR LoRA on its SD 2.1 base
DIFFUSION_URL = os.environ["RESTORA_E2E_DIFFUSION_URL"]
EDIT_URL = os.environ["RESTORA_E2E_EDIT_URL"]  # a tiny InstructPix2Pix
EDIT_PLUS_URL = os.environ["RESTORA_E2E_EDIT_PLUS_URL"]  # a tiny Qwen-Image-Edit-2509
OLD_PHOTO_URL = os.environ["RESTORA_E2E_OLD_PHOTO_URL"]  # LaMa, DnCNN, DDColor
RGBA8, RGBA16, GRAYA8 = "R'G'B'A u8", "R'G'B'A u16", "Y'A u8"
results = {"gimp_version": Gimp.version()}


def pattern(width, height, channels, depth):
    """A checkerboard with gradients, opaque; 16-bit values use their low byte too."""
    top = 65535 if depth == 16 else 255
    out = bytearray()
    for y in range(height):
        for x in range(width):
            check = ((x // 6 + y // 6) % 2) * 0.6 + 0.2
            colour = [check, x / max(1, width - 1), y / max(1, height - 1)]
            if channels == 2:
                colour = [0.5 * colour[0] + 0.3 * colour[1] + 0.2 * colour[2]]
            for value in colour:
                v = round(value * top) if depth == 8 else round(value * 60000 + (x * 7 + y) % 97)
                out += v.to_bytes(depth // 8, "little")
            out += top.to_bytes(depth // 8, "little")
    return bytes(out)


def make_image(width, height, base=Gimp.ImageBaseType.RGB, precision=Gimp.Precision.U8_NON_LINEAR,
               fmt=RGBA8, depth=8):
    image = Gimp.Image.new_with_precision(width, height, base, precision)
    gray = base == Gimp.ImageBaseType.GRAY
    kind = Gimp.ImageType.GRAYA_IMAGE if gray else Gimp.ImageType.RGBA_IMAGE
    layer = Gimp.Layer.new(image, "Source", width, height, kind, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    channels = 2 if gray else 4
    data = pattern(width, height, channels, depth)
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, width, height), fmt, data)
    buf.flush()
    return image, layer, data


def read(drawable, fmt, x=0, y=0, w=None, h=None):
    w = drawable.get_width() if w is None else w
    h = drawable.get_height() if h is None else h
    return bytes(drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt,
                                           Gegl.AbyssPolicy.NONE))


def call(name, image, drawable, **args):
    proc = Gimp.get_pdb().lookup_procedure(name)
    if proc is None:
        return {"status": "missing"}
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [drawable])
    for key, value in args.items():
        config.set_property(key.replace("_", "-"), value)
    result = proc.run(config)
    status = result.index(0)
    out = {"status": status.value_nick}
    if status == Gimp.PDBStatusType.SUCCESS:
        layer, result_image = result.index(1), result.index(2)
        out["layer"] = layer.get_name() if layer is not None else None
        out["layer_id"] = layer.get_id() if layer is not None else None
        out["result_image_id"] = result_image.get_id() if result_image is not None else None
    elif result.length() > 1:
        out["error"] = str(result.index(1))
    return out


def layers_of(image):
    found = []
    for layer in image.get_layers():
        _, ox, oy = layer.get_offsets()
        found.append({"name": layer.get_name(), "x": ox, "y": oy, "width": layer.get_width(),
                      "height": layer.get_height(), "id": layer.get_id(),
                      "format": Babl.format_get_encoding(layer.get_format())})
    return found


def alpha_stats(layer, fmt, box, channels=4, size=1):
    """Alpha of `layer` outside and inside `box` (canvas x, y, w, h), as the layer covers it."""
    _, ox, oy = layer.get_offsets()
    w, h = layer.get_width(), layer.get_height()
    data = read(layer, fmt)
    step = channels * size
    outside_max, inside_min, inside_sum, inside_n, colour_outside = 0, None, 0, 0, 0
    bx, by, bw, bh = box
    for y in range(h):
        for x in range(w):
            i = (y * w + x) * step
            alpha = int.from_bytes(data[i + step - size:i + step], "little")
            cx, cy = x + ox, y + oy
            if bx <= cx < bx + bw and by <= cy < by + bh:
                inside_min = alpha if inside_min is None else min(inside_min, alpha)
                inside_sum += alpha
                inside_n += 1
            else:
                outside_max = max(outside_max, alpha)
                if alpha == 0:
                    colour_outside = max(colour_outside, max(data[i:i + step - size] or b"\0"))
    center = (by + bh // 2 - oy) * w + (bx + bw // 2 - ox)
    center_alpha = int.from_bytes(data[center * step + step - size:center * step + step], "little")
    return {"outside_max": outside_max, "inside_min": inside_min,
            "inside_mean": inside_sum / max(1, inside_n), "center": center_alpha,
            "colour_where_transparent_max": colour_outside}


def mean_abs_diff(a, b, channels, skip_alpha=True):
    total, n = 0, 0
    for i in range(0, len(a), channels):
        for c in range(channels - (1 if skip_alpha else 0)):
            total += abs(a[i + c] - b[i + c])
            n += 1
    return total / max(1, n)


def case(name):
    def wrap(fn):
        try:
            results[name] = fn()
        except Exception:
            results[name] = {"crashed": traceback.format_exc()}
        return fn
    return wrap


@case("restore")
def restore_selection():
    image, source, painted = make_image(96, 72)
    top = Gimp.Layer.new(image, "Top", 10, 10, Gimp.ImageType.RGBA_IMAGE, 100.0,
                         Gimp.LayerMode.NORMAL)
    image.insert_layer(top, None, 0)  # the new layer must go between Top and Source
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 30, 20, 36, 28)
    out = {"call": call("restora-restore-selection", image, source, task="upscale", model=MODEL,
                        feather=4.0, backend_url=URL)}
    out["layers"] = layers_of(image)
    out["source_unchanged"] = read(source, RGBA8) == painted
    new = next((la for la in image.get_layers() if la.get_name().startswith("Upscale")), None)
    if new is not None:
        out["alpha"] = alpha_stats(new, RGBA8, (30, 20, 36, 28))
        _, ox, oy = new.get_offsets()
        inside = read(new, RGBA8, 30 - ox + 6, 20 - oy + 6, 24, 16)
        before = read(source, RGBA8, 30 + 6, 20 + 6, 24, 16)
        out["mean_abs_diff_inside"] = mean_abs_diff(inside, before, 4)
    out["image_size"] = [image.get_width(), image.get_height()]
    image.delete()
    return out


@case("restore_ellipse")
def restore_ellipse():
    image, source, painted = make_image(64, 48)
    image.select_ellipse(Gimp.ChannelOps.REPLACE, 12, 8, 40, 30)
    out = {"call": call("restora-restore-selection", image, source, model=MODEL, feather=0.0,
                        backend_url=URL)}
    new = image.get_layers()[0] if len(image.get_layers()) == 2 else None
    if new is not None:
        _, ox, oy = new.get_offsets()
        w, h = new.get_width(), new.get_height()
        alpha = read(new, RGBA8)[3::4]
        mask = bytes(image.get_selection().get_buffer().get(
            Gegl.Rectangle.new(ox, oy, w, h), 1.0, "Y u8", Gegl.AbyssPolicy.NONE))
        out["alpha_where_unselected_max"] = max(a for a, m in zip(alpha, mask) if m == 0)
        out["alpha_where_selected_min"] = min(a for a, m in zip(alpha, mask) if m == 255)
        out["unselected_in_box"] = sum(1 for m in mask if m == 0)
    out["source_unchanged"] = read(source, RGBA8) == painted
    image.delete()
    return out


@case("upscale")
def upscale_image():
    image, source, _painted = make_image(40, 30)
    out = {"call": call("restora-upscale-image", image, source, model=MODEL,
                        options='{"overlap": 8, "scale": 2.0}', backend_url=URL)}
    out["image_size"] = [image.get_width(), image.get_height()]
    out["layers"] = layers_of(image)
    layers = image.get_layers()
    if len(layers) == 2:
        out["mean_abs_diff_to_gimp_scaled"] = mean_abs_diff(read(layers[0], RGBA8),
                                                            read(layers[1], RGBA8), 4)
        out["alpha_min"] = min(read(layers[0], RGBA8)[3::4])
    image.delete()
    return out


@case("upscale_16bit")
def upscale_16bit():
    image, source, painted = make_image(36, 28, precision=Gimp.Precision.U16_NON_LINEAR,
                                        fmt=RGBA16, depth=16)
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 8, 6, 20, 14)
    out = {"call": call("restora-restore-selection", image, source, model=MODEL, feather=3.0,
                        backend_url=URL)}
    out["layers"] = layers_of(image)
    out["source_unchanged"] = read(source, RGBA16) == painted
    new = image.get_layers()[0] if len(image.get_layers()) == 2 else None
    if new is not None:
        out["alpha"] = alpha_stats(new, RGBA16, (8, 6, 20, 14), size=2)
        _, ox, oy = new.get_offsets()
        data = read(new, RGBA16, 8 - ox + 4, 6 - oy + 4, 12, 6)
        values = [int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data), 2)]
        colour = [v for i, v in enumerate(values) if i % 4 != 3]
        # 8-bit data widened to 16 bits is always a multiple of 257
        out["fraction_not_8bit"] = sum(1 for v in colour if v % 257) / len(colour)
    image.delete()
    return out


@case("gray")
def upscale_gray():
    image, source, _painted = make_image(32, 24, base=Gimp.ImageBaseType.GRAY, fmt=GRAYA8)
    out = {"call": call("restora-upscale-image", image, source, model=MODEL,
                        options='{"scale": 2.0}', backend_url=URL)}
    out["image_size"] = [image.get_width(), image.get_height()]
    out["layers"] = layers_of(image)
    image.delete()
    return out


@case("new_image")
def upscale_into_new_image():
    image, source, _painted = make_image(20, 16)
    out = {"call": call("restora-upscale-image", image, source, model=MODEL, new_image=True,
                        backend_url=URL)}
    out["image_size"] = [image.get_width(), image.get_height()]
    out["layer_count"] = len(image.get_layers())
    result_id = out["call"].get("result_image_id")
    if result_id is not None and result_id != image.get_id():
        new = Gimp.Image.get_by_id(result_id)
        out["new_image_size"] = [new.get_width(), new.get_height()]
        out["new_image_layers"] = layers_of(new)
        new.delete()
    image.delete()
    return out


@case("backend_down")
def backend_down():
    image, source, painted = make_image(32, 24)
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 4, 4, 10, 10)
    out = {"call": call("restora-restore-selection", image, source, model=MODEL,
                        backend_url=DOWN_URL)}
    out["layer_count"] = len(image.get_layers())
    out["source_unchanged"] = read(source, RGBA8) == painted
    image.delete()
    return out


@case("nothing_selected")
def nothing_selected():
    image, source, _painted = make_image(16, 16)
    out = {"call": call("restora-restore-selection", image, source, model=MODEL,
                        backend_url=URL)}
    out["layer_count"] = len(image.get_layers())
    image.delete()
    return out


@case("unknown_model")
def unknown_model():
    image, source, _painted = make_image(16, 16)
    out = {"call": call("restora-upscale-image", image, source, model="no-such-model",
                        backend_url=URL)}
    out["image_size"] = [image.get_width(), image.get_height()]
    image.delete()
    return out


@case("faces")
def restore_faces():
    image, source, _painted = make_image(512, 512)
    with open(PHOTO, "rb") as f:
        photo = f.read()
    buf = source.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, 512, 512), RGBA8, photo)
    buf.flush()
    out = {"call": call("restora-face-restore", image, source, model=FACE_MODEL,
                        backend_url=FACE_URL)}
    out["layers"] = layers_of(image)
    out["source_unchanged"] = read(source, RGBA8) == photo
    new = next((la for la in image.get_layers() if la.get_name().startswith("Restore")), None)
    if new is not None:
        out["layer_file"] = "faces_layer.rgba"
        with open(os.path.join(os.path.dirname(OUT), out["layer_file"]), "wb") as f:
            f.write(read(new, RGBA8))
    image.delete()
    return out


@case("faces_none")
def no_faces():
    image, source, _painted = make_image(64, 48)
    out = {"call": call("restora-face-restore", image, source, model=FACE_MODEL,
                        backend_url=FACE_URL)}
    out["layer_count"] = len(image.get_layers())
    image.delete()
    return out


@case("procedures")
def procedures():
    """What GIMP registered at its start, from the backend's task list."""
    pdb = Gimp.get_pdb()
    names = ["restora-restore-selection", "restora-upscale-image", "restora-face-restore",
             "restora-denoise", "restora-test-split", "restora-upscale", "restora-colorize",
             "restora-settings"]
    found = {name: pdb.lookup_procedure(name) for name in names}
    return {"labels": {n: p.get_menu_label() for n, p in found.items() if p is not None},
            "missing": [n for n, p in found.items() if p is None]}


@case("split")
def split():
    image, source, painted = make_image(16, 12)
    out = {"call": call("restora-test-split", image, source, options='{"gain": 2.0}',
                        backend_url=URL)}
    out["layers"] = layers_of(image)
    out["source"] = painted.hex()
    group = image.get_layers()[0]
    out["group"] = group.is_group()
    children = group.get_children() if out["group"] else []
    out["children"] = [c.get_name() for c in children]
    out["child_pixels"] = [read(c, RGBA8).hex() for c in children]
    image.delete()
    return out


@case("denoise")
def denoise():
    image, source, painted = make_image(24, 20)
    out = {"call": call("restora-denoise", image, source, model="tiny-dncnn",
                        backend_url=URL)}
    out["layers"] = layers_of(image)
    out["image_size"] = [image.get_width(), image.get_height()]
    out["source_unchanged"] = read(source, RGBA8) == painted
    out["source"] = painted.hex()
    new = image.get_layers()[0] if len(image.get_layers()) == 2 else None
    if new is not None:
        out["layer_pixels"] = read(new, RGBA8).hex()
    image.delete()
    return out


@case("refine")
def refine_selection():
    """Diffusion refine on a selection: a layer over the selection only."""
    image, source, painted = make_image(64, 64)
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 16, 12, 32, 36)
    out = {"call": call("restora-refine", image, source, options='{"steps": 4, "strength": 0.5}',
                        model="tiny-sd15", backend_url=DIFFUSION_URL)}
    out["layers"] = layers_of(image)
    out["source_unchanged"] = read(source, RGBA8) == painted
    new = image.get_layers()[0] if len(image.get_layers()) == 2 else None
    if new is not None:
        out["alpha"] = alpha_stats(new, RGBA8, (16, 12, 32, 36))
    image.delete()
    return out


@case("tiled_refine")
def tiled_refine_whole():
    """Tiled refine (upscale, then img2img tile by tile): GIMP scales the image and the
    result is a layer of the new size on top."""
    image, source, _painted = make_image(48, 40)
    out = {"call": call("restora-tiled-refine", image, source, options='{"steps": 2}',
                        model="tiny-sd15", backend_url=DIFFUSION_URL)}
    out["image_size"] = [image.get_width(), image.get_height()]
    out["layers"] = layers_of(image)
    image.delete()
    return out


HYPIR_SMALL = {"tile": 64, "stride": 32}  # the tiny model's patches, so the run is quick


@case("hypir_selection")
def hypir_selection():
    """HYPIR on a selection at scale 1: a layer over the selection only."""
    image, source, painted = make_image(64, 64)
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 16, 12, 32, 36)
    out = {"call": call("restora-hypir", image, source, options=json.dumps(HYPIR_SMALL),
                        model="HYPIR_sd2", backend_url=DIFFUSION_URL)}
    out["layers"] = layers_of(image)
    out["source_unchanged"] = read(source, RGBA8) == painted
    new = image.get_layers()[0] if len(image.get_layers()) == 2 else None
    if new is not None:
        out["alpha"] = alpha_stats(new, RGBA8, (16, 12, 32, 36))
        _, ox, oy = new.get_offsets()  # the layer covers the selection's box, not the image
        inside = read(new, RGBA8, 24 - ox, 20 - oy, 16, 16)
        out["inside_differs"] = inside != read(source, RGBA8, 24, 20, 16, 16)
    image.delete()
    return out


@case("hypir_x2")
def hypir_x2():
    """HYPIR at scale 2 on the whole image, with a selection there: the image is enlarged."""
    image, source, _painted = make_image(48, 40)
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 4, 4, 10, 10)
    options = json.dumps({**HYPIR_SMALL, "scale": 2.0})
    out = {"call": call("restora-hypir", image, source, options=options, model="HYPIR_sd2",
                        backend_url=DIFFUSION_URL)}
    out["image_size"] = [image.get_width(), image.get_height()]
    out["layers"] = layers_of(image)
    image.delete()
    return out


def colorize(image, source):
    """restora-edit with the Colorize preset's words, tiny and quick."""
    options = json.dumps({"instruction": "Colorize this black-and-white photo naturally.",
                          "keep_luminance": "on", "steps": 2, "working_size": 64})
    return call("restora-edit", image, source, options=options, backend_url=EDIT_URL)


@case("edit")
def colorize_by_instruction():
    """Edit by instruction with the Colorize preset's words, on the whole layer."""
    image, source, painted = make_image(48, 40)
    out = {"call": colorize(image, source)}
    out["layers"] = layers_of(image)
    out["source"] = painted.hex()
    new = image.get_layers()[0] if len(image.get_layers()) == 2 else None
    if new is not None:
        out["layer_pixels"] = read(new, RGBA8).hex()
    image.delete()
    return out


@case("edit_selection")
def colorize_a_selection_by_instruction():
    """Edit by instruction on a selection: a layer over the selection only."""
    image, source, painted = make_image(48, 40)
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 12, 10, 24, 20)
    out = {"call": colorize(image, source)}
    out["layers"] = layers_of(image)
    out["source_unchanged"] = read(source, RGBA8) == painted
    new = image.get_layers()[0] if len(image.get_layers()) == 2 else None
    if new is not None:
        out["alpha"] = alpha_stats(new, RGBA8, (12, 10, 24, 20))
    image.delete()
    return out


def reference_layer(image, name, x, y, w, h, parent=None, position=0):
    """A layer of its own size and place holding one colour, opaque."""
    layer = Gimp.Layer.new(image, name, w, h, Gimp.ImageType.RGBA_IMAGE, 100.0,
                           Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, parent, position)
    layer.set_offsets(x, y)
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), RGBA8, bytes((200, 60, 40, 255)) * (w * h))
    buf.flush()
    return layer


@case("edit_references")
def edit_with_reference_images():
    """Edit by instruction on Qwen-Image-Edit-2509 with reference images named by layer in
    the `references` argument: Hat (reaching past the canvas) and Scarf (in a group), on a
    selection; the same edit without them; and with a layer name the image lacks."""
    image, source, painted = make_image(48, 40)
    reference_layer(image, "Hat", 36, 30, 16, 12)
    group = Gimp.GroupLayer.new(image, "Props")
    image.insert_layer(group, None, 0)
    reference_layer(image, "Scarf", 2, 4, 20, 18, parent=group)
    options = json.dumps({"instruction": "Put the hat from Picture 2 on the person.",
                          "steps": 2, "working_size": 64, "seed": 5})

    def edit(references):
        out = call("restora-edit", image, source, options=options, references=references,
                   model="tiny-qwen-image-edit-2509", backend_url=EDIT_PLUS_URL)
        layer = Gimp.Layer.get_by_id(out["layer_id"]) if out.get("layer_id") else None
        if layer is not None:
            out["pixels"] = read(layer, RGBA8).hex()
            layer.set_visible(False)
        return out

    out = {"both": edit('{"reference_1": "Hat", "reference_2": "Scarf"}'),
           "none": edit(""),
           "one_gone": edit('{"reference_1": "Gone", "reference_2": "Hat"}')}
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 12, 10, 24, 20)
    out["selection"] = edit('{"reference_1": "Scarf"}')
    out["selection"].pop("pixels", None)
    out["broken"] = call("restora-edit", image, source, options=options, references="{oops",
                         backend_url=EDIT_PLUS_URL)
    out["source_unchanged"] = read(source, RGBA8) == painted
    image.delete()
    return out


@case("old_photo")
def old_photo_chain():
    """Restore old photo on a scratched gray scan: one group, a layer per stage."""
    image, source, painted = make_image(64, 64)
    gray = bytearray(painted)
    for i in range(0, len(gray), 4):
        y, x = divmod(i // 4, 64)
        v = 250 if x == 20 or y == 40 else (gray[i] * 3 + gray[i + 1] * 6 + gray[i + 2]) // 10
        gray[i:i + 3] = bytes((v, v, v))
    buf = source.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, 64, 64), RGBA8, bytes(gray))
    buf.flush()
    out = {"call": call("restora-restore-old-photo", image, source,
                        options='{"upscale": false}', backend_url=OLD_PHOTO_URL)}
    out["source_unchanged"] = read(source, RGBA8) == bytes(gray)
    top = image.get_layers()[0]
    out["group"] = top.get_name() if top.is_group() else None
    out["children"] = [c.get_name() for c in top.get_children()] if top.is_group() else []
    image.delete()
    return out


with open(OUT, "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)
print("RESTORA_E2E_DONE", flush=True)
