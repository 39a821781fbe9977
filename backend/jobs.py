"""Jobs: the task table, the queue, the one worker thread that owns the device, and results.

One thread runs every job, so models, device memory and the GPU are never shared between two
jobs; request handlers only validate, enqueue and read state under a lock, and never wait for a
model. The worker reports through `publish` (the event hub, which hands events to the event
loop with call_soon_threadsafe). A job's failure is stored as a typed error and the worker
takes the next job.

Adding a task: its module in backend/tasks/ (params dataclass with validate(), and run()), its
name in shared.protocol.Task, and one TaskSpec in TASKS below.
"""

from __future__ import annotations

import logging
import threading
import time
import typing
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from backend import masking
from backend.errors import (
    CancelledError,
    ImageTooLargeError,
    InvalidParameterError,
    ModelNotFoundError,
    OutOfMemoryError,
    RestoraError,
)
from backend.model_cache import ModelCache
from backend.models.registry import (
    DEFAULT_UPSCALE_MODEL,
    ModelEntry,
    Registry,
    preferred_entry,
)
from backend.result_spill import SpillFolder, remove_stale, spill_root
from backend.settings import Settings
from backend.tasks import face_restore, upscale
from shared.geometry import Bounds
from shared.protocol import (
    PROTOCOL_VERSION,
    ErrorBody,
    EventType,
    JobRequest,
    JobState,
    JobStatus,
    ParamInfo,
    Placement,
    ResultInfo,
    Task,
    TaskInfo,
    excerpt,
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


class TaskUnavailableError(RestoraError):
    code = "task_unavailable"
    http_status = 422


class ProtocolVersionError(RestoraError):
    code = "protocol_version"
    http_status = 400


# --- the task table --------------------------------------------------------------------------


@dataclass
class JobInput:
    pixels: np.ndarray
    mask: np.ndarray | None
    #: other models the task uses besides its own (loaded by the worker): param name -> model
    helpers: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskOutput:
    """A task's pixels plus what it reports about them (ResultInfo.details)."""

    pixels: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)


ProgressSink = Callable[[float, str], None]
TaskRun = Callable[[JobInput, Any, Any, ProgressSink, Any], "np.ndarray | TaskOutput"]
TaskPrepare = Callable[[Any, JobInput, ModelEntry, Settings], None]
#: the params naming other models: param name -> (model name, the task whose models fit)
HelperModels = Callable[[Any], dict[str, tuple[str, Task]]]


@dataclass(frozen=True)
class TaskSpec:
    task: Task
    params_type: type
    #: registry folders and spandrel purposes of the models that can run it
    folders: tuple[str, ...]
    purposes: tuple[str, ...]
    default_model: str | None
    run: TaskRun
    #: server-side adjustment and checks of the params before the job is queued
    prepare: TaskPrepare
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    #: params the server sets itself; a client cannot name them
    server_params: frozenset[str] = frozenset()
    helper_models: HelperModels | None = None

    def accepts(self, entry: ModelEntry) -> bool:
        return entry.usable and entry.folder in self.folders and entry.purpose in self.purposes


def output_scale(entry: ModelEntry) -> int:
    """The scale a model delivers: an ncnn x2 model may be an x4 network plus a resize."""
    return entry.output_scale or entry.scale


def _upscale_prepare(
    params: upscale.UpscaleParams, inp: JobInput, entry: ModelEntry, settings: Settings
) -> None:
    if inp.mask is not None and params.scale is None and params.width is None:
        params.scale = 1.0  # a selection is restored in place
    params.max_output_pixels = settings.max_output_pixels
    height, width = inp.pixels.shape[:2]
    out_w, out_h = upscale.output_size(width, height, output_scale(entry), params)
    if out_w * out_h > params.max_output_pixels:
        raise ImageTooLargeError(
            f"The result would be {out_w}x{out_h} = {out_w * out_h / 1e6:.0f} megapixels, more "
            f"than this server's limit of {params.max_output_pixels / 1e6:.0f}.",
            "Upscale a selection, or choose a smaller scale.",
        )


