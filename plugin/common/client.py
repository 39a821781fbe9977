"""The backend's HTTP API, from any editor: standard library only, blocking, thread-safe.

Call it from a worker thread, never from the editor's UI thread (job_runner.py does). Each
request opens its own connection, so one `Client` serves several threads at once; every
failure becomes a `PluginError` a painter can read, never a socket error.

http.client rather than urllib: urllib honours http_proxy for 127.0.0.1 on some systems, and
the event stream needs its socket (to be closed from another thread on cancel).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ..shared.protocol import (
    EVENT_STREAM_MEDIA_TYPE,
    PROTOCOL_VERSION,
    RAW_PIXELS_MEDIA_TYPE,
    CatalogModelInfo,
    DownloadInfo,
    DownloadRequest,
    ErrorResponse,
    Health,
    ImageInfo,
    JobEvent,
    JobRequest,
    JobStatus,
    ModelInfo,
    PixelFormat,
    ProtocolError,
    TaskInfo,
)
from .errors import (
    BackendUnavailable,
    PluginError,
    ProtocolMismatch,
    ServerError,
    Unauthorized,
)
from .event_stream import EventParser
from .pixels import PixelBuffer
from .settings import normalise_url

#: seconds to wait for a connection and for each answer of an ordinary request
DEFAULT_TIMEOUT = 10.0
#: an event stream with no byte for this long is taken for dead (the server sends a keepalive
#: comment every 15 s by default)
EVENT_IDLE_TIMEOUT = 40.0
#: uploads and downloads get this much time per MiB on top of the timeout (a slow network)
SECONDS_PER_MIB = 1.0
_CHUNK = 1 << 20

ProgressCallback = Callable[[int, int], None]


class Client:
    def __init__(self, url: str, token: str = "", timeout: float = DEFAULT_TIMEOUT,
                 client_id: str | None = None) -> None:
        normalised = normalise_url(url)
        if normalised is None:
            raise PluginError(f"'{url}' is not a backend address.",
                              "Enter an address like http://127.0.0.1:8765 in the settings.")
        self.url = normalised
        parts = urlsplit(normalised)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path
        self.token = token.strip()
        self.timeout = timeout
        #: events of this client's jobs come on its own stream (GET /v1/events?client=...)
        self.client_id = client_id or f"editor-{uuid.uuid4().hex[:12]}"
        self.instance: str | None = None
        self._seq: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def is_local(self) -> bool:
        return self._host in ("localhost", "::1") or self._host.startswith("127.")

    # --- backend information ---

    def health(self) -> Health:
        data = self._json("GET", "/v1/health")
        try:
            health = Health.from_json(data)
        except ProtocolError:
            raise ProtocolMismatch(f"The server at {self.url} is not a Restora backend.",
                                   "Check the backend address in the settings.") from None
        if health.instance is not None:
            self.instance = health.instance
        return health

    def connect(self) -> Health:
        """Health, checked: the protocol matches and the token (if one is needed) works."""
        health = self.health()
        if health.protocol_version != PROTOCOL_VERSION:
            newer = health.protocol_version > PROTOCOL_VERSION
            raise ProtocolMismatch(
                f"Restora's backend {health.version} speaks protocol {health.protocol_version}, "
                f"this plug-in speaks protocol {PROTOCOL_VERSION}.",
                "Update the plug-in: Restora's installer installs the one that matches the "
                "backend." if newer else "Update the backend to the plug-in's version.")
        if health.auth_required and health.instance is None:
            if self.token:
                raise Unauthorized(f"The backend at {self.url} refused the token.",
                                   "Enter the backend's token in Restora's settings.")
            raise Unauthorized(f"The backend at {self.url} needs a token.",
                               "Enter the backend's token in Restora's settings.")
        return health

    def tasks(self) -> list[TaskInfo]:
        return [TaskInfo.from_json(t) for t in self._json_list("GET", "/v1/tasks")]

    def models(self, task: str | None = None) -> list[ModelInfo]:
        query = f"?{urlencode({'task': task})}" if task else ""
        return [ModelInfo.from_json(m) for m in self._json_list("GET", f"/v1/models{query}")]

    # --- model downloads ---

    def catalog_models(self, task: str | None = None) -> list[CatalogModelInfo]:
        """What the backend can download (only for `task`, a TaskInfo.catalog_task); an older
        backend without downloads has none."""
        query = f"?{urlencode({'task': task})}" if task else ""
        try:
            data = self._json_list("GET", f"/v1/catalog{query}")
        except ServerError as exc:
            if exc.status == 404:
                return []
            raise
        return [_parse(CatalogModelInfo, m) for m in data]

    def start_download(self, name: str, accept_licence: bool = False) -> DownloadInfo:
        """Have the backend download catalog model `name`. A licence that must be accepted
        first raises ServerError with code "licence_not_accepted" and the licence named."""
        body = DownloadRequest(name=name, accept_licence=accept_licence).to_json()
        try:
            return _parse(DownloadInfo, self._json("POST", "/v1/downloads", body=body))
        except ServerError as exc:
            if exc.status == 404 and exc.code == "not_found":  # the route, not the model
                raise ServerError(
                    f"The backend at {self.url} cannot download models; it is older than "
                    "this plug-in.",
                    "Update the backend with Restora's installer.", code="not_found",
                    status=404) from None
            raise

    def download_status(self, download_id: str) -> DownloadInfo:
        return _parse(DownloadInfo, self._json("GET", f"/v1/downloads/{quote(download_id)}"))

    def cancel_download(self, download_id: str) -> None:
        """Stop a download; one the backend no longer knows is stopped already."""
        try:
            self._request("DELETE", f"/v1/downloads/{quote(download_id)}")
        except ServerError as exc:
            if exc.status != 404:
                raise

    # --- images and jobs ---

    def upload(self, pixels: PixelBuffer) -> str:
        """Send pixels (skipped when a remote backend already holds them); returns their id."""
        fmt = pixels.format
        if not self.is_local:  # on loopback sending is faster than asking first
            image_id = fmt.content_id(pixels.data)
            if self._holds(image_id):
                return image_id
        data = self._json("POST", "/v1/images", body=pixels.data,
                          content_type=fmt.media_type(), timeout=self._transfer_time(fmt.nbytes))
        return _parse(ImageInfo, data).id

    def submit(self, request: JobRequest) -> JobStatus:
        return _parse(JobStatus, self._json("POST", "/v1/jobs", body=request.to_json()))

    def status(self, job_id: str) -> JobStatus:
        return _parse(JobStatus, self._json("GET", f"/v1/jobs/{quote(job_id)}"))

    def cancel(self, job_id: str) -> JobStatus:
        return _parse(JobStatus, self._json("POST", f"/v1/jobs/{quote(job_id)}/cancel"))

    def remove(self, job_id: str) -> None:
        """Forget a job and free its result on the server; a job already gone is fine."""
        try:
            self._request("DELETE", f"/v1/jobs/{quote(job_id)}")
        except ServerError as exc:
            if exc.status != 404:
                raise

    def result(self, job_id: str, output: str | None = None,
               progress: ProgressCallback | None = None) -> PixelBuffer:
        """One output of a finished job (the first when `output` is None), as raw pixels."""
        query = {"format": "raw", **({"output": output} if output else {})}
        conn = self._connection(self.timeout)
        try:
            resp = self._send(conn, "GET", f"/v1/jobs/{quote(job_id)}/result?{urlencode(query)}",
                              headers={"Accept": RAW_PIXELS_MEDIA_TYPE})
            if resp.status != 200:
                self._raise_for(resp.status, resp.reason, _read(resp))
            try:
                fmt = PixelFormat.parse(resp.getheader("Content-Type", ""))
            except ProtocolError as exc:
                raise ProtocolMismatch(f"The backend sent a result this plug-in cannot read "
                                       f"({exc}).", "Update the plug-in and the backend.") from None
            conn.sock.settimeout(self._transfer_time(fmt.nbytes))
            data = bytearray(fmt.nbytes)
            view = memoryview(data)
            got = 0
            while got < fmt.nbytes:
                n = resp.readinto(view[got:got + _CHUNK])
                if not n:
                    raise BackendUnavailable.at(self.url, "the result download broke off")
                got += n
                if progress is not None:
                    progress(got, fmt.nbytes)
            return PixelBuffer(data, fmt)
        except (OSError, http.client.HTTPException) as exc:
            raise self._unavailable(exc) from None
        finally:
            conn.close()

    def events(self, after: int | None = None) -> EventStream:
        """This client's job events, starting after event number `after`."""
        query: dict[str, Any] = {"client": self.client_id}
        if after is not None:
            query["after"] = after
        conn = self._connection(self.timeout)
        try:
            resp = self._send(conn, "GET", f"/v1/events?{urlencode(query)}",
                              headers={"Accept": EVENT_STREAM_MEDIA_TYPE})
            if resp.status != 200:
                self._raise_for(resp.status, resp.reason, _read(resp))
            conn.sock.settimeout(EVENT_IDLE_TIMEOUT)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._unavailable(exc) from None
        except BaseException:
            conn.close()
            raise
        return EventStream(self, conn, resp)

    # - event numbers, so a new stream starts after what this client has seen -

    def last_seq(self, instance: str | None) -> int | None:
        with self._lock:
            return self._seq.get(instance or "")

    def saw_seq(self, instance: str | None, seq: int) -> None:
        with self._lock:
            key = instance or ""
            self._seq[key] = max(seq, self._seq.get(key, 0))

    # --- plumbing ---

    def _holds(self, image_id: str) -> bool:
        try:
            self._request("GET", f"/v1/images/{image_id}")
            return True
        except ServerError as exc:
            if exc.status == 404:
                return False
            raise

    def _transfer_time(self, nbytes: int) -> float:
        return self.timeout + SECONDS_PER_MIB * nbytes / (1 << 20)

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _send(self, conn: http.client.HTTPConnection, method: str, path: str,
              body: Any = None, headers: dict[str, str] | None = None,
              ) -> http.client.HTTPResponse:
        all_headers = {"User-Agent": "restora-plugin", **(headers or {})}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        conn.request(method, self._prefix + path, body=body, headers=all_headers)
        return conn.getresponse()

    def _request(self, method: str, path: str, body: Any = None, content_type: str = "",
                 timeout: float | None = None) -> bytes:
        headers = {"Accept": "application/json"}
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        conn = self._connection(timeout or self.timeout)
        try:
            resp = self._send(conn, method, path, body, headers)
            data = _read(resp)
        except (OSError, http.client.HTTPException) as exc:
            raise self._unavailable(exc) from None
        finally:
            conn.close()
        if resp.status >= 400:
            self._raise_for(resp.status, resp.reason, data)
        return data

    def _json(self, method: str, path: str, body: Any = None, content_type: str = "",
              timeout: float | None = None) -> Any:
        data = self._request(method, path, body, content_type, timeout)
        try:
            return json.loads(data)
        except ValueError:
            raise ProtocolMismatch(f"The server at {self.url} is not a Restora backend "
                                   f"(it answered {path} with something other than JSON).",
                                   "Check the backend address in the settings.") from None

    def _json_list(self, method: str, path: str) -> list[Any]:
        data = self._json(method, path)
        if not isinstance(data, list):
            raise ProtocolMismatch(f"The backend's answer to {path} is not a list.",
                                   "Update the plug-in and the backend.")
        return data

    def _raise_for(self, status: int, reason: str, body: bytes) -> None:
        try:
            error = ErrorResponse.from_json(json.loads(body)).error
        except (ValueError, ProtocolError):
            raise ServerError(f"The backend at {self.url} answered {status} {reason}.",
                              "Check that the address is that of a Restora backend.",
                              status=status) from None
        if status == 401:
            raise Unauthorized(error.message, error.hint)
        raise ServerError(error.message, error.hint, code=error.code, status=status)

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        if isinstance(exc, (TimeoutError, socket.timeout)):
            reason = "it did not answer in time"
        elif isinstance(exc, ConnectionRefusedError):
            reason = ""
        elif isinstance(exc, socket.gaierror):
            reason = f"no computer is called {self._host}"
        elif isinstance(exc, (ConnectionResetError, http.client.RemoteDisconnected,
                              http.client.IncompleteRead, BrokenPipeError)):
            reason = "the connection broke off"
        else:
            reason = str(exc) or type(exc).__name__
        return BackendUnavailable.at(self.url, reason)


