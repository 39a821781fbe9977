"""Pixels in and out of HTTP bodies, losslessly: raw pixels or PNG, 8 or 16 bits, with alpha.

Raw pixels (application/x-restora-pixels; width=..; height=..; channels=..; depth=..) cost
nothing to encode or decode, which makes them the fastest lossless path on loopback (see
bench/server_roundtrip.py); PNG is accepted and returned for scripts and curl. Any other image
type Pillow reads is accepted as input too.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from backend import imaging
from backend.api.errors import InvalidPixelsError, UnsupportedMediaTypeError, UploadTooLargeError
from shared.protocol import PNG_MEDIA_TYPE, RAW_PIXELS_MEDIA_TYPE, PixelFormat, ProtocolError

#: a raw result is sent in slices of the array itself: no copy of a 500 MB result
CHUNK_BYTES = 4 << 20
IMAGE_FORMATS = ("raw", "png")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def raw_format(request: Request, max_pixels: int, max_bytes: int) -> PixelFormat:
    """The declared shape of a raw upload, checked against the limits before any byte is read."""
    try:
        fmt = PixelFormat.parse(request.headers.get("content-type", ""))
    except ProtocolError as exc:
        raise InvalidPixelsError(
            f"Bad content type: {exc}.",
            f"Send {RAW_PIXELS_MEDIA_TYPE}; width=W; height=H; channels=1|2|3|4; depth=8|16.",
        ) from None
    imaging.check_size(fmt.width, fmt.height, max_pixels)
    if fmt.nbytes > max_bytes:
        raise UploadTooLargeError(
            f"{fmt.width}x{fmt.height}x{fmt.channels} {fmt.depth}-bit pixels are "
            f"{fmt.nbytes / 2**20:.0f} MiB, more than the upload limit of "
            f"{max_bytes / 2**20:.0f} MiB.",
            "Send a smaller image or raise max_upload_bytes.",
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) != fmt.nbytes:
        raise InvalidPixelsError(
            f"The body is {length} bytes but {fmt.width}x{fmt.height}x{fmt.channels} "
            f"{fmt.depth}-bit pixels are {fmt.nbytes} bytes.",
            "Check width, height, channels and depth in the content type.",
        )
    return fmt


def check_upload_type(request: Request) -> str:
    kind = media_type(request)
    if (
        kind == RAW_PIXELS_MEDIA_TYPE
        or kind.startswith("image/")
        or kind == "application/octet-stream"
    ):
        return kind
    raise UnsupportedMediaTypeError(
        f"Cannot read an image sent as '{kind or 'no content type'}'.",
        f"Send {PNG_MEDIA_TYPE} (or another image type) or {RAW_PIXELS_MEDIA_TYPE}; "
        "width=W; height=H; channels=C; depth=8|16.",
    )


async def read_body(request: Request, limit: int) -> bytearray:
    """The request body, refusing it as soon as it passes `limit` bytes.

    The buffer grows with the bytes that arrived, never with what Content-Length declares: a
    client that declares 512 MiB and sends 4 bytes costs 4 bytes. (The guard also times out a
    body that stops arriving.)
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(int(length), limit)
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise _too_large(len(body) + len(chunk), limit)
        body += chunk
    return body


def _too_large(size: int, limit: int) -> UploadTooLargeError:
    return UploadTooLargeError(
        f"The upload is {size / 2**20:.1f} MiB, more than the limit of {limit / 2**20:.0f} MiB.",
        "Send a smaller image or raise max_upload_bytes.",
    )


def decode_raw(body: bytearray, fmt: PixelFormat) -> np.ndarray:
    if len(body) != fmt.nbytes:
        raise InvalidPixelsError(
            f"The body is {len(body)} bytes but {fmt.width}x{fmt.height}x{fmt.channels} "
            f"{fmt.depth}-bit pixels are {fmt.nbytes} bytes.",
            "Check width, height, channels and depth in the content type.",
        )
    dtype = np.dtype("<u2") if fmt.depth == 16 else np.dtype(np.uint8)
    pixels = np.frombuffer(body, dtype=dtype).reshape(fmt.height, fmt.width, fmt.channels)
    return pixels.astype(np.uint16, copy=False) if fmt.depth == 16 else pixels


def pixel_format(pixels: np.ndarray) -> PixelFormat:
    height, width, channels = pixels.shape
    return PixelFormat(width, height, channels, 16 if pixels.dtype == np.uint16 else 8)


def little_endian(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype("<u2", copy=False) if pixels.dtype == np.uint16 else pixels


def content_id(pixels: np.ndarray) -> str:
    return pixel_format(pixels).content_id(memoryview(np.ascontiguousarray(little_endian(pixels))))


def choose_format(request: Request, explicit: str | None) -> str:
    """`?format=` if given, else raw when the Accept header asks for it, else PNG."""
    if explicit is not None:
        return explicit
    accept = request.headers.get("accept", "").lower()
    return "raw" if RAW_PIXELS_MEDIA_TYPE in accept else "png"


def raw_response(pixels: np.ndarray, headers: dict[str, str] | None = None) -> StreamingResponse:
    data = memoryview(np.ascontiguousarray(little_endian(pixels))).cast("B")

    def chunks() -> Iterator[memoryview]:
        for start in range(0, len(data), CHUNK_BYTES):
            yield data[start : start + CHUNK_BYTES]

    fmt = pixel_format(pixels)
    return StreamingResponse(
        chunks(),
        media_type=fmt.media_type(),
        headers={"Content-Length": str(fmt.nbytes), **(headers or {})},
    )


def png_response(
    pixels: np.ndarray, compress_level: int, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        imaging.encode(np.asarray(pixels), "PNG", compress_level),
        media_type=PNG_MEDIA_TYPE,
        headers=headers,
    )
