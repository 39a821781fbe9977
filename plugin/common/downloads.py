"""One model download, followed on a worker thread: the editor's "Download" button.

Steps: 1. ask the backend to download the catalog model (with the licence accepted, when the
user did), 2. poll its status about every `POLL_INTERVAL` seconds, telling the listener the
bytes done, 3. end with finished (the backend's registry has the model: refresh the model
list), failed (the backend's own words: checksum, host unreachable, disk full) or cancelled.
As in job_runner.py the listener hears everything through `dispatch`, which the editor adapter
sets to "run this on the UI thread"; the worker never touches the editor.

A backend that stops answering for a moment is polled again for `reconnect_timeout` seconds;
one that restarted has forgotten the download, which then fails with BackendLost (what
arrived is kept on the backend's disk, and the next download resumes it).
"""

from __future__ import annotations

import enum
import threading
import time
from typing import Protocol

from ..shared.protocol import DownloadInfo, DownloadState
from .client import Client
from .errors import BackendLost, BackendUnavailable, PluginError, ServerError
from .job_runner import Dispatch, call_now
from .worker import run_to_end

#: seconds between two status requests
POLL_INTERVAL = 0.3
#: seconds the backend may be unreachable before the download counts as lost
RECONNECT_TIMEOUT = 15.0
#: seconds after a cancel before the runner stops waiting for the backend's answer
CANCEL_GRACE = 10.0
#: the code of the backend's refusal of a licence the user has not accepted
LICENCE_NOT_ACCEPTED = "licence_not_accepted"


class DownloadListener(Protocol):
    def on_download_progress(self, done: int, total: int | None) -> None: ...

    def on_download_finished(self, info: DownloadInfo) -> None: ...

    def on_download_failed(self, error: PluginError) -> None: ...

    def on_download_cancelled(self) -> None: ...


class DownloadOutcome(str, enum.Enum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class _Cancelled(Exception):
    pass


class DownloadRunner:
    def __init__(self, client: Client, name: str, accept_licence: bool,
                 listener: DownloadListener, dispatch: Dispatch = call_now,
                 poll_interval: float | None = None,
                 reconnect_timeout: float | None = None) -> None:
        self.client = client
        self.name = name
        self.accept_licence = accept_licence
        self.listener = listener
        self.dispatch = dispatch
        # None: the module's values, read now, so a script can change them for every download
        self.poll_interval = POLL_INTERVAL if poll_interval is None else poll_interval
        self.reconnect_timeout = RECONNECT_TIMEOUT if reconnect_timeout is None \
            else reconnect_timeout
        self.outcome = DownloadOutcome.RUNNING
        #: the backend's latest status; its `model` names the installed model once finished
        self.info: DownloadInfo | None = None
        self.error: PluginError | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the UI side ---

    def start(self) -> DownloadRunner:
        self._thread = threading.Thread(target=self._run, name=f"restora-download-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the backend to stop; returns at once. The listener hears
        `on_download_cancelled` (or `on_download_finished`, when the file was in already)."""
        self._cancel.set()

    @property
    def cancelling(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the download has ended (its last callback is dispatched)."""
        return self._done.wait(timeout)

    # --- the worker ---

    def _run(self) -> None:
        listener = self.listener
        run_to_end(self._follow, self.dispatch, self._done, _Cancelled,
                   listener.on_download_finished, listener.on_download_failed,
                   listener.on_download_cancelled, self._record)

    def _record(self, outcome: str, value: object) -> None:
        self.outcome = DownloadOutcome(outcome)
        if outcome == "failed" and isinstance(value, PluginError):
            self.error = value

    def _follow(self) -> DownloadInfo:
        if self._cancel.is_set():
            raise _Cancelled
        info = self.client.start_download(self.name, self.accept_licence)
        shown: tuple[int, int | None] | None = None
        cancel_sent: float | None = None
        while True:
            self.info = info
            progress = (info.bytes_done, info.bytes_total)
            if progress != shown and info.state != DownloadState.FAILED:
                shown = progress  # a finished download shows its full bar first
                self.dispatch(lambda p=progress: self.listener.on_download_progress(*p))
            if info.state == DownloadState.FINISHED:
                return info
            if info.state == DownloadState.FAILED:
                error = info.error
                if error is None:
                    raise ServerError(f"The download of {self.name} failed on the backend.",
                                      "The backend's log has details.")
                raise ServerError(error.message, error.hint, code=error.code)
            if info.state == DownloadState.CANCELLED:
                raise _Cancelled
            if self._cancel.is_set() and cancel_sent is None:
                cancel_sent = time.monotonic()
                self._send_cancel(info.id)
            elif cancel_sent is not None and time.monotonic() - cancel_sent > CANCEL_GRACE:
                raise _Cancelled  # the backend did not answer the cancel: stop waiting
            if cancel_sent is None:
                self._cancel.wait(self.poll_interval)  # a cancel is sent at once
            else:
                time.sleep(self.poll_interval)
            info = self._status(info.id)

    def _send_cancel(self, download_id: str) -> None:
        try:
            self.client.cancel_download(download_id)
        except PluginError:
            raise _Cancelled from None  # the backend cannot be told; the user wants out

    def _status(self, download_id: str) -> DownloadInfo:
        """The download's status, waiting out a backend that is briefly unreachable."""
        deadline = time.monotonic() + self.reconnect_timeout
        while True:
            try:
                return self.client.download_status(download_id)
            except BackendUnavailable:
                if self._cancel.is_set():
                    raise _Cancelled from None
                if time.monotonic() >= deadline:
                    raise BackendLost(
                        f"Restora's backend at {self.client.url} stopped while it downloaded "
                        f"{self.name}.",
                        "Start it again, then download again: what arrived is resumed.",
                    ) from None
                self._cancel.wait(min(1.0, self.poll_interval * 3))
            except ServerError as exc:
                if exc.status == 404:
                    raise BackendLost(
                        f"The backend no longer knows the download of {self.name} (it was "
                        "restarted).",
                        "Download it again: what arrived is resumed.",
                    ) from None
                raise
