"""Decoding, encoding and validating images without losing depth or alpha.

Pixels travel inside Restora as numpy arrays shaped (height, width, channels) with 1 (gray),
2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels, dtype uint8 or uint16. Pillow reads headers
and 8-bit images; OpenCV reads and writes 16-bit colour, which Pillow would truncate to 8 bits.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from backend.errors import (
    ImageDecodeError,
    ImageTooLargeError,
    ImageTooSmallError,
    OutputWriteError,
)

DEFAULT_MAX_PIXELS = 100_000_000
MIN_SIDE = 2
#: JPEG and WebP quality when none is given
DEFAULT_QUALITY = 95
#: formats without an alpha channel: transparency is composited on white (like a print)
NO_ALPHA_FORMATS = ("JPEG", "BMP")
#: formats that hold 8 bits per channel at most
EIGHT_BIT_FORMATS = ("JPEG", "WEBP", "BMP")
#: PNG files of more pixel bytes than this are encoded band by band into the file
#: (backend/png_stream.py) instead of through Pillow's copy of the image and an in-memory file
STREAMED_PNG_BYTES = 128 << 20


def max_input_pixels() -> int:
    return int(os.environ.get("RESTORA_MAX_PIXELS", DEFAULT_MAX_PIXELS))


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    mode: str


def check_size(width: int, height: int, max_pixels: int | None = None, what: str = "image") -> None:
    """Refuse empty, degenerate and enormous images before any pixel is decoded."""
    limit = max_input_pixels() if max_pixels is None else max_pixels
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageTooSmallError(
            f"The {what} is {width}x{height} pixels; it must be at least {MIN_SIDE}x{MIN_SIDE}.",
            "Select a larger region or layer.",
        )
    if width * height > limit:
        raise ImageTooLargeError(
            f"The {what} is {width}x{height} = {width * height / 1e6:.0f} megapixels, more than "
            f"the limit of {limit / 1e6:.0f} megapixels.",
            "Crop it or raise the limit with RESTORA_MAX_PIXELS.",
        )


def probe(data: bytes, max_pixels: int | None = None) -> ImageInfo:
    """Read only the header: format, size and mode. Raises before a decompression bomb decodes."""
    if not data:
        raise ImageDecodeError("The image file is empty.", "Choose a PNG, JPEG, WebP or TIFF file.")
    PILImage.MAX_IMAGE_PIXELS = None  # our own limit below names the size; Pillow's would not
    try:
        with PILImage.open(io.BytesIO(data)) as im:
            info = ImageInfo(im.width, im.height, im.format or "", im.mode)
    except PILImage.UnidentifiedImageError:
        raise ImageDecodeError(
            "This is not an image Restora can read.", "Use PNG, JPEG, WebP, BMP or TIFF."
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(
            f"The image header is damaged ({exc}).", "Re-export the image and try again."
        ) from None
    check_size(info.width, info.height, max_pixels)
    return info


def _is_16bit_colour(im: PILImage.Image) -> bool:
    """Pillow opens 16-bit RGB(A) PNG/TIFF as 8-bit; its raw mode still says 16."""
    tile = getattr(im, "tile", None) or []
    rawmode = tile[0][3] if tile and len(tile[0]) > 3 else None
    if isinstance(rawmode, tuple):
        rawmode = rawmode[0] if rawmode else None
    return im.mode in ("RGB", "RGBA") and isinstance(rawmode, str) and ";16" in rawmode


def _decode_opencv(data: bytes) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageDecodeError("The image data is corrupt.", "Re-export the image and try again.")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
    return np.ascontiguousarray(arr if arr.ndim == 3 else arr[:, :, None])


def _from_pillow(im: PILImage.Image) -> np.ndarray:
    mode = im.mode
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im)
        return np.clip(arr, 0, 65535).astype(np.uint16)[:, :, None]
    elif mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        return (np.clip(arr, 0.0, 1.0) * 65535 + 0.5).astype(np.uint16)[:, :, None]
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa" or mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA")
    arr = np.asarray(im)
    return np.ascontiguousarray(arr if arr.ndim == 3 else arr[:, :, None])


def decode(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Decode image bytes to (H, W, C) uint8/uint16, keeping bit depth and alpha."""
    info = probe(data, max_pixels)
    try:
        with PILImage.open(io.BytesIO(data)) as im:
            if _is_16bit_colour(im):
                arr = _decode_opencv(data)
            else:
                im.load()
                arr = _from_pillow(im)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(
            f"The {info.format or 'image'} data is corrupt or truncated ({exc}).",
            "Re-export the image and try again.",
        ) from None
    if arr.shape[0] != info.height or arr.shape[1] != info.width:
        raise ImageDecodeError("The image decoded to an unexpected size.", "Re-export the image.")
    return arr


def read_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> np.ndarray:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"Cannot read {p}: {exc.strerror}.", "Check the path.") from None
    try:
        return decode(data, max_pixels)
    except (ImageDecodeError, ImageTooLargeError, ImageTooSmallError) as exc:
        exc.message = f"{p.name}: {exc.message}"
        raise


_PIL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}


def format_for(path: str | os.PathLike[str]) -> str:
    ext = Path(path).suffix.lower()
    if ext not in _FORMATS:
        raise ImageDecodeError(
            f"Cannot write '{ext or 'no extension'}' files.",
            "Name the output .png, .jpg, .webp, .tif or .bmp.",
        )
    return _FORMATS[ext]


