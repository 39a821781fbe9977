"""The common `Editor` interface on one GIMP 3 image: pixels through GEGL buffers, results as
new layers. One of the few modules that import GIMP.

Pixels are read and written in the image's own depth where the wire has it: 8-bit images as
8-bit, every deeper precision as 16-bit (babl converts; 32-bit float values above 1.0 are
clipped). Always with alpha, and always perceptual ("R'G'B'A"), the encoding models expect,
whatever the image's TRC. babl's u16 is the machine's byte order, which is little-endian on
every platform GIMP 3 runs on, as the wire wants.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

from ..common.editor import NewLayer  # noqa: E402
from ..common.errors import UnsupportedDocument  # noqa: E402
from ..common.pixels import Bytes, PixelBuffer  # noqa: E402
from ..shared.geometry import Bounds, Extent  # noqa: E402
from ..shared.protocol import PixelFormat  # noqa: E402

_EIGHT_BIT = {Gimp.Precision.U8_LINEAR, Gimp.Precision.U8_NON_LINEAR,
              Gimp.Precision.U8_PERCEPTUAL}
_MASK_FORMAT = "Y u8"

if sys.byteorder != "little":  # pragma: no cover - no such GIMP 3 platform today
    raise ImportError("Restora's GIMP plug-in needs a little-endian machine")


def babl_format(channels: int, depth: int) -> str:
    """The babl name of wire pixels: RGBA or gray + alpha, 8 or 16 bits, perceptual."""
    model = {4: "R'G'B'A", 2: "Y'A", 3: "R'G'B'", 1: "Y'"}[channels]
    return f"{model} u{depth}"


class GimpEditor:
    """One image and the layer an action started from; GIMP calls only, on the main thread."""

    def __init__(self, image: Gimp.Image, layer: Gimp.Layer, interactive: bool) -> None:
        self.image = image
        self.layer = layer
        self.interactive = interactive
        #: what the action made, for the procedure's return values
        self.new_layer: Gimp.Layer | None = None
        self.new_image: Gimp.Image | None = None

    # --- reading ---

    def canvas(self) -> Extent:
        return Extent(self.image.get_width(), self.image.get_height())

    def source_name(self) -> str:
        return self.layer.get_name()

    def read_pixels(self, region: Bounds, projection: bool = False) -> PixelBuffer:
        channels, depth = self._wire_shape()
        fmt = babl_format(channels, depth)
        if projection:
            # the image as shown, as GIMP's own "sample merged" sees it; never inserted
            visible = Gimp.Layer.new_from_visible(self.image, self.image, "Restora source")
            try:
                data = _get(visible, region, fmt)
            finally:
                visible.delete()
        else:
            data = _get(self.layer, region, fmt)
        return PixelBuffer(data, PixelFormat(region.width, region.height, channels, depth))

    def list_layers(self) -> list[str]:
        names: list[str] = []
        for layer in self._other_layers():
            if layer.get_name() not in names:
                names.append(layer.get_name())
        return names

    def read_layer_pixels(self, name: str) -> PixelBuffer | None:
        """The whole layer at its own size and place (past the canvas too: a reference is a
        picture to look at, not a part of the image)."""
        layer = next((item for item in self._other_layers() if item.get_name() == name), None)
        if layer is None:
            return None
        channels, depth = self._wire_shape()
        _, ox, oy = layer.get_offsets()
        region = Bounds(ox, oy, layer.get_width(), layer.get_height())
        data = _get(layer, region, babl_format(channels, depth))
        return PixelBuffer(data, PixelFormat(region.width, region.height, channels, depth))

    def _other_layers(self) -> list[Gimp.Layer]:
        """The image's layers top to bottom, those in groups where their group is, without
        the groups themselves and without the source layer."""
        found: list[Gimp.Layer] = []

        def walk(layers: list[Gimp.Layer]) -> None:
            for layer in layers:
                if layer.is_group():
                    walk(layer.get_children())
                elif layer.get_id() != self.layer.get_id():
                    found.append(layer)

        walk(self.image.get_layers())
        return found

    def selection_bounds(self) -> Bounds | None:
        _, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(self.image)
        if not non_empty:
            return None
        return Bounds(x1, y1, x2 - x1, y2 - y1)

    def selection_mask(self, region: Bounds) -> Bytes:
        buffer = self.image.get_selection().get_buffer()
        return bytes(buffer.get(_rect(region), 1.0, _MASK_FORMAT, Gegl.AbyssPolicy.NONE))

    def is_alive(self) -> bool:
        return self.image.is_valid() and self.layer.is_valid()

    # --- writing ---

    def add_layer(self, name: str, pixels: PixelBuffer, at: Bounds) -> None:
        # directly above the source, in the same group
        parent = self.layer.get_parent()
        self.new_layer = self._insert(name, pixels, at, parent,
                                      self.image.get_item_position(self.layer))

    def add_layers(self, group: str, layers: list[NewLayer]) -> None:
        """A layer group above the source, its layers top to bottom in the given order; the
        caller's undo group makes it one undo step."""
        node = Gimp.GroupLayer.new(self.image, group)
        self.image.insert_layer(node, self.layer.get_parent(),
                                self.image.get_item_position(self.layer))
        for position, new in enumerate(layers):
            self._insert(new.name, new.pixels, new.at, node, position)
        self.new_layer = node

    def _insert(self, name: str, pixels: PixelBuffer, at: Bounds, parent: Gimp.Layer | None,
                position: int) -> Gimp.Layer:
        layer = Gimp.Layer.new(self.image, name, at.width, at.height, self._layer_type(),
                               100.0, Gimp.LayerMode.NORMAL)
        self.image.insert_layer(layer, parent, position)
        layer.set_offsets(at.x, at.y)
        _set(layer, pixels)
        return layer

    def scale_canvas(self, size: Extent) -> None:
        # GIMP's own Image > Scale Image, with the interpolation the user chose in Preferences
        self.image.scale(size.width, size.height)

    def new_document(self, name: str, pixels: PixelBuffer) -> None:
        gray = pixels.channels in (1, 2)
        precision = (Gimp.Precision.U8_NON_LINEAR if pixels.depth == 8
                     else Gimp.Precision.U16_NON_LINEAR)
        image = Gimp.Image.new_with_precision(
            pixels.format.width, pixels.format.height,
            Gimp.ImageBaseType.GRAY if gray else Gimp.ImageBaseType.RGB, precision)
        layer = Gimp.Layer.new(image, name, pixels.format.width, pixels.format.height,
                               Gimp.ImageType.GRAYA_IMAGE if gray else Gimp.ImageType.RGBA_IMAGE,
                               100.0, Gimp.LayerMode.NORMAL)
        image.insert_layer(layer, None, 0)
        _set(layer, pixels)
        image.clean_all()  # a new result, not unsaved edits of an existing file
        if self.interactive:
            Gimp.Display.new(image)
        self.new_image, self.new_layer = image, layer

    @contextlib.contextmanager
    def undo_group(self, name: str) -> Iterator[None]:
        self.image.undo_group_start()
        try:
            yield
        finally:
            self.image.undo_group_end()

    # --- helpers ---

    def _wire_shape(self) -> tuple[int, int]:
        base = self.image.get_base_type()
        if base == Gimp.ImageBaseType.INDEXED:
            raise UnsupportedDocument(
                "Restora works on RGB and grayscale images; this one is indexed.",
                "Convert it with Image > Mode > RGB, then try again.")
        channels = 2 if base == Gimp.ImageBaseType.GRAY else 4
        depth = 8 if self.image.get_precision() in _EIGHT_BIT else 16
        return channels, depth

    def _layer_type(self) -> Gimp.ImageType:
        if self.image.get_base_type() == Gimp.ImageBaseType.GRAY:
            return Gimp.ImageType.GRAYA_IMAGE
        return Gimp.ImageType.RGBA_IMAGE


def _rect(region: Bounds) -> Gegl.Rectangle:
    return Gegl.Rectangle.new(region.x, region.y, region.width, region.height)


def _get(drawable: Gimp.Drawable, region: Bounds, fmt: str) -> bytes:
    """`region` in canvas coordinates; transparent where the drawable does not reach."""
    _, ox, oy = drawable.get_offsets()
    local = Bounds(region.x - ox, region.y - oy, region.width, region.height)
    buffer = drawable.get_buffer()
    return bytes(buffer.get(_rect(local), 1.0, fmt, Gegl.AbyssPolicy.NONE))


def _set(layer: Gimp.Layer, pixels: PixelBuffer) -> None:
    width, height = pixels.format.width, pixels.format.height
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, width, height),
               babl_format(pixels.channels, pixels.depth), bytes(pixels.data))
    buffer.flush()  # push the tiles to GIMP's core before anything reads the layer
    layer.update(0, 0, width, height)
