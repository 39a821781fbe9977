"""One Restora action from start to end, on any `Editor`, blocking the calling thread.

A GIMP plug-in runs one procedure at a time and may call GIMP only from its main thread, so:
1. connect and read the backend's catalog (is the task there, is the model there),
2. read the document through the editor (`operations.prepare_*`),
3. run the job on the common job runner's worker thread while this thread waits on a queue and
   runs the runner's callbacks (progress) itself, so GIMP is only ever called from here,
4. place the result through the editor (`operations.apply_result`, one undo group).

Every connection writes the backend's task list to the cache GIMP registers the procedures
from at its next start, so a task added to the backend appears then.

Standard library only: tested with a fake editor against the real server.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable
from typing import Protocol

from ..common import task_cache
from ..common.catalog import Catalog, fetch_catalog, missing_model_hint
from ..common.client import Client
from ..common.editor import Editor
from ..common.errors import BackendUnavailable, JobCancelled, PluginError
from ..common.job_runner import JobInput, JobResult, JobRunner, Outcome
from ..common.launcher import find_backend, is_local, start_backend
from ..common.operations import (
    PreparedJob,
    apply_result,
    prepare_restore,
    prepare_task,
)
from ..common.result_words import result_notes
from ..common.settings import Settings
from .cancel_guard import CancelGuard
from .procedures import Action

#: how often the waiting thread looks up when no callback arrives
_POLL_SECONDS = 0.1
#: how often a sink that shows the time hears that time has passed
_TICK_SECONDS = 1.0


class ProgressSink(Protocol):
    def progress(self, fraction: float, stage: str) -> None:
        """fraction in 0..1, or negative while it is unknown."""
        ...


def _ticker(sink: ProgressSink) -> Callable[[], None]:
    """The sink's `tick()` (time passed without news), if it has one."""
    tick = getattr(sink, "tick", None)
    return tick if callable(tick) else (lambda: None)


class _Listener:
    """The job runner's listener; runs on the waiting thread (see `run_job`)."""

    def __init__(self, sink: ProgressSink) -> None:
        self.sink = sink

    def on_progress(self, fraction: float, stage: str) -> None:
        self.sink.progress(fraction, stage)

    def on_finished(self, result: JobResult) -> None:
        pass  # the runner keeps it; run_job returns it

    def on_failed(self, error: PluginError) -> None:
        pass

    def on_cancelled(self) -> None:
        pass


def run_action(action: Action, editor: Editor, settings: Settings, task: str,
               sink: ProgressSink, guard: bool = True, tasks_path: str | None = None) -> str:
    """Run `task` as `action` on the editor's document; returns the new layer's name.

    Raises PluginError (a subclass) with words for the user for everything that can go wrong;
    the document is changed only when the result has arrived. With `tasks_path`, the
    backend's task list is cached there.
    """
    client = Client(settings.backend_url, settings.token)
    sink.progress(-1.0, "connecting to the backend")
    catalog = connect(client, sink)
    if tasks_path:
        task_cache.save(tasks_path, catalog.tasks)
    if not task:  # Restore selection without a task: the backend's first, with its choices
        task = catalog.pick_task(task) or task
        settings.task = task
        if "" in settings.models:
            settings.models = {task: settings.models[""]}
        settings.options = {task: settings.options.get("", {})}
        if "" in settings.references:
            settings.references = {task: settings.references[""]}
    _check(catalog, settings, task)
    prepared = prepare(action, editor, settings, task, catalog)
    result = run_job(client, prepared.input, sink, guard=guard)
    name = apply_result(editor, prepared, result)
    # a picked layer left out, the seed, how far a redraw moved, a chain's skipped stages:
    # for the person to read
    editor.notes = [*result.notes, *result_notes(result.details)]
    return name


def autostart_available(url: str) -> bool:
    """A backend at this loopback address can be started: the installer recorded one
    (RESTORA_AUTOSTART=0 turns that off)."""
    return (os.environ.get("RESTORA_AUTOSTART", "1") != "0" and is_local(url)
            and find_backend() is not None)


def connect(client: Client, sink: ProgressSink) -> Catalog:
    """The backend's catalog; when none answers and the installer set one up, it is started
    (GIMP has no docker to offer a button, so the first Restora command starts it)."""
    try:
        return fetch_catalog(client)
    except BackendUnavailable:
        if not autostart_available(client.url):
            raise
    sink.progress(-1.0, "starting the backend (the first start can take a minute)")
    start_backend(client.url, client.token)
    return fetch_catalog(client)


def prepare(action: Action, editor: Editor, settings: Settings, task: str,
            catalog: Catalog) -> PreparedJob:
    if action == Action.RESTORE:
        return prepare_restore(editor, settings, task, catalog)
    return prepare_task(editor, settings, task, catalog)


def run_job(client: Client, job: JobInput, sink: ProgressSink, guard: bool = True,
            on_start: Callable[[JobRunner], None] | None = None) -> JobResult:
    """Run one job and wait for it here; progress reaches `sink` on this thread."""
    calls: queue.Queue[Callable[[], None]] = queue.Queue()
    runner = JobRunner(client, job, _Listener(sink), dispatch=calls.put)
    watchdog = CancelGuard.start(client.url, client.token, runner.job_id) if guard else None
    tick, ticked = _ticker(sink), time.monotonic()
    try:
        runner.start()
        if on_start is not None:
            on_start(runner)
        # the runner queues its last callback before it counts as done: drain until both
        while not (runner.done and calls.empty()):
            if time.monotonic() - ticked >= _TICK_SECONDS:
                tick()  # a long tile or model load sends nothing: the clock still moves
                ticked = time.monotonic()
            try:
                calls.get(timeout=_POLL_SECONDS)()
            except queue.Empty:
                continue
    finally:
        if watchdog is not None:
            watchdog.release()
    if runner.outcome == Outcome.FINISHED and runner.result is not None:
        return runner.result
    if runner.outcome == Outcome.CANCELLED:
        raise JobCancelled("Cancelled.")
    raise runner.error or PluginError("The job ended without a result.",
                                      "This is a bug in the plug-in; please report it.")


def _check(catalog: Catalog, settings: Settings, task: str) -> None:
    """The backend runs the task and has the model asked for (no silent substitute)."""
    title = catalog.title(task)
    info = catalog.task_info(task)
    if info is None:
        runs = ", ".join(t.title or t.task for t in catalog.available_tasks()) or "nothing yet"
        raise PluginError(f"This Restora backend ({catalog.health.version}) does not run "
                          f"'{title}'; it runs: {runs}.",
                          "Update the backend, or choose another task.")
    if not info.available:
        raise PluginError(info.reason or f"This Restora backend cannot run '{title}' now.",
                          missing_model_hint(info))
    if not catalog.takes_model(task):
        return
    names = [m.name for m in catalog.models_for(task)]
    wanted = settings.model_for(task)
    if wanted and wanted not in names:
        have = ", ".join(names) or "none"
        raise PluginError(f"The backend has no model called '{wanted}' for '{title}' "
                          f"(it has: {have}).",
                          "Choose one of its models, or leave the model empty for the default.")
    if catalog.default_model(task) is None:
        raise PluginError(f"The backend has no model for '{title}'.", missing_model_hint(info))
