"""One job, run on a worker thread: send the pixels, follow the events, fetch the result.

Steps: 1. connect (health, protocol), 2. upload the image, the mask and the reference images
(each is named in the job by the task's input it is for), 3. submit, 4. follow the
event stream (reconnecting after a broken connection, with the last event number seen), 5.
fetch the result and free it on the server. The listener hears progress, finished, failed or
cancelled through `dispatch`, which the editor adapter sets to "run this on the UI thread";
the worker itself never touches the editor.

A broken stream is followed by health checks for `reconnect_timeout` seconds: the same backend
back means the job goes on; a different instance (restarted) or none at all ends the job with
BackendLost, and the editor's document was never changed.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..shared.geometry import Bounds, Extent
from ..shared.protocol import (
    EventType,
    JobRequest,
    JobState,
    PixelFormat,
    Placement,
    ResultInfo,
    ResultOutput,
)
from .catalog import dropped_note, task_title
from .client import Client, EventStream
from .errors import (
    BackendLost,
    BackendUnavailable,
    JobCancelled,
    JobFailed,
    PluginError,
    ServerError,
)
from .pixels import Bytes, PixelBuffer
from .worker import run_to_end

#: seconds a broken connection may take to come back before the job counts as lost
RECONNECT_TIMEOUT = 15.0
#: seconds after a cancel request before the job is given up without the backend's answer
CANCEL_GRACE = 10.0

Dispatch = Callable[[Callable[[], None]], None]


def call_now(fn: Callable[[], None]) -> None:
    """A dispatch for tests and scripts: run the callback on the worker thread itself."""
    fn()


@dataclass
class JobInput:
    """What an action sends: pixels in the wire's order, where they sit, and the task."""

    task: str  # a task id from the backend's list
    image: PixelBuffer
    bounds: Bounds
    canvas: Extent
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    #: the selection, one byte per pixel of `image`; None: the whole image is processed
    mask: Bytes | None = None
    feather: float | None = None
    #: `params` were checked against the task's parameters from the backend's catalog
    params_checked: bool = False
    #: further images the task takes (TaskInfo.images): input name -> pixels, each at its
    #: own size (the backend resizes a reference image itself)
    images: dict[str, PixelBuffer] = field(default_factory=dict)
    #: what the user should hear with the result, found while preparing (a picked layer gone)
    notes: list[str] = field(default_factory=list)


@dataclass
class OutputPixels:
    """One output of a finished job: its pixels and where they go."""

    name: str
    title: str
    pixels: PixelBuffer
    placement: Placement
    kind: str = "image"


@dataclass
class JobResult:
    job_id: str
    task: str
    model: str  # "" for a task that runs no model
    #: in the backend's order; empty when the task found nothing to do
    outputs: list[OutputPixels]
    #: what the task reports besides pixels (ResultInfo.details), e.g. the faces found
    details: dict[str, Any] = field(default_factory=dict)
    #: what the user should know besides the result, e.g. saved options that were not sent
    notes: list[str] = field(default_factory=list)
    #: the task found nothing to do (no face): no layer is added, `message` says why
    nothing_found: bool = False
    message: str = ""

    @property
    def pixels(self) -> PixelBuffer:
        return self.outputs[0].pixels

    @property
    def placement(self) -> Placement:
        return self.outputs[0].placement


class JobListener(Protocol):
    def on_progress(self, fraction: float, stage: str) -> None: ...

    def on_finished(self, result: JobResult) -> None: ...

    def on_failed(self, error: PluginError) -> None: ...

    def on_cancelled(self) -> None: ...


