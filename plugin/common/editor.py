"""The small interface each editor adapter implements; everything else in `common/` uses it.

An `Editor` is bound to one document and the layer an action started from. Its methods are
called on the editor's UI thread only. Pixels cross it in the wire's channel order (RGBA or
gray + alpha, 16-bit little-endian): the adapter converts from and to the editor's own.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from ..shared.geometry import Bounds, Extent
from .pixels import Bytes, PixelBuffer


@dataclass
class NewLayer:
    """One layer to add: its name, its pixels, and where they sit on the canvas."""

    name: str
    pixels: PixelBuffer
    at: Bounds


class Editor(Protocol):
    def canvas(self) -> Extent:
        """The document's size in pixels."""
        ...

    def source_name(self) -> str:
        """The name of the layer the action reads (and puts its result above)."""
        ...

    def read_pixels(self, region: Bounds, projection: bool = False) -> PixelBuffer:
        """The source layer's pixels in `region` (the whole image as shown when
        `projection`), with 2 or 4 channels at 8 or 16 bits.

        Raises UnsupportedDocument for a colour model or depth Restora cannot send.
        """
        ...

    def list_layers(self) -> list[str]:
        """The names of the layers a reference image can come from, top to bottom, each name
        once: the document's other layers with pixels of their own, never the source layer."""
        ...

    def read_layer_pixels(self, name: str) -> PixelBuffer | None:
        """The whole layer of that name (the top one, when several share it), at its own
        size, in the wire's order; None when no layer but the source has that name.

        Raises UnsupportedDocument for a colour model or depth Restora cannot send.
        """
        ...

    def selection_bounds(self) -> Bounds | None:
        """The selection's bounding box on the canvas, or None without a selection."""
        ...

    def selection_mask(self, region: Bounds) -> Bytes:
        """The selection in `region`, one byte per pixel (0 outside, 255 fully selected)."""
        ...

    def is_alive(self) -> bool:
        """Whether the document is still open (a result arriving late goes nowhere else)."""
        ...

    def add_layer(self, name: str, pixels: PixelBuffer, at: Bounds) -> None:
        """A new layer above the source layer holding `pixels` at `at`, transparent elsewhere.

        Never changes an existing layer.
        """
        ...

    def add_layers(self, group: str, layers: list[NewLayer]) -> None:
        """A new layer group named `group` above the source layer, holding `layers` top to
        bottom in the order given, each transparent outside its own `at`; one undo step
        where the editor allows it. Never changes an existing layer.
        """
        ...

    def scale_canvas(self, size: Extent) -> None:
        """Scale the whole document (every layer) to `size`, as the editor's own command."""
        ...

    def new_document(self, name: str, pixels: PixelBuffer) -> None:
        """Open a new document holding `pixels` as its only layer."""
        ...

    def undo_group(self, name: str) -> AbstractContextManager[None]:
        """Changes made inside become one undo step where the editor allows it."""
        ...
