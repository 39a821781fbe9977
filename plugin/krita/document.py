"""The `Editor` over one Krita document and the layer an action started from.

Pixels: Krita's pixelData is in the colour space's native order, BGRA for 8 and 16-bit RGB
(16-bit little-endian), gray + alpha for GRAYA; other spaces go through a converted copy of the
document (colour.py), so the user's document is never converted.

Undo: Krita 5.1's Python API (libkis) has no undo macro (no Document.startUndo / endUndo).
Adding a node is one undo step (its pixels are written before it is added, so that step holds
them); Document.scaleImage is another. So a restored selection undoes in one step, an upscale
in two (the layer, then the scaling), and several outputs in one: their layers are filled and
put into a group before the group, the only node added to the document, goes in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from krita import Krita

from ..common.editor import NewLayer
from ..common.errors import DocumentGone, UnsupportedDocument
from ..common.pixels import PixelBuffer, swap_red_blue
from ..shared.geometry import Bounds, Extent
from ..shared.protocol import PixelFormat
from .colour import ColourSpace, WireSpace, wire_space

#: Krita's node types whose pixels live in their own paint device
_PAINT_TYPES = ("paintlayer",)
_MASK_TYPES = ("selectionmask", "transparencymask", "filtermask", "transformmask",
               "colorizemask")


def source_node(document: Any, node: Any | None = None) -> Any:
    """The layer an action reads: the given node, the active one, or the top paint layer."""
    node = node or document.activeNode()
    if node is not None and node.type() in _MASK_TYPES:
        node = node.parentNode()  # a mask is edited on its layer: restore the layer
    if node is None or node.type() == "" or node == document.rootNode():
        layers = [n for n in document.rootNode().childNodes() if n.type() == "paintlayer"]
        if not layers:
            raise UnsupportedDocument("This document has no paint layer to work on.",
                                      "Add or select a paint layer, then try again.")
        node = layers[-1]
    return node


#: documents this plug-in opened: Krita's Python wrapper owns a document made by
#: createDocument, and the document disappears when its wrapper is garbage-collected
_opened_documents: list[Any] = []


def find_node(document: Any, uid: Any) -> Any | None:
    """The node with this unique id, searched through the tree (Krita 5.1's
    Document.nodeByUniqueID returns a bare QObject to Python, unusable as a Node)."""
    stack = list(document.rootNode().childNodes())
    while stack:
        node = stack.pop()
        if node.uniqueId() == uid:
            return node
        stack.extend(node.childNodes())
    return None


class KritaEditor:
    """plugin.common.editor.Editor for Krita; use on the UI thread only."""

    def __init__(self, document: Any, node: Any | None = None) -> None:
        self.document = document
        self.node = source_node(document, node)
        self._uid = self.node.uniqueId()
        self._name = self.node.name()
        self._wire: WireSpace | None = None
        #: the nodes this editor put into the document (a layer, or a group), in order
        self.added: list[Any] = []

    # --- reading ---

    def canvas(self) -> Extent:
        return Extent(self.document.width(), self.document.height())

    def source_name(self) -> str:
        return self._name

    def document_space(self) -> ColourSpace:
        d = self.document
        return ColourSpace(d.colorModel(), d.colorDepth(), d.colorProfile())

    def read_pixels(self, region: Bounds, projection: bool = False) -> PixelBuffer:
        source = self.document_space() if projection else _space_of(self.node)
        wire = wire_space(source)
        self._wire = wire  # results are written back through the same space
        return self._read(None if projection else self.node, wire, region)

    def list_layers(self) -> list[str]:
        names: list[str] = []
        for node in self._other_layers():
            if node.name() not in names:
                names.append(node.name())
        return names

    def read_layer_pixels(self, name: str) -> PixelBuffer | None:
        """The layer's content: Krita's layers have no size of their own, so the box of its
        pixels on the canvas (the whole canvas for an empty layer)."""
        node = next((n for n in self._other_layers() if n.name() == name), None)
        if node is None:
            return None
        return self._read(node, wire_space(_space_of(node)), _content(node, self.canvas()))

    def _other_layers(self) -> list[Any]:
        """The document's paint layers top to bottom, those in groups where their group is,
        without the source layer."""
        found: list[Any] = []

        def walk(parent: Any) -> None:
            for node in reversed(parent.childNodes()):  # Krita lists children bottom to top
                if node.type() in _PAINT_TYPES and node.uniqueId() != self._uid:
                    found.append(node)
                elif node.type() == "grouplayer":
                    walk(node)

        walk(self.document.rootNode())
        return found

    def _read(self, node: Any | None, wire: WireSpace, region: Bounds) -> PixelBuffer:
        """`region` of a layer (of the image as shown, for None) in the wire's order."""
        doc = self.document
        name = self._name if node is None else node.name()
        doc.waitForDone()
        if wire.converted:
            data = self._read_converted(wire, region, node)
        elif node is None:
            data = bytes(doc.pixelData(region.x, region.y, region.width, region.height))
        else:
            data = bytes(self._read_node(node, region))
        fmt = PixelFormat(region.width, region.height, wire.channels, wire.bits)
        if len(data) != fmt.nbytes:
            raise UnsupportedDocument(
                f"Krita gave {len(data)} bytes for the layer '{name}' where "
                f"{fmt.nbytes} were expected.", "Try with a paint layer, or with the whole image "
                "as shown (the 'Send' option in the Restora docker).")
        if wire.channels == 4:
            data = swap_red_blue(data, wire.bits)  # Krita's BGRA to the wire's RGBA
        return PixelBuffer(data, fmt)

    @staticmethod
    def _read_node(node: Any, region: Bounds) -> Any:
        if node.type() in _PAINT_TYPES:
            return node.pixelData(region.x, region.y, region.width, region.height)
        # groups, vector, file and fill layers: what the layer shows
        return node.projectionPixelData(region.x, region.y, region.width, region.height)

    def _read_converted(self, wire: WireSpace, region: Bounds, node: Any | None) -> bytes:
        """Read through a converted copy of the document; the document itself is untouched."""
        copy = self.document.clone()
        try:
            space = wire.space
            if not copy.setColorSpace(space.model, space.depth, space.profile):
                raise UnsupportedDocument(
                    f"Krita could not convert this {self.document.colorModel()} "
                    f"{self.document.colorDepth()} image to {space.model} {space.depth}.",
                    "Convert it yourself (Image > Convert Image Color Space), then try again.")
            copy.waitForDone()
            if node is None:
                copy.refreshProjection()
                copy.waitForDone()
                return bytes(copy.pixelData(region.x, region.y, region.width, region.height))
            twin = find_node(copy, node.uniqueId())
            if twin is None:
                raise DocumentGone(f"The layer '{node.name()}' is gone.", "Select a layer.")
            return bytes(self._read_node(twin, region))
        finally:
            copy.close()

    def selection_bounds(self) -> Bounds | None:
        selection = self.document.selection()
        if selection is None or selection.width() <= 0 or selection.height() <= 0:
            return None
        box = Bounds(selection.x(), selection.y(), selection.width(), selection.height())
        inside = box.clipped(self.canvas())
        return None if inside.is_empty else inside

    def selection_mask(self, region: Bounds) -> bytes:
        selection = self.document.selection()
        if selection is None:
            return bytes(region.width * region.height)
        return bytes(selection.pixelData(region.x, region.y, region.width, region.height))

    # --- writing: only ever new layers, the editor's own scaling, new documents ---

    def is_alive(self) -> bool:
        return _is_open(self.document)

    def add_layer(self, name: str, pixels: PixelBuffer, at: Bounds) -> None:
        layer = self.document.createNode(name, "paintlayer")
        self._write(layer, pixels, at)
        self._insert(layer)

    def add_layers(self, group: str, layers: list[NewLayer]) -> None:
        node = self.document.createGroupLayer(group)
        below = None
        for new in reversed(layers):  # Krita lists children bottom to top
            layer = self.document.createNode(new.name, "paintlayer")
            self._write(layer, new.pixels, new.at)
            node.addChildNode(layer, below)
            below = layer
        self._insert(node)

    def _insert(self, layer: Any) -> None:
        """Right above the source layer, in its group; on top when it was deleted."""
        doc = self.document
        source = find_node(doc, self._uid)
        if source is not None and source.parentNode() is not None:
            source.parentNode().addChildNode(layer, source)  # right above the source layer
        else:  # the source layer was deleted meanwhile: on top
            doc.rootNode().addChildNode(layer, None)
        doc.waitForDone()
        self.added.append(layer)

    def _write(self, layer: Any, pixels: PixelBuffer, at: Bounds) -> None:
        """Pixels into a layer not yet in the image, converting back from the wire's space."""
        wire = self._wire or wire_space(self.document_space())
        target = self.document_space()
        space = wire.space
        converted = space != target  # a converted source, or a layer in its own space
        if converted:
            layer.setColorSpace(space.model, space.depth, space.profile)
        data = pixels.data
        if pixels.channels == 4:
            data = swap_red_blue(data, pixels.depth)  # the wire's RGBA to Krita's BGRA
        layer.setPixelData(bytes(data), at.x, at.y, at.width, at.height)
        if converted:
            layer.setColorSpace(target.model, target.depth, target.profile)

    def scale_canvas(self, size: Extent) -> None:
        """Krita's own Scale Image; the views of the document zoom out by the same factor,
        so the artist keeps seeing the same part of the picture rather than a close-up."""
        doc = self.document
        factor = size.width / max(doc.width(), 1)
        zooms = [(canvas, canvas.zoomLevel()) for canvas in _canvases_of(doc)]
        doc.scaleImage(size.width, size.height, round(doc.xRes()), round(doc.yRes()), "Bicubic")
        doc.waitForDone()
        for canvas, zoom in zooms:
            _set_zoom(canvas, zoom / factor)

    def new_document(self, name: str, pixels: PixelBuffer) -> None:
        app = Krita.instance()
        src = self.document
        space = self.document_space()
        doc = app.createDocument(pixels.format.width, pixels.format.height, name, space.model,
                                 space.depth, space.profile, src.resolution())
        layer = doc.rootNode().childNodes()[0]
        layer.setName(name)
        editor = KritaEditor(doc, layer)
        editor._wire = self._wire
        editor._write(layer, pixels, Bounds(0, 0, pixels.format.width, pixels.format.height))
        doc.refreshProjection()
        _opened_documents[:] = [d for d in _opened_documents if _is_open(d)] + [doc]
        window = app.activeWindow()
        if window is not None:
            window.addView(doc)

    @contextlib.contextmanager
    def undo_group(self, name: str) -> Iterator[None]:
        # Krita 5.1's Python API cannot group undo steps; see the module docstring
        yield
        self.document.waitForDone()