def _upscale_run(
    inp: JobInput, model: Any, params: Any, progress: ProgressSink, cancel: Any
) -> np.ndarray:
    return upscale.run(inp.pixels, model, params, progress=progress, cancel=cancel)


def _face_prepare(
    params: face_restore.FaceRestoreParams, inp: JobInput, entry: ModelEntry, settings: Settings
) -> None:
    params.max_output_pixels = settings.max_output_pixels


def _face_run(
    inp: JobInput, model: Any, params: Any, progress: ProgressSink, cancel: Any
) -> TaskOutput:
    upscaler = inp.helpers.get("upscale_model")
    result = face_restore.run(
        inp.pixels, model, params, progress, cancel, mask=inp.mask, upscaler=upscaler
    )
    # the faces alone as a layer over the original; an upscaled background is the whole image
    pixels = result.pixels if upscaler is not None else result.layer()
    return TaskOutput(pixels, result.details())


def _face_helpers(params: face_restore.FaceRestoreParams) -> dict[str, tuple[str, Task]]:
    return {"upscale_model": (params.upscale_model, Task.UPSCALE)} if params.upscale_model else {}


TASKS: dict[Task, TaskSpec] = {
    Task.UPSCALE: TaskSpec(
        task=Task.UPSCALE,
        params_type=upscale.UpscaleParams,
        folders=("upscale_models",),
        purposes=("SR", "Restoration"),
        default_model=DEFAULT_UPSCALE_MODEL,
        run=_upscale_run,
        prepare=_upscale_prepare,
        choices={"alpha": upscale.ALPHA_MODES},
        server_params=frozenset({"max_output_pixels"}),
    ),
    Task.FACE_RESTORE: TaskSpec(
        task=Task.FACE_RESTORE,
        params_type=face_restore.FaceRestoreParams,
        folders=("facerestore_models",),
        purposes=("FaceSR",),
        default_model=None,  # the first face model installed (GFPGAN before CodeFormer, ...)
        run=_face_run,
        prepare=_face_prepare,
        server_params=frozenset({"max_output_pixels"}),
        helper_models=_face_helpers,
    ),
}


def task_spec(task: Task) -> TaskSpec:
    spec = TASKS.get(task)
    if spec is None:
        raise TaskUnavailableError(
            f"The task '{task.value}' is not available in this version of the server.",
            f"Tasks it runs: {', '.join(t.value for t in TASKS)}.",
        )
    return spec


def parse_params(spec: TaskSpec, raw: dict[str, Any]) -> Any:
    """The task's params dataclass from a JSON object, naming any unknown or mistyped key."""
    hints = typing.get_type_hints(spec.params_type)
    known = [f.name for f in fields(spec.params_type) if f.name not in spec.server_params]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise InvalidParameterError(
                f"Unknown parameter '{excerpt(key)}' for task '{spec.task.value}'.",
                f"Its parameters are: {', '.join(known)}.",
            )
        values[key] = _check_type(spec.task, key, hints[key], value)
    params = spec.params_type(**values)
    params.validate()
    return params


def _check_type(task: Task, name: str, hint: Any, value: Any) -> Any:
    kind, optional = _param_type(hint)
    if value is None and optional:
        return None
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }.get(kind, True)
    if not ok:
        article = "an" if kind == "int" else "a"
        raise InvalidParameterError(
            f"Parameter '{name}' of task '{task.value}' must be {article} {kind}"
            f"{' or null' if optional else ''}, not {excerpt(value)}.",
            "",
        )
    return float(value) if kind == "float" else value


def _param_type(hint: Any) -> tuple[str, bool]:
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    return getattr(base, "__name__", str(base)), optional


def task_info(spec: TaskSpec) -> TaskInfo:
    hints = typing.get_type_hints(spec.params_type)
    params = []
    for f in fields(spec.params_type):
        if f.name in spec.server_params:
            continue
        kind, optional = _param_type(hints[f.name])
        default = None if f.default is MISSING else f.default
        choices = list(spec.choices[f.name]) if f.name in spec.choices else None
        params.append(ParamInfo(f.name, kind, default, optional, choices))
    return TaskInfo(spec.task, True, spec.default_model, accepts_mask=True, params=params)


