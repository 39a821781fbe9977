"""The guard in front of every request: host, origin, token and body size.

* Browsers are refused: a request with an Origin header from another origin (or "null", which
  sandboxed pages send), or with Sec-Fetch-Site saying it comes from another site, is answered
  403. The plug-ins' HTTP clients send neither header; /docs is served from this origin and
  may call the API. So a web page cannot drive the server from the user's own browser.
* Bound to loopback, the Host header must be a loopback address (127.0.0.0/8, ::1), localhost
  or a name in `allowed_hosts`: a DNS-rebinding page that resolves its own name to 127.0.0.1
  sends its own name as Host and is refused.
* With a token, every request needs `Authorization: Bearer TOKEN`, except /v1/health (which
  then answers without details) and the API description (/docs, /openapi.json).
* Bodies are bounded on every route (1 MiB, uploads `max_upload_bytes`): a Content-Length
  beyond the limit is refused before the body is read, and the bytes are counted as they
  arrive, so a chunked body cannot pass either (413). A body that sends nothing for
  `body_timeout_seconds` is answered 408 and its connection closed.

A plain ASGI middleware, not BaseHTTPMiddleware, so streamed responses pass untouched.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.errors import BodyTimeoutError, UploadTooLargeError, error_response
from backend.errors import RestoraError
from backend.settings import Settings
from shared.protocol import excerpt

OPEN_PATHS = frozenset({"/v1/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
#: JSON requests are small; only /v1/images takes large bodies
MAX_JSON_BYTES = 1 << 20
UPLOAD_PATHS = ("/v1/images",)


def body_limit(path: str, settings: Settings) -> int:
    return settings.max_upload_bytes if path.startswith(UPLOAD_PATHS) else MAX_JSON_BYTES


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._token = settings.token.encode() if settings.token else None
        self._hosts = frozenset(settings.allowed_hosts)

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
        if scope["type"] == "http":
            limit = body_limit(scope.get("path", ""), self.settings)
            await BoundedBody(self.app, limit, self.settings.body_timeout_seconds)(
                scope, receive, send
            )
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> Response | None:
        host = headers.get("host")
        if self.settings.loopback and host is not None and not self._names_this_computer(host):
            return error_response(
                "forbidden_host",
                f"Host '{excerpt(host)}' is not this computer.",
                "This server only answers requests addressed to localhost or a loopback "
                "address such as 127.0.0.1; add other names to allowed_hosts.",
                403,
            )
        origin = headers.get("origin")
        if origin is not None and not _same_origin(origin, host, scope):
            return error_response(
                "forbidden_origin",
                f"Requests from web pages ({excerpt(origin)}) are refused.",
                "Call the server from a plug-in or script, not from a browser page.",
                403,
            )
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return error_response(
                "forbidden_origin",
                f"Requests from other sites ({excerpt(site)}) are refused.",
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
        limit = body_limit(path, self.settings)
        if length is not None and length.isdigit() and int(length) > limit:
            return _refuse(too_large(int(length), limit, path))
        return None

    def _names_this_computer(self, host: str) -> bool:
        name = _hostname(host)
        return name == "localhost" or name in self._hosts or _is_loopback_address(name)


class BoundedBody:
    """One request's body, counted as it arrives: past `limit` bytes, or silent for `timeout`
    seconds, the request is answered 413 or 408 (whatever the route was about to answer) and
    its connection closed.

    The route sees the failure as a RestoraError raised by receive(); however the route or
    FastAPI maps that error, the guard's own answer is what is sent.
    """

    def __init__(self, app: ASGIApp, limit: int, timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout
        self.received = 0
        self.body_done = False
        self.failure: RestoraError | None = None
        self.started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def bounded_receive() -> Message:
            if self.failure is not None:
                raise self.failure
            if self.body_done:  # after the body only http.disconnect comes, whenever it does
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                self.failure = BodyTimeoutError(
                    f"The request body sent nothing for {self.timeout:g} s.",
                    "Send the whole body without pausing; the connection was closed.",
                )
                raise self.failure from None
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                self.body_done = not message.get("more_body", False)
                if self.received > self.limit:
                    self.failure = too_large(self.received, self.limit, scope.get("path", ""))
                    raise self.failure
            else:
                self.body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            if self.failure is None:
                if message["type"] == "http.response.start":
                    self.started = True
                await send(message)
                return
            if message["type"] == "http.response.start" and not self.started:
                self.started = True
                await _refuse(self.failure)(scope, receive, send)
            # the route's own answer to the failure is replaced by the guard's, above

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except RestoraError as exc:
            if exc is not self.failure or self.started:
                raise
            self.started = True
            await _refuse(exc)(scope, receive, send)


def too_large(size: int, limit: int, path: str) -> UploadTooLargeError:
    shown = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size} bytes"
    return UploadTooLargeError(
        f"The request body is {shown}, more than the limit of {_size(limit)} for {excerpt(path)}.",
        "Send a smaller image or raise max_upload_bytes."
        if path.startswith(UPLOAD_PATHS)
        else "A JSON request is small; send images with POST /v1/images.",
    )


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def _refuse(exc: RestoraError) -> Response:
    # the rest of the body is never read: the connection cannot carry another request
    return error_response(
        exc.code, exc.message, exc.hint, exc.http_status, headers={"Connection": "close"}
    )


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _hostname(netloc: str) -> str:
    try:
        return (urlsplit(f"//{netloc}").hostname or "").lower()
    except ValueError:  # "[::1" and other malformed hosts name nothing
        return ""


def _is_loopback_address(name: str) -> bool:
    """127.0.0.0/8 or ::1 written as an address; 127.attacker.example is a name, not one."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _same_origin(origin: str, host: str | None, scope: Scope) -> bool:
    if origin == "null" or host is None:
        return False
    scheme = scope.get("scheme", "http")
    default = 443 if scheme == "https" else 80
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or default
        host_port = urlsplit(f"//{host}").port or default
    except ValueError:  # a port that is not a number, a malformed IPv6 address
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
