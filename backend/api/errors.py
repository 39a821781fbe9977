"""Every error answer has one shape, `{"error": {"code", "message", "hint"}}` (ErrorResponse).

RestoraError subclasses carry their own code and status; request validation errors become 422
naming the field; HTTP errors (unknown path, wrong method) keep their status.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.errors import RestoraError
from shared.protocol import ErrorResponse

log = logging.getLogger("restora.api")

#: an error message is at most this long: none repeats a whole oversized value it was sent
MAX_MESSAGE_CHARS = 2000


class UnauthorizedError(RestoraError):
    code = "unauthorized"
    http_status = 401


class ForbiddenError(RestoraError):
    code = "forbidden"
    http_status = 403


class UnsupportedMediaTypeError(RestoraError):
    code = "unsupported_media_type"
    http_status = 415


class UploadTooLargeError(RestoraError):
    code = "upload_too_large"
    http_status = 413


class BodyTimeoutError(RestoraError):
    """A request body that stopped arriving."""

    code = "body_timeout"
    http_status = 408


class InvalidPixelsError(RestoraError):
    """Raw pixels whose declared shape does not match the bytes sent."""

    code = "invalid_pixels"
    http_status = 422


def errors_doc(codes: dict[int, tuple[str, ...]]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error answers: the ErrorResponse body, and the codes it carries."""
    return {
        status: {
            "model": ErrorResponse,
            "description": "error codes: " + ", ".join(f"`{c}`" for c in names),
        }
        for status, names in codes.items()
    }


def _capped(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


def error_response(
    code: str,
    message: str,
    hint: str = "",
    status: int = 400,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": _capped(message), "hint": _capped(hint)}},
        status_code=status,
        headers=headers,
    )


def restora_error_response(exc: RestoraError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return error_response(exc.code, exc.message, exc.hint, exc.http_status, headers)


_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "upload_too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RestoraError)
    async def on_restora_error(_request: Request, exc: RestoraError) -> JSONResponse:
        return restora_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                reason = err.get("ctx", {}).get("error", "")
                problems.append(
                    f"The body is not valid JSON ({reason})"
                    if reason
                    else "The body is not valid JSON"
                )
                continue
            where = ".".join(str(p) for p in err.get("loc", ()))
            problems.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg"))
        return error_response(
            "invalid_request",
            "; ".join(problems) or "Invalid request.",
            "See /docs for the request format.",
            422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "No such endpoint."
        elif exc.status_code == 400 and message == "There was an error parsing the body":
            message = "The body could not be parsed (JSON nested too deeply, or unreadable)."
        return error_response(
            code,
            message,
            "See /docs for the endpoints.",
            exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return error_response(
            "internal",
            f"Unexpected server error: {exc!r}.",
            "This is a bug in Restora; the server log has the details.",
            500,
        )