def all_task_infos() -> list[TaskInfo]:
    return [task_info(TASKS[t]) if t in TASKS else TaskInfo(t, False) for t in Task]


def missing_model_hint(spec: TaskSpec) -> str:
    """What to install for a task that has no model, from the shipped catalog's entries."""
    from backend.models.catalog import load_catalog

    try:
        entries = load_catalog().by_task(spec.task.value)
    except RestoraError:  # a broken RESTORA_CATALOG must not break the task list
        entries = []
    folder = spec.folders[0]
    after = "then restart `restora serve` (or list GET /v1/models?refresh=true)."
    if not entries:
        return f"Put a model for it in the {folder} folder, {after}"
    families = list(dict.fromkeys(e.family for e in entries))
    named = ", ".join(families[:-1]) + f" or {families[-1]}" if len(families) > 1 else families[0]
    suggested = next((e for e in entries if not e.needs_consent), entries[0])
    return (
        f"Put a {named} model in the {folder} folder, or run "
        f"`restora models download {suggested.name}`, {after}"
    )


# --- jobs and their results ------------------------------------------------------------------


@dataclass(eq=False)
class Job:
    id: str
    request: JobRequest
    spec: TaskSpec
    entry: ModelEntry
    params: Any
    input: JobInput | None  # dropped once the job ends
    feather: float | None
    bounds: Bounds
    state: JobState = JobState.QUEUED
    progress: float = 0.0
    stage: str = ""
    error: ErrorBody | None = None
    result: ResultInfo | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    expires: float = float("inf")
    cancel: upscale.CancelToken = field(default_factory=upscale.CancelToken)
    last_progress_event: float = 0.0
    helper_entries: dict[str, ModelEntry] = field(default_factory=dict)

    def status(self, position: int | None = None) -> JobStatus:
        return JobStatus(
            id=self.id,
            client=self.request.client,
            task=self.spec.task,
            model=self.entry.name,
            state=self.state,
            progress=self.progress,
            stage=self.stage,
            position=position,
            error=self.error,
            result=self.result,
            created=self.created,
            started=self.started,
            finished=self.finished,
        )


@dataclass
class _Stored:
    pixels: np.ndarray | None
    path: Path | None
    nbytes: int
    fetched: float | None = None


class ResultStore:
    """Finished jobs' pixels, in memory up to a budget; beyond it, fetched results are dropped
    (oldest first) and then unfetched ones are written to a spill folder, so none is lost."""

    def __init__(self, memory_limit: int, spill_dir: str | None = None) -> None:
        self.memory_limit = memory_limit
        self.spill = SpillFolder(spill_root(spill_dir))
        self._items: OrderedDict[str, _Stored] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, job_id: str, pixels: np.ndarray) -> list[str]:
        """Store a result; returns the ids of fetched results dropped to make room."""
        with self._lock:
            self._items[job_id] = _Stored(pixels, None, pixels.nbytes)
            return self._enforce_budget()

    def get(self, job_id: str) -> np.ndarray | None:
        with self._lock:
            item = self._items.get(job_id)
            if item is None:
                return None
            if item.fetched is None:
                item.fetched = time.time()
            if item.pixels is not None:
                return item.pixels
            path = item.path
        return np.load(path, mmap_mode="r") if path else None

    def drop(self, job_id: str) -> None:
        with self._lock:
            item = self._items.pop(job_id, None)
        if item is not None and item.path is not None:
            item.path.unlink(missing_ok=True)

    def memory_bytes(self) -> int:
        with self._lock:
            return sum(i.nbytes for i in self._items.values() if i.pixels is not None)

    def close(self) -> None:
        with self._lock:
            self._items.clear()
            self.spill.close()

    def _enforce_budget(self) -> list[str]:
        dropped: list[str] = []
        in_memory = sum(i.nbytes for i in self._items.values() if i.pixels is not None)
        fetched = sorted(
            (i.fetched, k)
            for k, i in self._items.items()
            if i.fetched is not None and i.pixels is not None
        )
        for _when, key in fetched:
            if in_memory <= self.memory_limit:
                return dropped
            in_memory -= self._items.pop(key).nbytes
            dropped.append(key)
        for key, item in self._items.items():  # oldest first
            if in_memory <= self.memory_limit:
                break
            if item.pixels is None:
                continue
            path = self.spill.path() / f"{key}.npy"
            np.save(path, item.pixels)
            item.pixels, item.path = None, path
            in_memory -= item.nbytes
        return dropped