def flatten_for(pixels: np.ndarray, fmt: str) -> tuple[np.ndarray, list[str]]:
    """What `fmt` can hold: alpha composited on white where it has no alpha, and 16 bits
    rounded to 8 where it has 8; returns the pixels and a note for each loss."""
    notes: list[str] = []
    channels = pixels.shape[2]
    if fmt in NO_ALPHA_FORMATS and channels in (2, 4):
        peak = int(max_value(pixels.dtype))
        colour = pixels[:, :, : channels - 1].astype(np.uint32)
        alpha = pixels[:, :, channels - 1 :].astype(np.uint32)
        if alpha.min() < peak:
            notes.append(f"{fmt} has no transparency: transparent pixels are shown on white")
        # integer "over" on white, rounded: colour * a + white * (1 - a)
        flat = (colour * alpha + peak * (peak - alpha) + peak // 2) // peak
        pixels = flat.astype(pixels.dtype)
    if fmt in EIGHT_BIT_FORMATS and pixels.dtype == np.uint16:
        notes.append(f"{fmt} holds 8 bits per channel: the 16-bit result is rounded to 8 bits")
        pixels = to_uint8(pixels)
    return pixels, notes


def encode(
    pixels: np.ndarray, fmt: str = "PNG", compress_level: int = 6, quality: int = DEFAULT_QUALITY
) -> bytes:
    """Encode (H, W, C) pixels. 16-bit is kept for PNG and TIFF; other formats get what
    `flatten_for` makes of the pixels (alpha on white, 8 bits)."""
    pixels, _notes = flatten_for(pixels, fmt)
    channels = pixels.shape[2]
    streamed = _streamed_png(pixels, fmt)
    if streamed is not None:
        from backend.png_stream import write_png

        out = io.BytesIO()
        write_png(out, streamed, compress_level)  # no Pillow copy of the image beside the file
        return out.getvalue()
    if pixels.dtype == np.uint16 and fmt in ("PNG", "TIFF") and channels != 2:
        import cv2

        arr = pixels if channels == 1 else pixels[:, :, [2, 1, 0, 3][:channels]]
        ext = ".png" if fmt == "PNG" else ".tiff"
        params = [cv2.IMWRITE_PNG_COMPRESSION, min(compress_level, 9)] if fmt == "PNG" else []
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(arr), params)
        if not ok:
            raise ImageDecodeError("Could not encode the 16-bit image.", "Try another format.")
        return buf.tobytes()
    if pixels.dtype == np.uint16:
        pixels = to_uint8(pixels)  # gray+alpha at 16 bits: Pillow has no such mode
    im = PILImage.fromarray(pixels[:, :, 0] if channels == 1 else pixels, _PIL_MODES[channels])
    out = io.BytesIO()
    if fmt == "PNG":
        im.save(out, "PNG", compress_level=compress_level)
    elif fmt in ("JPEG", "WEBP"):
        im.save(out, fmt, quality=quality)
    else:
        im.save(out, fmt)
    return out.getvalue()


def _streamed_png(pixels: np.ndarray, fmt: str) -> np.ndarray | None:
    """The pixels to encode band by band (backend/png_stream.py): a PNG over
    STREAMED_PNG_BYTES, 16-bit gray + alpha made 8-bit as for a smaller one. None: the
    format or the size goes through one in-memory encoding."""
    if fmt != "PNG" or pixels.nbytes <= STREAMED_PNG_BYTES:
        return None
    if pixels.dtype == np.uint16 and pixels.shape[2] == 2:
        return to_uint8(pixels)
    return pixels


def write_image(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    compress_level: int = 6,
    quality: int = DEFAULT_QUALITY,
) -> list[str]:
    """Write atomically: a half-written file never replaces a good one, and none is left
    behind when the write fails. Returns the notes of `flatten_for` (what the format lost)."""
    p = Path(path)
    fmt = format_for(p)
    pixels, notes = flatten_for(pixels, fmt)
    streamed = _streamed_png(pixels, fmt)
    data = b"" if streamed is not None else encode(pixels, fmt, compress_level, quality)
    tmp = p.with_name(f".{p.name}.part")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            if streamed is not None:
                from backend.png_stream import write_png

                write_png(f, streamed, compress_level)
            else:
                f.write(data)
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(p, exc) from None
    return notes


def write_error(path: Path, exc: OSError) -> OutputWriteError:
    """The error a person understands for a failed write of `path`."""
    import errno

    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        hint = "Free some disk space, or write elsewhere with -o."
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "Choose a folder you can write to with -o."
    else:
        hint = "Check the output folder."
    return OutputWriteError(f"Cannot write {path}: {reason}.", hint)


def check_writable(folder: Path) -> None:
    """Raise OutputWriteError unless a file can be created in `folder` (or, where it does not
    exist yet, in its nearest existing parent): before any model is loaded."""
    import tempfile

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputWriteError(
            f"Cannot write into {folder}: {probe} is not a folder.",
            "Choose another output with -o.",
        )
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".restora-write-check-"):
            pass
    except OSError as exc:
        raise write_error(folder, exc) from None


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def max_value(dtype: np.dtype) -> float:
    return 65535.0 if dtype == np.uint16 else 255.0


def split_alpha(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour (1 or 3 channels) and alpha (or None when absent or fully opaque)."""
    channels = pixels.shape[2]
    if channels in (1, 3):
        return pixels, None
    colour, alpha = pixels[:, :, : channels - 1], pixels[:, :, channels - 1 :]
    if alpha.min() == max_value(pixels.dtype):
        return colour, None
    return colour, alpha


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """High-quality resize: area averaging when shrinking, Lanczos when enlarging."""
    import cv2

    shrinking = width * height < pixels.shape[0] * pixels.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    channels = pixels.shape[2]
    out = cv2.resize(pixels, (width, height), interpolation=interp)
    return out if out.ndim == 3 else out.reshape(height, width, channels)
