"""Raw pixels as the wire carries them, and the byte shuffles editors need, in plain Python.

No numpy in an editor's Python, so every conversion here is done with extended slices of
`bytearray`s, which run in C: swapping red and blue of a 4096 x 4096 RGBA image takes about
0.1 s. Channels are interleaved, rows top to bottom, 16-bit values little-endian, as
`shared.protocol.PixelFormat` describes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..shared.geometry import Bounds, Extent
from ..shared.protocol import PixelFormat

Bytes = bytes | bytearray | memoryview


@dataclass(frozen=True)
class PixelBuffer:
    """Pixels and their shape; the data's length always matches the shape."""

    data: Bytes
    format: PixelFormat

    def __post_init__(self) -> None:
        self.format.check()
        if len(self.data) != self.format.nbytes:
            raise ValueError(f"{len(self.data)} bytes for {self.format.width}x"
                             f"{self.format.height}x{self.format.channels} "
                             f"{self.format.depth}-bit pixels ({self.format.nbytes} bytes)")

    @property
    def extent(self) -> Extent:
        return Extent(self.format.width, self.format.height)

    @property
    def channels(self) -> int:
        return self.format.channels

    @property
    def depth(self) -> int:
        return self.format.depth


def swap_red_blue(data: Bytes, depth: int = 8) -> bytearray:
    """RGBA to BGRA or back (4 channels): Krita's native order for 8 and 16-bit RGB."""
    src = bytes(data)
    out = bytearray(src)
    size = depth // 8
    step = 4 * size
    for byte in range(size):
        out[byte::step] = src[2 * size + byte::step]
        out[2 * size + byte::step] = src[byte::step]
    return out


def to_channels(buffer: PixelBuffer, channels: int) -> PixelBuffer:
    """The same pixels with 1, 2, 3 or 4 channels: gray is repeated into RGB, a missing alpha
    is opaque, and colour becomes gray by its Rec. 601 luma (slow: pure Python, rarely needed)."""
    have = buffer.channels
    if have == channels:
        return buffer
    fmt = buffer.format
    size = fmt.depth // 8
    count = fmt.width * fmt.height
    src = bytes(buffer.data)
    planes = [src[c * size + b::have * size] for c in range(have) for b in range(size)]

    def plane(c: int) -> list[bytes]:
        return planes[c * size:(c + 1) * size]

    colour_in = 1 if have in (1, 2) else 3
    colour_out = 1 if channels in (1, 2) else 3
    if colour_in == colour_out:
        colour = [plane(c) for c in range(colour_in)]
    elif colour_in == 1:
        colour = [plane(0)] * 3
    else:
        colour = [_gray(plane(0), plane(1), plane(2), size)]
    opaque = [b"\xff" * count] * size
    alpha = plane(have - 1) if have in (2, 4) else opaque
    layout = colour + ([alpha] if channels in (2, 4) else [])
    out = bytearray(count * channels * size)
    for c, parts in enumerate(layout):
        for b in range(size):
            out[c * size + b::channels * size] = parts[b]
    return PixelBuffer(out, PixelFormat(fmt.width, fmt.height, channels, fmt.depth))


def _gray(r: list[bytes], g: list[bytes], b: list[bytes], size: int) -> list[bytes]:
    """Rec. 601 luma of three planes (byte planes, low byte first for 16-bit)."""
    if size == 1:
        return [bytes((299 * x + 587 * y + 114 * z + 500) // 1000
                      for x, y, z in zip(r[0], g[0], b[0]))]
    values = [(299 * (r0 | r1 << 8) + 587 * (g0 | g1 << 8) + 114 * (b0 | b1 << 8) + 500) // 1000
              for r0, r1, g0, g1, b0, b1 in zip(r[0], r[1], g[0], g[1], b[0], b[1])]
    return [bytes(v & 0xFF for v in values), bytes(v >> 8 for v in values)]


def crop(buffer: PixelBuffer, region: Bounds) -> PixelBuffer:
    """The pixels of `region` (in the buffer's own coordinates), which must lie inside it."""
    fmt = buffer.format
    if not Bounds.of(buffer.extent).contains(region) or region.is_empty:
        raise ValueError(f"{region} is not inside a {fmt.width}x{fmt.height} image")
    pixel = fmt.channels * fmt.depth // 8
    row = fmt.width * pixel
    view = memoryview(buffer.data)
    out = bytearray()
    for y in range(region.y, region.bottom):
        start = y * row + region.x * pixel
        out += view[start:start + region.width * pixel]
    return PixelBuffer(out, PixelFormat(region.width, region.height, fmt.channels, fmt.depth))


def clear_transparent(buffer: PixelBuffer) -> PixelBuffer:
    """Pixels with zero alpha become all zero: editors then see them as empty (a layer's
    bounds shrink to what shows, and its file stays small).

    Done plane by plane with big-integer AND, which runs in C: no loop over pixels.
    """
    fmt = buffer.format
    if fmt.channels not in (2, 4):
        return buffer
    size = fmt.depth // 8
    step = fmt.channels * size
    data = bytearray(buffer.data)
    count = fmt.width * fmt.height
    alpha = 0
    for b in range(size):
        alpha |= int.from_bytes(data[step - size + b::step], "little")
    # 0x00 stays 0x00, any other byte becomes 0xff: a keep mask with one byte per pixel
    keep = int.from_bytes(alpha.to_bytes(count, "little").translate(_KEEP), "little")
    for offset in range(step - size):
        plane = int.from_bytes(data[offset::step], "little") & keep
        data[offset::step] = plane.to_bytes(count, "little")
    return PixelBuffer(data, fmt)


_KEEP = bytes([0] + [255] * 255)


def is_blank(plane: Bytes) -> bool:
    """True when every byte is zero: a mask that selects nothing."""
    data = bytes(plane)
    return data.count(0) == len(data)