class Outcome(str, enum.Enum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobRunner:
    def __init__(self, client: Client, job: JobInput, listener: JobListener,
                 dispatch: Dispatch = call_now, reconnect_timeout: float | None = None,
                 cancel_grace: float | None = None,
                 after: JobRunner | None = None) -> None:
        self.client = client
        #: a job started earlier: this one is submitted only once that one is (or has ended),
        #: so the backend's queue keeps the order the user clicked in
        self.after = after
        self.job = job
        self.listener = listener
        self.dispatch = dispatch
        # None: the module's values, read now, so a script can change them for every job
        self.reconnect_timeout = RECONNECT_TIMEOUT if reconnect_timeout is None \
            else reconnect_timeout
        self.cancel_grace = CANCEL_GRACE if cancel_grace is None else cancel_grace
        self.job_id = f"job-{uuid.uuid4().hex}"
        self.outcome = Outcome.RUNNING
        self.error: PluginError | None = None
        self.result: JobResult | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._sent = threading.Event()  # submitted, or ended before it could be
        self._lock = threading.Lock()
        self._submitted = False
        self._gave_up = False
        self._stream: EventStream | None = None
        self._final: ResultInfo | None = None
        self._thread: threading.Thread | None = None

    # --- the UI side ---

    def start(self) -> JobRunner:
        self._thread = threading.Thread(target=self._run, name=f"restora-{self.job_id[:12]}",
                                        daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the backend to stop; returns at once. The listener hears `on_cancelled`."""
        if self._done.is_set() or self._cancel.is_set():
            return
        self._cancel.set()
        with self._lock:
            submitted = self._submitted
        if submitted:  # otherwise the worker cancels right after it submits
            threading.Thread(target=self._send_cancel, name="restora-cancel", daemon=True).start()

    @property
    def cancelling(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job has ended (its last callback is dispatched); for scripts/tests."""
        return self._done.wait(timeout)

    # --- the worker ---

    def _run(self) -> None:
        run_to_end(self._execute, self.dispatch, self._done, JobCancelled,
                   self.listener.on_finished, self.listener.on_failed,
                   self.listener.on_cancelled, self._record)

    def _record(self, outcome: str, value: Any) -> None:
        self.outcome = Outcome(outcome)
        if outcome == "finished":
            self.result = value
        elif outcome == "failed":
            self.error = value
        self._sent.set()  # ended before it was submitted: a job queued after it goes on

    def _wait_turn(self) -> None:
        """Until the job started before this one is on the backend (or gone)."""
        before = self.after
        while before is not None and not before._sent.wait(0.1):
            self._check_cancel()

    def _execute(self) -> JobResult:
        job, client = self.job, self.client
        # 1. connect
        self._progress(0.0, "connecting")
        health = client.connect()
        instance = health.instance
        params, notes = self._declared_params()
        self._check_cancel()
        # 2. upload
        self._progress(0.0, "sending the image")
        image_id = client.upload(job.image)
        mask_id = None
        if job.mask is not None:
            fmt = PixelFormat(job.image.format.width, job.image.format.height, 1, 8)
            mask_id = client.upload(PixelBuffer(job.mask, fmt))
        image_ids = self._upload_images()
        self._check_cancel()
        # 3. submit, in the order the jobs were started
        self._wait_turn()
        self._check_cancel()
        after = client.last_seq(instance)
        # no model: the backend runs its default for the task (and names it in the status)
        request = JobRequest(task=job.task, image=image_id, model=job.model,
                             params=params, mask=mask_id, images=image_ids,
                             feather=job.feather,
                             bounds=job.bounds, canvas=job.canvas, id=self.job_id,
                             client=client.client_id)
        try:
            status = client.submit(request)
        finally:
            self._sent.set()
        with self._lock:
            self._submitted = True
        if self._cancel.is_set():
            threading.Thread(target=self._send_cancel, daemon=True).start()
        # 4. follow
        self._follow(instance, after)
        if self._cancel.is_set():  # finished before the cancel arrived: drop the result
            self._forget()
            raise JobCancelled("Cancelled.")
        # 5. fetch
        self._progress(1.0, "receiving the result")
        final = self._final or self._retrying(instance, lambda: client.status(self.job_id)).result
        if final is None:
            raise BackendLost("The backend finished the job but kept no result.",
                              "Run the action again.")
        outputs = [] if final.nothing_found else [
            self._fetch(instance, output) for output in _outputs(final)]
        self._forget()
        return JobResult(self.job_id, job.task, status.model, outputs, dict(final.details),
                         [*job.notes, *notes], final.nothing_found, final.message)

    def _upload_images(self) -> dict[str, str]:
        """Each further image uploaded on its own: input name -> its id on the server."""
        if not self.job.images:
            return {}
        count = len(self.job.images)
        self._progress(0.0, f"sending the reference image{'s' if count > 1 else ''}")
        ids = {}
        for name, pixels in self.job.images.items():
            self._check_cancel()  # a few megabytes each: a cancel need not wait for them all
            ids[name] = self.client.upload(pixels)
        return ids

    def _fetch(self, instance: str | None, output: ResultOutput) -> OutputPixels:
        pixels = self._retrying(instance, lambda: self.client.result(self.job_id, output.name))
        bounds = output.placement.bounds
        if (pixels.format.width, pixels.format.height) != (bounds.width, bounds.height):
            raise PluginError("The backend's result does not match its own placement.",
                              "This is a bug in Restora; please report it.")
        return OutputPixels(output.name, output.title, pixels, output.placement, output.kind)

    def _declared_params(self) -> tuple[dict[str, Any], list[str]]:
        """The job's params, without those the task does not declare when no catalog
        checked them (a stale saved option must not fail the job), and a note about those."""
        params = dict(self.job.params)
        if self.job.params_checked or not params:
            return params, []
        info = next((t for t in self.client.tasks() if t.task == self.job.task), None)
        if info is None or not info.available:
            return params, []  # the backend refuses the task itself, in its own words
        known = {p.name for p in info.params}
        unknown = [k for k in params if k not in known]
        if not unknown:
            return params, []
        kept = {k: v for k, v in params.items() if k in known}
        return kept, [dropped_note(task_title(info), unknown)]

    def _follow(self, instance: str | None, after: int | None) -> None:
        """Until the job's 'finished' event; raises for failed, cancelled and lost jobs."""
        while True:
            try:
                stream = self.client.events(after)
                with self._lock:
                    self._stream = stream
                    gave_up = self._gave_up
                if gave_up:  # a cancel the backend could not hear: stop at once
                    stream.close()
                with stream:
                    for event in stream:
                        self.client.saw_seq(instance, event.seq)
                        after = event.seq
                        if event.job != self.job_id:
                            continue
                        if self._handle(event.type, event.state, event.progress,
                                        stage_text(event.stage, event.step, event.steps,
                                                   event.note),
                                        event.position, event.error, event.result):
                            return
                if self._cancel.is_set():
                    raise JobCancelled("Cancelled.")
                raise BackendUnavailable.at(self.client.url, "the event stream ended")
            except BackendUnavailable:
                if self._cancel.is_set():
                    raise JobCancelled("Cancelled.") from None
                self._recover(instance)
                status = self._status_after_reconnect()
                if self._handle(EventType.PROGRESS, status.state, status.progress,
                                stage_text(status.stage, status.step, status.steps,
                                           status.note),
                                status.position, status.error, status.result):
                    return
            finally:
                with self._lock:
                    self._stream = None

    def _handle(self, kind: EventType, state: JobState, progress: float, stage: str,
                position: int | None, error: Any, result: ResultInfo | None) -> bool:
        """True when the job has finished; raises when it failed or was cancelled."""
        if state == JobState.FINISHED and kind != EventType.REMOVED:
            self._final = result
            return True
        if state == JobState.FAILED:
            if error is not None:
                raise JobFailed(error.message, error.hint, code=error.code)
            raise JobFailed("The job failed on the backend.", "The backend's log has details.")
        if state == JobState.CANCELLED or kind == EventType.REMOVED:
            raise JobCancelled("Cancelled.")
        if state == JobState.QUEUED:
            ahead = f": {position} job{'s' if position != 1 else ''} ahead" if position else ""
            self._progress(0.0, f"waiting{ahead}")
        else:
            self._progress(progress, stage or "working")
        return False

    def _recover(self, instance: str | None) -> None:
        """Wait for the same backend to answer again; BackendLost when it does not."""
        deadline = time.monotonic() + self.reconnect_timeout
        delay = 0.2
        self._progress(-1.0, "connection lost, reconnecting")
        while True:
            try:
                health = self.client.health()
            except BackendUnavailable:
                if time.monotonic() >= deadline:
                    raise BackendLost(
                        f"Restora's backend at {self.client.url} stopped while it worked on "
                        "this job; the job is lost (your image was not changed).",
                        "Click Start backend in Restora's settings, then run the action again.",
                    ) from None
                if self._cancel.wait(delay):
                    raise JobCancelled("Cancelled.") from None
                delay = min(delay * 2, 2.0)
                continue
            if instance is not None and health.instance not in (None, instance):
                raise BackendLost(
                    "Restora's backend was restarted while it worked on this job; the job is "
                    "lost (your image was not changed).", "Run the action again.")
            return

    def _retrying(self, instance: str | None, call: Callable[[], Any]) -> Any:
        """The backend keeps results, so a request cut off by the network is simply repeated
        once the same backend answers again."""
        while True:
            try:
                return call()
            except BackendUnavailable:
                self._check_cancel()
                self._recover(instance)

    def _status_after_reconnect(self) -> Any:
        try:
            return self.client.status(self.job_id)
        except ServerError as exc:
            if exc.status == 404:
                raise BackendLost("The backend no longer knows this job; it is lost (your "
                                  "image was not changed).", "Run the action again.") from None
            raise

    def _send_cancel(self) -> None:
        try:
            self.client.cancel(self.job_id)
        except PluginError:
            self._give_up()  # the backend cannot be told: stop waiting for it now
            return
        if not self._done.wait(self.cancel_grace):
            self._give_up()

    def _give_up(self) -> None:
        with self._lock:
            self._gave_up = True
            stream = self._stream
        if stream is not None:
            stream.close()

    def _forget(self) -> None:
        with contextlib.suppress(PluginError):  # the server forgets it by itself after a while
            self.client.remove(self.job_id)

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled("Cancelled.")

    def _progress(self, fraction: float, stage: str) -> None:
        """fraction in 0..1, or negative while it is unknown (show a busy indicator)."""
        self.dispatch(lambda: self.listener.on_progress(fraction, stage))


def stage_text(stage: str, step: int | None, steps: int | None, note: str = "") -> str:
    """The stage with its step count when the backend gives one: "upscaling: step 3 of 12";
    the backend's note for the person waiting (a faster model) on a line of its own, which
    progress_line puts after the time."""
    text = stage if step is None or not steps else f"{stage or 'working'}: step {step} of {steps}"
    note = " ".join(note.split())  # one line, whatever the backend sent
    return f"{text or 'working'}\n{note}" if note else text


def _outputs(final: ResultInfo) -> list[ResultOutput]:
    """The outputs to fetch; a result without the list is its one top-level image."""
    if final.outputs:
        return list(final.outputs)
    return [ResultOutput("", "", final.width, final.height, final.channels, final.depth,
                         final.placement)]