def _space_of(node: Any) -> ColourSpace:
    return ColourSpace(node.colorModel(), node.colorDepth(), node.colorProfile())


def _content(node: Any, canvas: Extent) -> Bounds:
    """The box of a layer's pixels inside the canvas; the canvas when there are none."""
    box = node.bounds()
    inside = Bounds(box.x(), box.y(), box.width(), box.height()).clipped(canvas)
    return Bounds.of(canvas) if inside.is_empty else inside


def _canvases_of(document: Any) -> list[Any]:
    """The canvases of every view showing `document`, in every window."""
    canvases = []
    for window in Krita.instance().windows():
        for view in window.views():
            if view.document() == document and view.canvas() is not None:
                canvases.append(view.canvas())
    return canvases


def _set_zoom(canvas: Any, level: float) -> None:
    """Canvas.zoomLevel() and setZoomLevel() use different units in Krita 5 (the reading
    includes the image's resolution): set once, read back, and correct by the ratio."""
    if level <= 0:
        return
    canvas.setZoomLevel(level)
    seen = canvas.zoomLevel()
    if seen > 0 and abs(seen - level) > 1e-6 * level:
        canvas.setZoomLevel(level * level / seen)


def _is_open(document: Any) -> bool:
    return any(d == document for d in Krita.instance().documents())