class EventStream:
    """An open GET /v1/events response; iterate for JobEvents, `close()` from any thread."""

    def __init__(self, client: Client, conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse) -> None:
        self._client = client
        self._conn = conn
        self._resp = resp
        self._sock = conn.sock
        self._closed = threading.Event()
        self.parser = EventParser()

    def __iter__(self) -> Iterator[JobEvent]:
        """Events until the stream ends; a broken or silent connection raises
        BackendUnavailable, and a stream closed by `close()` simply ends."""
        try:
            while not self._closed.is_set():
                line = self._resp.readline()
                if not line:
                    if self._closed.is_set():
                        return
                    raise BackendUnavailable.at(self._client.url, "the event stream ended")
                event = self.parser.feed(line.decode("utf-8", "replace"))
                if event is None:
                    continue
                try:
                    yield _parse(JobEvent, json.loads(event.data))
                except ValueError:
                    continue  # not JSON: not an event of this protocol
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if self._closed.is_set():
                return
            raise self._client._unavailable(exc) from None

    def close(self) -> None:
        """Stop reading; wakes a thread blocked in the iteration at once."""
        if self._closed.is_set():
            return
        self._closed.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by the other side
                sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read(resp: http.client.HTTPResponse) -> bytes:
    return resp.read()


def _parse(cls: Any, data: Any) -> Any:
    try:
        return cls.from_json(data)
    except ProtocolError as exc:
        raise ProtocolMismatch(f"The backend's answer does not follow the protocol: {exc}.",
                               "Install the plug-in that comes with the backend.") from None