# --- the manager: queue and worker -----------------------------------------------------------


Publish = Callable[[EventType, JobStatus], None]


class JobManager:
    def __init__(
        self, settings: Settings, registry: Registry, models: ModelCache, publish: Publish
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.models = models
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

    def find_model(self, name: str | None, spec: TaskSpec) -> ModelEntry:
        name = name or spec.default_model
        if not name:
            return self._first_model(spec)
        with self._registry_lock:  # the first listing loads every file: only once at a time
            entry = self.registry.find(name)
        if not spec.accepts(entry):
            raise InvalidParameterError(
                f"Model '{entry.name}' is a {entry.purpose or 'non-spandrel'} model in "
                f"{entry.folder}/; task '{spec.task.value}' needs a "
                f"{' or '.join(spec.purposes)} model.",
                "GET /v1/models?task=" + spec.task.value + " lists the models that fit.",
            )
        return entry

    def default_model_name(self, spec: TaskSpec) -> str | None:
        """The model a job of this task runs when it names none; None when none is installed."""
        if spec.default_model:
            return spec.default_model
        try:
            return self._first_model(spec).name
        except ModelNotFoundError:
            return None

    def _first_model(self, spec: TaskSpec) -> ModelEntry:
        """A task without a default model runs the first one installed that fits it."""
        entry = preferred_entry([e for e in self.model_entries() if spec.accepts(e)])
        if entry is None:
            raise ModelNotFoundError(
                f"No model for task '{spec.task.value}' is installed.", missing_model_hint(spec)
            )
        return entry

    def model_entries(self, refresh: bool = False) -> list[ModelEntry]:
        with self._registry_lock:
            return list(self.registry.entries(refresh=refresh))

    def submit(
        self, request: JobRequest, pixels: np.ndarray, mask: np.ndarray | None
    ) -> tuple[JobStatus, bool]:
        """Validate and queue a job; returns its status and whether it is new.

        Resubmitting a request with the same client-chosen id returns the first job, so a
        client that lost the answer can simply send it again.
        """
        if request.protocol_version > PROTOCOL_VERSION:
            raise ProtocolVersionError(
                f"The client speaks protocol {request.protocol_version}; this server speaks "
                f"{PROTOCOL_VERSION}.",
                "Update the Restora server.",
            )
        resubmitted = self.resubmission(request)
        if resubmitted is not None:
            return resubmitted, False
        spec = task_spec(request.task)
        inp = JobInput(pixels, mask)
        bounds = _check_geometry(request, pixels, mask)
        feather = masking.resolve_feather(mask, request.feather) if mask is not None else None
        params = parse_params(spec, request.params)
        entry = self.find_model(request.model, spec)
        helpers = {
            key: self.find_model(name, task_spec(task))
            for key, (name, task) in (
                spec.helper_models(params) if spec.helper_models else {}
            ).items()
        }
        spec.prepare(params, inp, entry, self.settings)
        job = Job(
            id=request.id or uuid.uuid4().hex,
            request=request,
            spec=spec,
            entry=entry,
            params=params,
            input=inp,
            feather=feather,
            bounds=bounds,
            helper_entries=helpers,
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

    def result(self, job_id: str) -> tuple[np.ndarray, JobStatus]:
        """The result's pixels; the first fetch shortens how long it is kept."""
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
        pixels = self.results.get(job_id)
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
            pixels, details = self._execute(job)
            dropped = self.results.put(job.id, pixels)
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
            job.result = self._result_info(job, pixels, details)
            self._finish(job, JobState.FINISHED, EventType.FINISHED, "done", progress=1.0)
            with self._lock:
                for job_id in dropped:
                    forgotten = self._jobs.pop(job_id, None)
                    if forgotten is not None:
                        log.info("dropped fetched result %s to stay within memory", job_id)

    def _execute(self, job: Job) -> tuple[np.ndarray, dict[str, Any]]:
        inp = job.input
        if inp is None or job.cancel.cancelled:
            raise CancelledError("The job was cancelled.", "")

        def progress(fraction: float, stage: str) -> None:
            self._progress(job, fraction, stage)

        progress(0.0, "loading model")
        out = self._attempt(job, inp, progress)
        if out is None:
            # the task already went down to its smallest tile: start again from an empty cache
            freed = self._free_models(inp)
            log.warning("job %s ran out of memory; unloaded %d models, retrying", job.id, freed)
            progress(job.progress, "retrying with less memory")
            out = self._attempt(job, inp, progress)
        if out is None:
            self._free_models(inp)  # the job does not fit: give its memory back at once
            raise OutOfMemoryError(
                "Not enough memory for this job, even with every other model unloaded and "
                "the smallest tiles.",
                "Close other programs using the GPU, use a smaller model, or upscale a selection.",
            )
        output = out if isinstance(out, TaskOutput) else TaskOutput(out)
        if inp.mask is not None:
            progress(1.0, "masking")
            output.pixels = masking.apply_selection(output.pixels, inp.mask, job.feather or 0.0)
        return output.pixels, output.details

    def _attempt(
        self, job: Job, inp: JobInput, progress: ProgressSink
    ) -> np.ndarray | TaskOutput | None:
        """One run of the task with its models loaded; None when it ran out of memory.

        The error is not kept: its traceback holds the frames that hold the models and the
        activations, and the retry needs that memory back.
        """
        model = self.models.get(job.entry)
        inp.helpers = {key: self.models.get(e) for key, e in job.helper_entries.items()}
        job.cancel.raise_if_cancelled()
        try:
            return job.spec.run(inp, model, job.params, progress, job.cancel)
        except OutOfMemoryError as exc:
            log.info("job %s: %s", job.id, exc.message)
            return None
        finally:
            del model

    def _free_models(self, inp: JobInput) -> int:
        """Unload every model, the job's own and its helpers included, and drop their memory."""
        inp.helpers = {}
        return self.models.unload_all()

    def _progress(self, job: Job, fraction: float, stage: str) -> None:
        now = time.monotonic()
        with self._lock:
            changed = stage != job.stage
            job.progress, job.stage = float(fraction), stage
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

    def _result_info(
        self, job: Job, pixels: np.ndarray, details: dict[str, Any] | None = None
    ) -> ResultInfo:
        height, width, channels = pixels.shape
        in_h, in_w = job.bounds.height, job.bounds.width
        canvas = job.request.canvas
        sx, sy = width / in_w, height / in_h
        placement = Placement(
            bounds=job.bounds.scaled_to(width, height),
            canvas=canvas.scaled(sx, sy) if canvas is not None else None,
            scale_x=sx,
            scale_y=sy,
        )
        depth = 16 if pixels.dtype == np.uint16 else 8
        return ResultInfo(
            width, height, channels, depth, placement, expires=job.expires, details=details or {}
        )

    def _sweep(self) -> None:
        """Forget jobs (and results) past their time. Called with the lock held."""
        now = time.time()
        expired = [j.id for j in self._jobs.values() if j.state.done and j.expires <= now]
        for job_id in expired:
            del self._jobs[job_id]
            self.results.drop(job_id)


def checked_request(request: JobRequest) -> JobRequest:
    """The request, its ids and model name checked against the protocol's patterns."""
    from shared.protocol import ProtocolError

    try:
        request.check()
    except ProtocolError as exc:
        raise InvalidParameterError(f"{exc}.", "") from None
    return request


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
