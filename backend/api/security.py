"""The guard in front of every request: host, origin, token and body size.

* Browsers are refused: a request with an Origin header from another origin (or "null", which
  sandboxed pages send), or with Sec-Fetch-Site saying it comes from another site, is answered
  403. The plug-ins' HTTP clients send neither header; /docs is served from this origin and
  may call the API. So a web page cannot drive the server from the user's own browser.
* Bound to loopback, the Host header must name loopback: a DNS-rebinding page that resolves its
  own name to 127.0.0.1 sends its own name as Host and is refused.
* With a token, every request needs `Authorization: Bearer TOKEN`, except /v1/health (which
  then answers without details) and the API description (/docs, /openapi.json).
* A Content-Length beyond the upload limit is refused before the body is read.

A plain ASGI middleware, not BaseHTTPMiddleware, so streamed responses pass untouched.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from backend.api.errors import error_response
from backend.settings import LOOPBACK_NAMES, Settings

OPEN_PATHS = frozenset({"/v1/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
#: JSON requests are small; only /v1/images takes large bodies
MAX_JSON_BYTES = 1 << 20
UPLOAD_PATHS = ("/v1/images",)


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._token = settings.token.encode() if settings.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            if scope["type"] == "websocket":  # no websocket endpoints; never accept one
                await send({"type": "websocket.close", "code": 1008})
                return
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]):  # -> Response | None
        host = headers.get("host")
        if self.settings.loopback and host is not None and not _names_loopback(host):
            return error_response(
                "forbidden_host",
                f"Host '{host}' is not this computer.",
                "This server only answers requests addressed to localhost or 127.0.0.1.",
                403,
            )
        origin = headers.get("origin")
        if origin is not None and not _same_origin(origin, host, scope):
            return error_response(
                "forbidden_origin",
                f"Requests from web pages ({origin}) are refused.",
                "Call the server from a plug-in or script, not from a browser page.",
                403,
            )
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return error_response(
                "forbidden_origin",
                f"Requests from other sites ({site}) are refused.",
                "Call the server from a plug-in or script, not from a browser page.",
                403,
            )
        path = scope.get("path", "")
        authenticated = self._token is None or _bearer_matches(headers, self._token)
        scope["restora.authenticated"] = authenticated
        if not authenticated and path not in OPEN_PATHS:
            return error_response(
                "unauthorized",
                "This server needs a token: the request has a missing or wrong "
                "'Authorization: Bearer ...' header.",
                "Enter the token the server was started with (--token) in the plug-in's settings.",
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        length = headers.get("content-length")
        limit = self.settings.max_upload_bytes if path.startswith(UPLOAD_PATHS) else MAX_JSON_BYTES
        if length is not None and length.isdigit() and int(length) > limit:
            return error_response(
                "upload_too_large",
                f"The request body is {int(length) / 2**20:.1f} MiB, more than the limit of "
                f"{limit / 2**20:.0f} MiB for {path}.",
                "Send a smaller image or raise max_upload_bytes.",
                413,
            )
        return None


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _hostname(netloc: str) -> str:
    return (urlsplit(f"//{netloc}").hostname or "").lower()


def _names_loopback(host: str) -> bool:
    name = _hostname(host)
    return name in LOOPBACK_NAMES or name.startswith("127.")


def _same_origin(origin: str, host: str | None, scope: Scope) -> bool:
    if origin == "null" or host is None:
        return False
    parts = urlsplit(origin)
    scheme = scope.get("scheme", "http")
    default = 443 if scheme == "https" else 80
    try:
        origin_port = parts.port or default
        host_port = urlsplit(f"//{host}").port or default
    except ValueError:  # a port that is not a number
        return False
    return (
        parts.scheme == scheme
        and (parts.hostname or "").lower() == _hostname(host)
        and origin_port == host_port
    )


def _bearer_matches(headers: dict[str, str], token: bytes) -> bool:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token)
