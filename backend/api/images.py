"""POST /v1/images: upload an image or mask (PNG or raw pixels) once; jobs name it by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool

from backend import imaging
from backend.api import transport
from backend.api.deps import ImagesDep, SettingsDep
from backend.api.errors import errors_doc
from backend.api.image_store import info
from shared.protocol import IMAGE_ID_PATTERN, PNG_MEDIA_TYPE, RAW_PIXELS_MEDIA_TYPE, ImageInfo

router = APIRouter(prefix="/v1", tags=["images"])

ImageId = Annotated[
    str, Path(pattern=IMAGE_ID_PATTERN, description="sha256 id from POST /v1/images")
]

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            f"PNG (8 or 16 bits, gray/RGB with or without alpha) or any image Pillow reads, or "
            f"raw pixels as `{RAW_PIXELS_MEDIA_TYPE}; width=W; height=H; channels=C; depth=D`: "
            "rows top to bottom, channels interleaved (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA), "
            "16-bit little-endian."
        ),
        "content": {PNG_MEDIA_TYPE: _BINARY, RAW_PIXELS_MEDIA_TYPE: _BINARY},
    }
}
_ERRORS = errors_doc(
    {
        400: ("image_decode", "image_too_small"),
        408: ("body_timeout",),
        413: ("upload_too_large", "image_too_large"),
        415: ("unsupported_media_type",),
        422: ("invalid_pixels", "invalid_request"),
    }
)


@router.post(
    "/images",
    status_code=201,
    response_model=ImageInfo,
    openapi_extra=_UPLOAD_BODY,
    responses=_ERRORS,
    summary="Upload an image or mask",
)
async def upload_image(request: Request, settings: SettingsDep, images: ImagesDep) -> dict:
    """Store pixels for jobs to use; the id is the sha256 of the shape and the pixels.

    The size is checked from the PNG header or the raw content type before anything is
    decoded, so an oversized image (or a decompression bomb) costs nothing.
    """
    kind = transport.check_upload_type(request)
    fmt = None
    if kind == RAW_PIXELS_MEDIA_TYPE:
        fmt = transport.raw_format(request, settings.max_pixels, settings.max_upload_bytes)
    body = await transport.read_body(request, settings.max_upload_bytes)

    def decode() -> dict:
        if fmt is not None:
            pixels = transport.decode_raw(body, fmt)
        else:
            pixels = imaging.decode(body, settings.max_pixels)
        image_id = transport.content_id(pixels)
        images.put(image_id, pixels)
        return info(image_id, pixels).to_json()

    return await run_in_threadpool(decode)


@router.get(
    "/images/{image_id}",
    response_model=ImageInfo,
    responses=errors_doc({404: ("image_not_found",), 422: ("invalid_request",)}),
    summary="Whether the server holds an image",
)
def get_image(image_id: ImageId, images: ImagesDep) -> dict:
    """A client that computed the id itself can skip uploading pixels the server already has."""
    return info(image_id, images.get(image_id)).to_json()


@router.delete(
    "/images/{image_id}",
    status_code=204,
    responses=errors_doc({422: ("invalid_request",)}),
    summary="Forget an uploaded image",
)
def delete_image(image_id: ImageId, images: ImagesDep) -> Response:
    images.discard(image_id)
    return Response(status_code=204)
