"""Jobs: the queue, the one worker thread that owns the device, and job state.

One thread runs every job, so models, device memory and the GPU are never shared between two
jobs; request handlers only validate, enqueue and read state under a lock, and never wait for a
model. The worker runs each task through `backend.executor` (the same code the CLI runs) and
reports through `publish` (the event hub, which hands events to the event loop with
call_soon_threadsafe). A job's failure is stored as a typed error and the worker takes the next
job. Which tasks exist comes from the task registry the manager is given; results and their
placement live in backend/results.py.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend import executor, masking
from backend.allocator import release_free_memory
from backend.errors import (
    CancelledError,
    InvalidParameterError,
    RestoraError,
    TaskUnavailableError,
)
from backend.model_cache import ModelCache
from backend.model_choice import choose_model, default_entry, missing_model_hint, slot_accepts
from backend.models.registry import ModelEntry, Registry
from backend.result_spill import remove_stale
from backend.results import ResultStore, result_info
from backend.settings import Settings
from backend.tasks.context import CancelToken, Progress, TaskContext
from backend.tasks.registry import TaskRegistry, default_registry
from backend.tasks.spec import Limits, ModelSlot, TaskInputs, TaskSpec
from shared.geometry import Bounds
from shared.protocol import (
    PROTOCOL_VERSION,
    ErrorBody,
    EventType,
    ImageInputInfo,
    JobRequest,
    JobState,
    JobStatus,
    OutputInfo,
    ParamInfo,
    PresetInfo,
    ResultInfo,
    TaskInfo,
    check_task_id,
)

log = logging.getLogger("restora.jobs")

#: progress events of one job are sent at most this often (the state is always current)
PROGRESS_INTERVAL = 0.1
#: how often the worker, when idle, forgets expired jobs
SWEEP_INTERVAL = 5.0


class JobNotFoundError(RestoraError):
    code = "job_not_found"
    http_status = 404


class JobConflictError(RestoraError):
    code = "job_conflict"
    http_status = 409


class JobStateError(RestoraError):
    """The job is not in a state that allows this (fetching a running job's result, ...)."""

    code = "job_state"
    http_status = 409


class QueueFullError(RestoraError):
    code = "queue_full"
    http_status = 429


class ProtocolVersionError(RestoraError):
    code = "protocol_version"
    http_status = 400


def task_info(spec: TaskSpec) -> TaskInfo:
    """What /v1/tasks says of a task, before the models installed are looked at."""
    available, reason = spec.availability()
    params = [
        ParamInfo(
            name=f.name,
            type=f.type,
            default=f.default,
            optional=f.optional,
            choices=list(f.info.choices) or None,
            label=f.info.label,
            help=f.info.help,
            minimum=f.info.minimum,
            maximum=f.info.maximum,
            step=f.info.step,
            unit=f.info.unit,
            widget=f.widget,
            none_label=f.info.none_label,
            choice_labels=list(f.info.choice_labels),
            advanced=f.info.advanced,
            purposes=list(f.info.purposes),
            applies_to=list(f.info.applies_to),
        )
        for f in spec.fields()
    ]
    return TaskInfo(
        task=spec.id,
        available=available,
        title=spec.title,
        help=spec.help,
        reason=reason,
        hint=spec.install_hint if not available else "",
        default_model=spec.model.default if spec.model else None,
        mask=spec.mask,
        images=[ImageInputInfo(i.name, i.label, i.required, i.help) for i in spec.images],
        outputs=[OutputInfo(o.name, o.title, o.kind) for o in spec.outputs],
        resizes=spec.resizes,
        final_last=spec.final_last,
        group=spec.group,
        order=spec.order,
        catalog_task=spec.model.catalog_task if spec.model else "",
        params=params,
        presets=[
            PresetInfo(p.name, p.label, p.help, dict(p.params), list(p.model_traits))
            for p in spec.presets
        ],
    )


@dataclass
class JobInput:
    inputs: TaskInputs
    #: the registry entries the worker loads: "model" and the params naming further models
    entries: dict[str, ModelEntry] = field(default_factory=dict)


# --- jobs and their results ------------------------------------------------------------------


@dataclass(eq=False)
class Job:
    id: str
    request: JobRequest
    spec: TaskSpec
    entry: ModelEntry | None  # None for a task that runs no model
    params: Any
    input: JobInput | None  # dropped once the job ends
    feather: float | None
    bounds: Bounds
    state: JobState = JobState.QUEUED
    progress: float = 0.0
    stage: str = ""
    step: int | None = None
    steps: int | None = None
    #: the latest intermediate image a task offered (dropped when the job ends), and its id
    preview: np.ndarray | None = None
    preview_id: str | None = None
    error: ErrorBody | None = None
    result: ResultInfo | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    expires: float = float("inf")
    cancel: CancelToken = field(default_factory=CancelToken)
    last_progress_event: float = 0.0
    note: str = ""  # JobStatus.note

    def status(self, position: int | None = None) -> JobStatus:
        return JobStatus(
            id=self.id,
            client=self.request.client,
            task=self.spec.id,
            model=self.entry.name if self.entry is not None else "",
            state=self.state,
            progress=self.progress,
            stage=self.stage,
            step=self.step,
            steps=self.steps,
            preview=self.preview_id,
            position=position,
            error=self.error,
            result=self.result,
            note=self.note,
            created=self.created,
            started=self.started,
            finished=self.finished,
        )


# --- the manager: queue and worker -----------------------------------------------------------


Publish = Callable[[EventType, JobStatus], None]


class JobManager:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        models: ModelCache,
        publish: Publish,
        tasks: TaskRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.models = models
        self.tasks = tasks if tasks is not None else default_registry()
        self._publish = publish
        self.results = ResultStore(settings.result_memory_bytes, settings.spill_dir)
        self._jobs: dict[str, Job] = {}
        self._queue: deque[str] = deque()
        self._running: Job | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._registry_lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.instance = uuid.uuid4().hex
        self.device: str | None = None
        self.device_name: str | None = None
        self.ready = False

    # - lifecycle -

    def start(self) -> None:
        remove_stale(self.results.spill.root)
        self._thread = threading.Thread(target=self._work, name="restora-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the running job, drop the queue and wait for the worker to end."""
        with self._lock:
            self._stopping = True
            if self._running is not None:
                self._running.cancel.cancel()
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self.results.close()

    # - requests (any thread) -

    def find_model(self, name: str | None, spec: TaskSpec, slot: ModelSlot) -> ModelEntry:
        return choose_model(spec, slot, name, self.model_entries, self._find, server=True)

    def _find(self, name: str) -> ModelEntry:
        with self._registry_lock:  # the first listing loads every file: only once at a time
            return self.registry.find(name)

    def default_model_name(self, spec: TaskSpec) -> str | None:
        """The model a job of this task runs when it names none; None when none is installed."""
        if spec.model is None:
            return None
        entry = default_entry(spec.model, self.model_entries())
        return entry.name if entry is not None else None

    def task_infos(self) -> list[TaskInfo]:
        """/v1/tasks: every task, with the model it would run; a task none of whose models is
        installed is unavailable, with what to install."""
        infos = []
        for spec in self.tasks:
            info = task_info(spec)
            if info.available and spec.model is not None:
                info.default_model = self.default_model_name(spec)
                if info.default_model is None:
                    info.available, info.needs_model = False, True
                    info.reason = (
                        f"{spec.title} needs a model, and none is installed in "
                        f"{spec.model.folders[0]}/."
                    )
                    info.hint = missing_model_hint(spec.model, server=True)
            infos.append(info)
        return infos

    def tasks_for(self, entry: ModelEntry) -> list[str]:
        return [s.id for s in self.tasks if s.model is not None and slot_accepts(s.model, entry)]

    def model_entries(self, refresh: bool = False) -> list[ModelEntry]:
        with self._registry_lock:
            return list(self.registry.entries(refresh=refresh))

    def submit(
        self,
        request: JobRequest,
        pixels: np.ndarray,
        mask: np.ndarray | None,
        images: dict[str, np.ndarray] | None = None,
    ) -> tuple[JobStatus, bool]:
        """Validate and queue a job; returns its status and whether it is new.

        Resubmitting a request with the same client-chosen id returns the first job, so a
        client that lost the answer can simply send it again.
        """
        check_protocol(request.protocol_version)
        resubmitted = self.resubmission(request)
        if resubmitted is not None:
            return resubmitted, False
        spec = self.tasks.get(request.task)
        available, reason = spec.availability()
        if not available:
            raise TaskUnavailableError(reason, spec.install_hint)
        bounds = _check_geometry(request, pixels, mask)
        mask = _check_mask(spec, mask)
        inputs = TaskInputs(pixels, mask, _check_images(spec, images or {}))
        feather = masking.resolve_feather(mask, request.feather) if mask is not None else None
        params = spec.parse_params(request.params)
        entries: dict[str, ModelEntry] = {}
        if spec.model is not None:
            entries["model"] = self.find_model(request.model, spec, spec.model)
        for key, (name, slot) in spec.helper_models(params).items():
            entries[key] = self.find_model(name, spec, slot)
        if spec.prepare is not None:
            limits = Limits(max_output_pixels=self.settings.max_output_pixels)
            spec.prepare(params, inputs, entries.get("model"), limits)
        job = Job(
            id=request.id or uuid.uuid4().hex,
            request=request,
            spec=spec,
            entry=entries.get("model"),
            params=params,
            input=JobInput(inputs, entries),
            feather=feather,
            bounds=bounds,
        )
        with self._lock:
            existing = self._jobs.get(job.id)
            if existing is not None:  # the same id arrived twice at once
                return self._same_job(existing, request), False
            if len(self._queue) >= self.settings.max_queued_jobs:
                raise QueueFullError(
                    f"{len(self._queue)} jobs are already queued.", "Wait for some to finish."
                )
            self._jobs[job.id] = job
            self._queue.append(job.id)
            status = job.status(len(self._queue) - 1)
            self._publish(EventType.QUEUED, status)
            self._wake.notify()
        return status, True

    def resubmission(self, request: JobRequest) -> JobStatus | None:
        """The status of the job this request already made (same id, same request), if any."""
        checked_request(request)
        if request.id is None:
            return None
        with self._lock:
            existing = self._jobs.get(request.id)
        return self._same_job(existing, request) if existing is not None else None

    def _same_job(self, existing: Job, request: JobRequest) -> JobStatus:
        if existing.request != request:
            raise JobConflictError(
                f"A different job with id '{request.id}' exists.",
                "Use a new id for a new job; resubmit only an identical request.",
            )
        return self.status(existing.id)

    def status(self, job_id: str) -> JobStatus:
        with self._lock:
            job = self._get(job_id)
            return job.status(self._position(job))

    def list_jobs(self, client: str | None = None, everyone: bool = False) -> list[JobStatus]:
        """One client's jobs (client None: the jobs sent without a client id), or all of them."""
        with self._lock:
            self._sweep()
            return [
                j.status(self._position(j))
                for j in self._jobs.values()
                if everyone or j.request.client == client
            ]

    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a queued job at once, or a running one at its next tile or step."""
        with self._lock:
            job = self._get(job_id)
            if job.state == JobState.QUEUED:
                self._queue.remove(job.id)
                self._end(job, JobState.CANCELLED, "cancelled")
                status = job.status()
                self._publish(EventType.CANCELLED, status)
                return status
            if job.state == JobState.RUNNING:
                job.cancel.cancel()
                job.stage = "cancelling"
            return job.status(self._position(job))

    def remove(self, job_id: str) -> None:
        """Remove a queued job, or forget a finished one and its result."""
        with self._lock:
            job = self._get(job_id)
            if job.state == JobState.RUNNING:
                raise JobStateError(
                    f"Job '{job_id}' is running.",
                    f"Cancel it first: POST /v1/jobs/{job_id}/cancel.",
                )
            if job.state == JobState.QUEUED:
                self._queue.remove(job.id)
                self._end(job, JobState.CANCELLED, "removed")
            del self._jobs[job.id]
            status = job.status()
            self._publish(EventType.REMOVED, status)
        self.results.drop(job_id)

    def result(self, job_id: str, output: str | None = None) -> tuple[np.ndarray, JobStatus]:
        """The pixels of one output (default: the first); the first fetch shortens how long
        the result is kept."""
        with self._lock:
            job = self._get(job_id)
            if job.state != JobState.FINISHED:
                if job.error is not None and job.state == JobState.FAILED:
                    raise JobStateError(
                        f"Job '{job_id}' failed: {job.error.message}", job.error.hint
                    )
                raise JobStateError(
                    f"Job '{job_id}' is {job.state.value}; it has no result.",
                    "Wait for its 'finished' event." if not job.state.done else "Submit it again.",
                )
            status = job.status()
            names = [o.name for o in job.result.outputs] if job.result else []
        if output is None and not names:
            raise JobStateError(
                f"Job '{job_id}' found nothing to do and has no image.",
                (job.result.message if job.result else "") or "",
            )
        name = output if output is not None else names[0]
        if name not in names:
            raise JobNotFoundError(
                f"Job '{job_id}' has no output '{name[:40]}'.",
                f"Its outputs are: {', '.join(names) or 'none'}.",
            )
        pixels = self.results.get(job_id, name)
        if pixels is None:
            raise JobNotFoundError(
                f"The result of job '{job_id}' is no longer kept.", "Submit the job again."
            )
        with self._lock:
            now = time.time()
            if job.result is not None and job.expires > now + self.settings.fetched_result_ttl:
                job.expires = now + self.settings.fetched_result_ttl
                job.result.expires = job.expires
        return pixels, status

    def preview(self, job_id: str) -> np.ndarray:
        """The latest intermediate image of a running job."""
        with self._lock:
            job = self._get(job_id)
            if job.preview is None:
                raise JobStateError(
                    f"Job '{job_id}' has no preview now.",
                    "A preview exists only while a job that makes them runs; its events name it.",
                )
            return job.preview

    def counts(self) -> tuple[int, str | None]:
        with self._lock:
            return len(self._queue), self._running.id if self._running else None

    def _get(self, job_id: str) -> Job:
        self._sweep()
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(
                f"No job '{job_id}' on this server.",
                f"It may have ended more than {self.settings.result_ttl:.0f} s ago, or the "
                "server was restarted.",
            )
        return job

    def _position(self, job: Job) -> int | None:
        if job.state != JobState.QUEUED:
            return None
        return self._queue.index(job.id)

    def _end(self, job: Job, state: JobState, stage: str) -> None:
        job.state, job.stage = state, stage
        job.finished = time.time()
        job.expires = job.finished + self.settings.result_ttl
        job.input = None  # the pixels are no longer needed
        job.preview, job.preview_id = None, None

    # - the worker thread -

    def _work(self) -> None:
        try:
            self._start_device()
        except Exception:  # jobs will report the same problem when they load their model
            log.exception("choosing the device or preloading failed")
        self.ready = True
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._wake.wait(SWEEP_INTERVAL)
                    self._sweep()
                if self._stopping:
                    return
                job = self._jobs[self._queue.popleft()]
                job.state, job.stage, job.started = JobState.RUNNING, "starting", time.time()
                self._running = job
                self._publish(EventType.STARTED, job.status())
            self._run(job)
            with self._lock:
                self._running = None
                self._sweep()
                idle = not self._queue
            if idle:  # the heap kept the job's freed layers for its next tile; idle, the
                from backend.cpu_fusion import release_scratch

                release_scratch()  # and the dense blocks' reused concatenation buffer
                release_free_memory()  # process holds what it uses (backend/allocator.py)

    def _start_device(self) -> None:
        from backend.devices import resolve_device

        device = resolve_device(self.settings.device)
        self.device = device.type
        self.device_name = _device_name(device)
        for name in self.settings.preload:
            try:
                with self._registry_lock:
                    entry = self.registry.find(name)
                self.models.get(entry)
            except RestoraError as exc:
                log.error("preload %s: %s", name, exc)

    def _run(self, job: Job) -> None:
        try:
            result = self._execute(job)
            dropped = self.results.put(job.id, {o.name: o.pixels for o in result.outputs})
        except CancelledError:
            self._finish(job, JobState.CANCELLED, EventType.CANCELLED, "cancelled")
        except RestoraError as exc:
            log.info("job %s failed: %s", job.id, exc)
            job.error = ErrorBody(exc.code, exc.message, exc.hint)
            self._finish(job, JobState.FAILED, EventType.FAILED, "failed")
        except Exception as exc:  # a bug must fail one job, not the worker and every later job
            log.exception("job %s failed unexpectedly", job.id)
            job.error = ErrorBody(
                "internal",
                f"The job failed unexpectedly: {exc!r}.",
                "This is a bug in Restora; the server log has the details.",
            )
            self._finish(job, JobState.FAILED, EventType.FAILED, "failed")
        else:
            kinds = {o.name: o.kind for o in job.spec.outputs}
            job.result = result_info(
                job.bounds,
                job.request.canvas,
                [(o.name, o.title, kinds.get(o.name, "image"), o.pixels) for o in result.outputs],
                job.expires,
                result.details,
                result.nothing_found,
                result.message,
            )
            self._finish(job, JobState.FINISHED, EventType.FINISHED, "done", progress=1.0)
            with self._lock:
                for job_id in dropped:
                    forgotten = self._jobs.pop(job_id, None)
                    if forgotten is not None:
                        log.info("dropped fetched result %s to stay within memory", job_id)

    def _execute(self, job: Job) -> executor.TaskResult:
        inp = job.input
        if inp is None or job.cancel.cancelled:
            raise CancelledError("The job was cancelled.", "")
        ctx = TaskContext(lambda p: self._progress(job, p), job.cancel)
        ctx.registry = self.registry
        note = self._speed_note(job, inp.inputs.image)
        if note is not None:  # said at once, while there is time to cancel and choose again
            with self._lock:
                job.note = note.brief
                self._publish(EventType.PROGRESS, job.status())
        result = executor.run_task(
            job.spec, inp.inputs, job.params, inp.entries, self.models, ctx, job.feather
        )
        if result.nothing_found:  # no layer is added: no pixels to keep
            result.outputs = []
        if note is not None:  # the editors show it beside the result
            result.details["speed_note"] = note.to_dict()
        return result

    def _speed_note(self, job: Job, pixels: np.ndarray) -> Any:
        """A faster installed model, when the default one would take long on this CPU."""
        import torch

        from backend.speed_advice import note_for_task, traits_lookup

        if self.device != "cpu":
            return None
        height, width = pixels.shape[:2]
        return note_for_task(
            job.spec,
            job.request.model,
            job.entry,
            self.model_entries(),
            traits_lookup(self.registry.folders, self.settings.catalog),
            width,
            height,
            self.device,
            torch.get_num_threads(),
        )

    def _progress(self, job: Job, progress: Progress) -> None:
        now = time.monotonic()
        with self._lock:
            if progress.preview is not None:  # an event of its own: the image changed
                job.preview = progress.preview
                job.preview_id = f"{job.id}-{int(now * 1000)}"
                job.last_progress_event = now
                self._publish(EventType.PROGRESS, job.status())
                return
            changed = progress.stage != job.stage or progress.step != job.step
            job.progress, job.stage = progress.fraction, progress.stage
            job.step, job.steps = progress.step, progress.steps
            if not changed and now - job.last_progress_event < PROGRESS_INTERVAL:
                return
            job.last_progress_event = now
            self._publish(EventType.PROGRESS, job.status())

    def _finish(
        self, job: Job, state: JobState, event: EventType, stage: str, progress: float | None = None
    ) -> None:
        with self._lock:
            self._end(job, state, stage)
            if progress is not None:
                job.progress = progress
            if job.result is not None:
                job.result.expires = job.expires
            self._publish(event, job.status())

    def _sweep(self) -> None:
        """Forget jobs (and results) past their time. Called with the lock held."""
        now = time.time()
        expired = [j.id for j in self._jobs.values() if j.state.done and j.expires <= now]
        for job_id in expired:
            del self._jobs[job_id]
            self.results.drop(job_id)


def check_protocol(version: int) -> None:
    """A client of another protocol version is told which side to update."""
    if version == PROTOCOL_VERSION:
        return
    newer = "server" if version > PROTOCOL_VERSION else "plug-in"
    raise ProtocolVersionError(
        f"The client speaks Restora protocol {version}; this server speaks {PROTOCOL_VERSION}.",
        f"Update the {newer}: "
        + (
            "reinstall the plug-in from this Restora (restora plugin krita|gimp install)."
            if newer == "plug-in"
            else "install the newer Restora backend."
        ),
    )


def checked_request(request: JobRequest) -> JobRequest:
    """The request, its task, ids and model name checked against the protocol's patterns."""
    from shared.protocol import ProtocolError

    try:
        check_task_id(request.task)
    except ProtocolError as exc:
        raise TaskUnavailableError(f"{exc}.", "GET /v1/tasks lists the tasks.") from None
    try:
        request.check()
    except ProtocolError as exc:
        raise InvalidParameterError(f"{exc}.", "") from None
    return request


def _check_mask(spec: TaskSpec, mask: np.ndarray | None) -> np.ndarray | None:
    if spec.mask == "required" and mask is None:
        raise InvalidParameterError(
            f"Task '{spec.id}' needs a mask (a selection) and none was sent.",
            "Select the area first.",
        )
    return None if spec.mask == "ignored" else mask


def _check_images(spec: TaskSpec, images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    declared = {i.name: i for i in spec.images}
    for name in images:
        if name not in declared:
            raise InvalidParameterError(
                f"Task '{spec.id}' takes no image named '{name[:40]}'.",
                f"Its further images are: {', '.join(declared) or 'none'}.",
            )
    for name, info in declared.items():
        if info.required and name not in images:
            raise InvalidParameterError(
                f"Task '{spec.id}' needs the image '{name}' ({info.label}).", info.help
            )
    return images


def _check_geometry(request: JobRequest, pixels: np.ndarray, mask: np.ndarray | None) -> Bounds:
    height, width = pixels.shape[:2]
    if mask is not None:
        if mask.shape[:2] != (height, width):
            raise InvalidParameterError(
                f"The mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{width}x{height}; they must be the same size.",
                "Send the selection mask of the same region as the image.",
            )
        if mask.shape[2] != 1:
            raise InvalidParameterError(
                f"The mask has {mask.shape[2]} channels; it must have one (gray).",
                "Send the selection as an 8-bit gray image.",
            )
    bounds = request.bounds or Bounds(0, 0, width, height)
    if (bounds.width, bounds.height) != (width, height):
        raise InvalidParameterError(
            f"bounds is {bounds.width}x{bounds.height} but the image is {width}x{height}.",
            "bounds must be where the image sits on the canvas, at its size.",
        )
    if request.canvas is not None and (request.canvas.width < 1 or request.canvas.height < 1):
        raise InvalidParameterError(
            f"canvas must have a positive size, not {request.canvas.width}x"
            f"{request.canvas.height}.",
            "",
        )
    return bounds


def _device_name(device: Any) -> str:
    if device.type == "cuda":
        import torch

        return str(torch.cuda.get_device_name(device))
    if device.type == "mps":
        return "Apple GPU (MPS)"
    from backend.devices import cpu_model

    return cpu_model()
