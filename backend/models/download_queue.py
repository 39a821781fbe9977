"""The model downloads the server runs for the editors: one at a time, on a background thread.

A request names a catalog entry. What needs the user (a licence to accept) or is refused
outright (no pinned SHA-256, an unknown name) is answered when it is asked for, so the editor
hears at once; the file itself then comes through `download_model`: into `<file>.part`,
resumed after a broken connection, and moved under its name only when size and hash match.
A cancel stops the transfer between two reads and keeps the `.part`, so asking again resumes.
When a file is in place, `on_installed` has the model registry look again and returns the
name the registry lists it under.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import RestoraError
from backend.models.catalog import Catalog, CatalogEntry
from backend.models.download import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    DownloadCancelledError,
    UnverifiedModelError,
    download_model,
)
from shared.protocol import DownloadInfo, DownloadState, ErrorBody

log = logging.getLogger("restora.downloads")

#: ended downloads kept for GET /v1/downloads, the oldest forgotten first
KEEP_ENDED = 50
#: how long a cancel waits for the transfer to stop, so its answer can say "cancelled"
CANCEL_WAIT_S = 5.0


class DownloadNotFoundError(RestoraError):
    code = "download_not_found"
    http_status = 404


class LicenceNotAcceptedError(RestoraError):
    """A non-commercial or use-restricted model asked for without accepting its licence."""

    code = "licence_not_accepted"
    http_status = 409


def licence_terms(entry: CatalogEntry) -> str:
    """The licence and what it limits, in words: "CC-BY-NC-SA-4.0 (non-commercial use only)"."""
    if entry.non_commercial:
        return f"{entry.licence} (non-commercial use only)"
    if entry.restricted_use:
        return f"{entry.licence} (use restrictions apply)"
    return entry.licence


@dataclass(eq=False)
class _Download:
    id: str
    entry: CatalogEntry
    state: DownloadState = DownloadState.QUEUED
    bytes_done: int = 0
    bytes_total: int | None = None
    error: ErrorBody | None = None
    model: str = ""
    created: float = field(default_factory=time.time)
    finished: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    def info(self) -> DownloadInfo:
        return DownloadInfo(
            id=self.id,
            name=self.entry.name,
            state=self.state,
            bytes_done=self.bytes_done,
            bytes_total=self.bytes_total,
            error=self.error,
            model=self.model,
            label=self.entry.display_label,
            task=self.entry.task,
            created=self.created,
            finished=self.finished,
        )


class DownloadQueue:
    """Catalog downloads into `models_root`, one at a time; thread-safe.

    `catalog` is read on every request (a changed catalog file is picked up); `search_roots`
    are the other models folders, where an intact copy counts as installed already.
    """

    def __init__(
        self,
        models_root: Path,
        catalog: Callable[[], Catalog],
        *,
        search_roots: Iterable[Path] = (),
        base_url: str | None = None,
        on_installed: Callable[[Path], str] | None = None,
        retries: int = DEFAULT_RETRIES,
        timeout: float = DEFAULT_TIMEOUT_S,
        backoff: float = 1.0,
    ) -> None:
        self.models_root = models_root
        self.catalog = catalog
        self.search_roots = list(search_roots)
        self.base_url = base_url
        self.on_installed = on_installed
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self._downloads: dict[str, _Download] = {}
        self._queue: deque[_Download] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closing = False

    # - requests (any thread) -

    def request(self, name: str, accept_licence: bool = False) -> tuple[DownloadInfo, bool]:
        """Queue the download of catalog model `name`; (its status, whether it is new).

        A model already queued or downloading answers that download, not a second one."""
        entry = self.catalog().get(name)
        if not entry.verified:
            raise UnverifiedModelError(
                f"The catalog has no SHA-256 for '{entry.name}', so its download cannot be "
                "verified, and the editors do not download it.",
                f"Download it from a terminal with `restora models download {entry.name} "
                "--allow-unverified`; its hash is printed afterwards.",
            )
        if entry.needs_consent and not accept_licence:
            raise LicenceNotAcceptedError(
                f"{entry.display_label} is published under the licence "
                f"{licence_terms(entry)}; it is downloaded only once that licence is accepted.",
                "Read the licence, then ask again accepting it (accept_licence: true).",
            )
        with self._lock:
            if self._closing:
                raise RestoraError("The server is stopping.", "Try again once it has restarted.")
            for d in self._downloads.values():
                if d.entry.name == entry.name and not d.state.done:
                    return d.info(), False
            download = _Download(f"dl-{uuid.uuid4().hex[:24]}", entry, bytes_total=entry.size)
            self._downloads[download.id] = download
            self._queue.append(download)
            self._forget_old()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="restora-downloads", daemon=True
                )
                self._thread.start()
            self._wake.notify_all()
            return download.info(), True

    def get(self, download_id: str) -> DownloadInfo:
        with self._lock:
            return self._get(download_id).info()

    def list(self) -> list[DownloadInfo]:
        with self._lock:
            return [d.info() for d in self._downloads.values()]

    def cancel(self, download_id: str, wait: float = CANCEL_WAIT_S) -> DownloadInfo:
        """Stop a download: a queued one at once, a running one at its next read (waiting up
        to `wait` seconds for it). An ended download is left as it is."""
        with self._lock:
            download = self._get(download_id)
            if download.state.done:
                return download.info()
            download.stop.set()
            if download in self._queue:
                self._queue.remove(download)
                self._end(download, DownloadState.CANCELLED)
                return download.info()
        download.ended.wait(wait)
        with self._lock:
            return download.info()

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything and wait for the worker; the `.part` files stay for next time."""
        with self._lock:
            self._closing = True
            for d in self._downloads.values():
                d.stop.set()
            while self._queue:
                self._end(self._queue.popleft(), DownloadState.CANCELLED)
            self._wake.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # - the worker -

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                download = self._queue.popleft()
                download.state = DownloadState.DOWNLOADING
            self._run(download)

    def _run(self, download: _Download) -> None:
        try:
            result = download_model(
                download.entry,
                self.models_root,
                search_roots=self.search_roots,
                base_url=self.base_url,
                progress=lambda done, total: self._progress(download, done, total),
                retries=self.retries,
                timeout=self.timeout,
                backoff=self.backoff,
                stop=download.stop,
            )
            with self._lock:
                download.state = DownloadState.VERIFYING  # the registry reads the new file
            model = self.on_installed(result.path) if self.on_installed else result.path.stem
        except DownloadCancelledError:
            with self._lock:
                self._end(download, DownloadState.CANCELLED)
            return
        except RestoraError as exc:
            self._fail(download, ErrorBody(exc.code, exc.message, exc.hint))
            return
        except Exception as exc:  # a bug must end the download with a message, not hang it
            log.error("download of %s failed", download.entry.name, exc_info=exc)
            self._fail(
                download,
                ErrorBody(
                    "internal",
                    f"The download failed unexpectedly: {exc!r}.",
                    "This is a bug in Restora; the server log has the details.",
                ),
            )
            return
        with self._lock:
            download.model = model
            if download.bytes_total is not None:
                download.bytes_done = download.bytes_total
            self._end(download, DownloadState.FINISHED)

    def _progress(self, download: _Download, done: int, total: int | None) -> None:
        with self._lock:
            download.bytes_done = done
            if total is not None:
                download.bytes_total = total
            # every byte is in: what is left is the size and hash check, then the move
            finished = download.bytes_total is not None and done >= download.bytes_total
            download.state = DownloadState.VERIFYING if finished else DownloadState.DOWNLOADING

    def _fail(self, download: _Download, error: ErrorBody) -> None:
        with self._lock:
            download.error = error
            self._end(download, DownloadState.FAILED)

    def _end(self, download: _Download, state: DownloadState) -> None:
        """Called with the lock held."""
        download.state = state
        download.finished = time.time()
        download.ended.set()

    def _get(self, download_id: str) -> _Download:
        download = self._downloads.get(download_id)
        if download is None:
            raise DownloadNotFoundError(
                f"No download '{download_id}'.",
                "GET /v1/downloads lists the downloads this server knows (ended ones are "
                "forgotten after a while, and all of them when it restarts).",
            )
        return download

    def _forget_old(self) -> None:
        """Called with the lock held."""
        ended = [d for d in self._downloads.values() if d.state.done]
        for d in ended[: max(0, len(ended) - KEEP_ENDED)]:
            del self._downloads[d.id]
