"""The UI-thread side of the plug-in: settings, the backend connection, the actions.

Workers never touch Krita: they hand callbacks to `UiDispatcher.post`, a queued Qt signal, so
results are applied on Krita's UI thread. Several actions may be under way: each reads its
pixels when it is clicked and is sent at once, the backend runs them in order and says how many
are ahead; the docker shows them in that order. Finished actions go into a short history (what
made each result, to run again or to take its settings back). The docker follows
`Controller.changed`.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable
from typing import Any

from krita import Krita

from ..common.catalog import Catalog, forget_unknown_options, ordered, resizes_now
from ..common.connection import Connection, ConnectionState
from ..common.downloads import DownloadRunner
from ..common.errors import BackendLost, BackendUnavailable, NothingFound, PluginError
from ..common.job_runner import JobResult, JobRunner
from ..common.launcher import BackendLauncher
from ..common.operations import (
    PreparedJob,
    apply_result,
    prepare_restore,
    prepare_task,
    prepare_whole_image,
)
from ..common.progress import ProgressClock, format_duration
from ..common.result_words import result_notes
from ..common.settings import Settings
from ..common.status import Status, backend_status
from ..shared.protocol import TaskInfo
from .document import KritaEditor
from .qt import QEventLoop, QObject, Qt, QTimer, pyqtSignal

#: seconds between looks at the backend: a light health check while connected (so the status
#: line follows a backend that stops within two seconds), a full connect while it is not
POLL_SECONDS = 1
#: results kept in the history, newest first
HISTORY_LENGTH = 10
#: actions that may wait for the backend at once
QUEUE_LIMIT = 8


class UiDispatcher(QObject):
    """Runs callables on the thread that created it (Krita's UI thread), from any thread."""

    _call = pyqtSignal(object)

    def __init__(self) -> None:
        super().__init__()
        self._call.connect(self._run, Qt.ConnectionType.QueuedConnection)

    def post(self, fn: Callable[[], None]) -> None:
        self._call.emit(fn)

    def _run(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # an exception escaping a slot would abort Krita under PyQt 5.5+
            traceback.print_exc()


class ActionRun:
    """One action from the menu click to the new layer; also what scripts and tests get."""

    def __init__(self, controller: Controller, title: str) -> None:
        self.controller = controller
        self.title = title
        self.status = "running"  # then "finished", "failed" or "cancelled"
        self.progress = 0.0
        self.stage = "starting"
        self.clock = ProgressClock()
        self.seconds: float | None = None  # how long it took, once it ended
        self.layer_name: str | None = None
        #: the layers (or group) it added, for before/after and strength; empty: none, or a
        #: new document
        self.layers: list[Any] = []
        #: what made it, filled when the job is prepared: to run it again or show it
        self.settings: Settings | None = None
        self.task = ""
        self.model: str | None = None
        self.params: dict[str, Any] = {}
        self.on_selection = False
        #: what the backend reported besides pixels (seed, how far the result moved)
        self.details: dict[str, Any] = {}
        self.error: PluginError | None = None
        self.editor: KritaEditor | None = None
        self.prepared: PreparedJob | None = None
        self.runner: JobRunner | None = None
        self._on_done: list[Callable[[], None]] = []

    @property
    def done(self) -> bool:
        return self.status != "running"

    def cancel(self) -> None:
        if self.runner is not None and not self.done:
            self.stage = "cancelling"
            self.runner.cancel()
            self.controller.notify()

    def wait(self, timeout: float = 600.0) -> ActionRun:
        """Run Qt's event loop until the action has ended (for scripts and tests: the menu
        actions never wait)."""
        if not self.done:
            loop = QEventLoop()
            self._on_done.append(loop.quit)
            QTimer.singleShot(int(timeout * 1000), loop.quit)
            loop.exec()
        return self

    # - JobListener: called on the UI thread through the dispatcher -

    def on_progress(self, fraction: float, stage: str) -> None:
        if self.done or self.runner is None:
            return
        self.progress, self.stage = fraction, stage
        self.clock.update(fraction)
        self.controller.notify()

    @property
    def reconnecting(self) -> bool:
        return not self.done and self.progress < 0

    def describe(self) -> str:
        """What made this result, in one line: task, model, options, time."""
        parts = [self.title]
        if self.model:
            parts.append(self.model)
        parts += [f"{k.replace('_', ' ')} {v}" for k, v in sorted(self.params.items())]
        if self.seconds is not None:
            parts.append(format_duration(self.seconds))
        return " · ".join(parts)

    def on_finished(self, result: JobResult) -> None:
        editor, prepared = self.editor, self.prepared
        if editor is None or prepared is None:  # a runner starts only once both are set
            return
        try:
            self.layer_name = apply_result(editor, prepared, result)
            self.layers = list(editor.added)
        except NothingFound as exc:  # news, not a failure: the document is as it was
            self._end("finished", exc.text)
            return
        except PluginError as exc:
            self.fail(exc)
            return
        except Exception as exc:  # a bug: the action must still end, with a message
            traceback.print_exc()
            self.fail(PluginError(f"Restora could not add the result: {exc!r}.",
                                  "This is a bug in the plug-in; please report it."))
            return
        self.details = dict(result.details)
        self._end("finished", " ".join([f"Added '{self.layer_name}'.", *result.notes,
                                        *result_notes(result.details)]))

    def on_failed(self, error: PluginError) -> None:
        self.fail(error)

    def on_cancelled(self) -> None:
        self._end("cancelled", "Cancelled; the image was not changed.")

    def fail(self, error: PluginError) -> None:
        self.error = error
        if isinstance(error, (BackendUnavailable, BackendLost)):
            self.controller.connection.mark_unavailable(error)
        self._end("failed", error.text)

    def _end(self, status: str, message: str) -> None:
        self.status, self.stage = status, message
        self.progress = 1.0 if status == "finished" else 0.0
        self.seconds = self.clock.elapsed()
        self.controller.action_ended(self)
        for callback in self._on_done:
            callback()


Prepare = Callable[[KritaEditor, Catalog], PreparedJob]


class ModelDownload:
    """A catalog model being downloaded by the backend for the docker's Download button."""

    def __init__(self, controller: Controller, name: str, label: str) -> None:
        self.controller = controller
        self.name, self.label = name, label
        self.done_bytes, self.total_bytes = 0, None
        self.status = "running"  # then "finished", "failed" or "cancelled"
        self.error: PluginError | None = None
        self.runner: DownloadRunner | None = None

    @property
    def done(self) -> bool:
        return self.status != "running"

    def on_download_progress(self, done: int, total: int | None) -> None:
        self.done_bytes, self.total_bytes = done, total
        self.controller.notify()

    def on_download_finished(self, info: Any) -> None:
        self.status = "finished"
        self.controller.download_ended(self)
        self.controller.connection.refresh()  # the model list and the task's availability

    def on_download_failed(self, error: PluginError) -> None:
        self.status, self.error = "failed", error
        self.controller.download_ended(self)

    def on_download_cancelled(self) -> None:
        self.status = "cancelled"
        self.controller.download_ended(self)


class TaskStore:
    """Where the last task list seen is kept (the menu offers it before the backend answers)."""

    def __init__(self, load: Callable[[], list[TaskInfo]],
                 save: Callable[[list[TaskInfo]], None]) -> None:
        self.load, self.save = load, save


class Controller(QObject):
    changed = pyqtSignal()

    def __init__(self, settings: Settings,
                 save: Callable[[Settings], None] | None = None,
                 tasks: TaskStore | None = None) -> None:
        super().__init__()
        self.settings = settings
        self._save = save
        self._tasks = tasks
        #: the tasks of the last backend seen, until this one answers
        self.cached_tasks: list[TaskInfo] = tasks.load() if tasks is not None else []
        #: actions waiting for the backend's catalog: (run, prepare), in order
        self._waiting: list[tuple[ActionRun, Prepare]] = []
        self.dispatcher = UiDispatcher()
        self.connection = Connection(settings.backend_url, settings.token,
                                     dispatch=self.dispatcher.post,
                                     on_change=self._connection_changed)
        self.launcher = BackendLauncher(self.dispatcher.post)
        #: actions under way, in the order they were started (the backend's order)
        self.runs: list[ActionRun] = []
        self.last: ActionRun | None = None
        #: ended actions, newest first
        self.history: list[ActionRun] = []
        #: what the user should know about their settings, e.g. saved options dropped
        self.notes: list[str] = []
        #: the model download under way or last ended (the docker's Download button)
        self.download: ModelDownload | None = None
        self._checked: Catalog | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_SECONDS * 1000)
        self._timer.timeout.connect(self._poll)

    def start(self) -> None:
        """Connect now and keep checking, so a backend started later is found."""
        self._timer.start()
        self.connection.refresh()

    def notify(self) -> None:
        self.changed.emit()

    @property
    def current(self) -> ActionRun | None:
        """The first action under way (the one running on the backend, or next)."""
        return self.runs[0] if self.runs else None

    @property
    def queued(self) -> list[ActionRun]:
        """The actions after the current one, in order."""
        return self.runs[1:]

    def known_tasks(self) -> list[TaskInfo]:
        """The tasks to offer, in menu order: the backend's, else the last ones seen."""
        catalog = self.connection.catalog
        if catalog is not None:
            return catalog.available_tasks()
        return [t for t in ordered(self.cached_tasks) if t.available]

    def task_info(self, task: str) -> TaskInfo | None:
        catalog = self.connection.catalog
        return next((t for t in (catalog.tasks if catalog else self.cached_tasks)
                     if t.task == task), None)

    def status(self) -> Status:
        """The status line: the connection, a start under way, a job that lost its stream."""
        conn = self.connection
        error = self.launcher.error
        return backend_status(
            conn, starting=self.launcher.busy,
            start_error=error.text if error is not None and not conn.connected else "",
            can_start=self.can_start_backend,
            reconnecting=any(run.reconnecting for run in self.runs))

    def _connection_changed(self, connection: Connection) -> None:
        catalog = connection.catalog
        if self._waiting and connection.state != ConnectionState.CONNECTING:
            waiting, self._waiting = self._waiting, []
            for run, prepare in waiting:
                if catalog is None:
                    run.fail(connection.error or PluginError(
                        f"Restora's backend at {connection.client.url} did not answer.", ""))
                else:
                    self._begin(run, prepare, catalog)
        if catalog is not None and catalog is not self._checked:
            self._checked = catalog
            if self._tasks is not None and catalog.tasks != self.cached_tasks:
                self.cached_tasks = list(catalog.tasks)
                self._tasks.save(self.cached_tasks)
            cleaned, notes = forget_unknown_options(self.settings, catalog)
            if notes:
                self.notes = notes
                self.update_settings(cleaned)  # saved at once, so kritarc heals too
                _show_floating("Restora: " + " ".join(notes))
                return
        self.notify()

    def update_settings(self, settings: Settings) -> None:
        self.settings = settings
        if self._save is not None:
            self._save(settings)
        before = self.connection.client
        self.connection.configure(settings.backend_url, settings.token)
        if self.connection.client is not before:
            self.connection.refresh()
        self.notify()

    # - a local backend, started from the docker -

    @property
    def can_start_backend(self) -> bool:
        """Nothing answers at a loopback address, and no start is under way."""
        conn = self.connection
        return (conn.state == ConnectionState.DISCONNECTED and conn.client.is_local
                and not self.launcher.busy)

    def start_backend(self) -> bool:
        """Start `restora serve` as the installer recorded it (off the UI thread); the
        connection is checked again when it answers. False when a start is under way."""
        started = self.launcher.start(self.settings.backend_url, self.settings.token,
                                      self._backend_started)
        self.notify()
        return started

    def _backend_started(self, error: PluginError | None) -> None:
        if error is None:
            self.connection.refresh()
        self.notify()

    # - downloading a model the backend's catalog offers -

    def download_model(self, name: str, label: str = "",
                       accept_licence: bool = False) -> ModelDownload | None:
        """The backend downloads a catalog model; None while another download runs."""
        if self.download is not None and not self.download.done:
            return None
        download = ModelDownload(self, name, label or name)
        download.runner = DownloadRunner(self.connection.client, name, accept_licence,
                                         download, dispatch=self.dispatcher.post).start()
        self.download = download
        self.notify()
        return download

    def cancel_download(self) -> None:
        if self.download is not None and self.download.runner is not None:
            self.download.runner.cancel()

    def download_ended(self, download: ModelDownload) -> None:
        words = {"finished": f"Downloaded {download.label}.",
                 "cancelled": f"Stopped downloading {download.label}.",
                 "failed": download.error.text if download.error is not None else ""}
        _show_floating(f"Restora: {words.get(download.status, '')}")
        self.notify()

    # - the actions -

    def run(self, document: Any = None, node: Any = None) -> ActionRun:
        """The docker's Run: the chosen task on what `run_target` names."""
        task = self.settings.task or (self.known_tasks()[0].task if self.known_tasks() else "")
        return self.run_task(task, document, node)

    def run_target(self, document: Any = None, task: str | None = None) -> str:
        """What Run works on now: "selection", "layer" or "image" (a task that enlarges the
        image with its options now, or one that ignores selections, takes the whole image)."""
        task = task or self.settings.task
        info = self.task_info(task)
        document = document or Krita.instance().activeDocument()
        if info is not None and (info.mask == "ignored"
                                 or resizes_now(info, self.settings.options_for(task))):
            return "image"
        has_selection = document is not None and document.selection() is not None
        if has_selection or (info is not None and info.mask == "required"):
            return "selection"
        return "layer"

    def whole_image(self, document: Any = None, node: Any = None,
                    task: str | None = None) -> ActionRun:
        """The docker's task (or `task`) on the whole layer or image."""
        return self._start("Whole image",
                           lambda e, c: prepare_whole_image(e, self.settings, task, c),
                           document, node)

    def restore_selection(self, document: Any = None, node: Any = None,
                          task: str | None = None) -> ActionRun:
        """The docker's task (or `task`) on the selection, in place."""
        return self._start("Restore selection",
                           lambda e, c: prepare_restore(e, self.settings, task, c),
                           document, node)

    def run_task(self, task: str, document: Any = None, node: Any = None) -> ActionRun:
        """A task's own action: on the selection when there is one and the task works on
        selections; a task that enlarges the image with its options now (an upscale, HYPIR
        at scale 2) takes the whole image."""
        info = self.task_info(task)
        settings = self.settings
        return self._start(info.title if info is not None and info.title else task,
                           lambda e, c: prepare_task(e, settings, task, c), document, node)

    def run_again(self, previous: ActionRun, document: Any = None,
                  node: Any = None) -> ActionRun:
        """The settings that made an earlier result, on the active layer now."""
        settings = previous.settings or self.settings
        task, on_selection = previous.task or settings.task, previous.on_selection
        return self._start(previous.title,
                           lambda e, c: prepare_task(e, settings, task, c, on_selection),
                           document, node)

    def use_settings_of(self, previous: ActionRun) -> None:
        """Take back the task, model, options and reference layers that made an earlier
        result into the docker (and the settings)."""
        if previous.settings is None or not previous.task:
            return
        made = previous.settings
        self.update_settings(dataclasses.replace(
            self.settings, task=previous.task,
            models={**self.settings.models, previous.task: made.models.get(previous.task, "")},
            options={**self.settings.options,
                     previous.task: dict(made.options.get(previous.task, {}))},
            references={**self.settings.references,
                        previous.task: dict(made.references.get(previous.task, {}))},
            feather=made.feather, padding=made.padding, source=made.source))

    def cancel(self) -> None:
        """Cancel the first action under way (the one the progress bar shows)."""
        run = self.current
        if run is None:
            return
        waiting = next((w for w in self._waiting if w[0] is run), None)
        if waiting is not None:  # not sent yet: nothing to tell the backend
            self._waiting.remove(waiting)
            run.on_cancelled()
        else:
            run.cancel()

    def cancel_all(self) -> None:
        for run in list(self.runs):
            waiting = next((w for w in self._waiting if w[0] is run), None)
            if waiting is not None:
                self._waiting.remove(waiting)
                run.on_cancelled()
            else:
                run.cancel()

    def _start(self, title: str, prepare: Prepare, document: Any, node: Any) -> ActionRun:
        run = ActionRun(self, title)
        self.notes = []  # read by now: the docker shows this action instead
        if len(self.runs) >= QUEUE_LIMIT:
            run.fail(PluginError(f"Restora already has {len(self.runs)} jobs under way.",
                                 "Wait for one to finish, or cancel one."))
            return run
        document = document or Krita.instance().activeDocument()
        if document is None:
            run.fail(PluginError("No image is open.", "Open or create an image first."))
            return run
        try:
            run.editor = KritaEditor(document, node)
        except PluginError as exc:
            run.fail(exc)
            return run
        self.runs.append(run)
        catalog = self.connection.catalog
        if catalog is None:
            # what the task does with the selection is in the backend's task list: ask first
            run.stage = "connecting"
            self._waiting.append((run, prepare))
            self.connection.refresh()
            self.notify()
            return run
        self._begin(run, prepare, catalog)
        return run

    def _begin(self, run: ActionRun, prepare: Prepare, catalog: Catalog) -> None:
        if run.done or run.editor is None:
            return
        try:
            run.prepared = prepare(run.editor, catalog)
        except PluginError as exc:
            run.fail(exc)
            return
        except Exception as exc:  # a bug must not take Krita down with it
            traceback.print_exc()
            run.fail(PluginError(f"Restora could not read the image: {exc!r}.",
                                 "This is a bug in the plug-in; please report it."))
            return
        job = run.prepared.input
        run.title = run.prepared.title or run.title
        run.settings, run.task, run.model = self.settings, job.task, job.model
        run.params, run.on_selection = dict(job.params), run.prepared.in_place
        run.stage = "starting"
        before = next((r.runner for r in reversed(self.runs[:self.runs.index(run)])
                       if r.runner is not None), None) if run in self.runs else None
        run.runner = JobRunner(self.connection.client, job, run,
                               dispatch=self.dispatcher.post, after=before).start()
        self.notify()

    def action_ended(self, run: ActionRun) -> None:
        if run in self.runs:
            self.runs.remove(run)
        self.last = run
        if run.prepared is not None:  # it reached the backend: worth keeping
            self.history.insert(0, run)
            del self.history[HISTORY_LENGTH:]
        self.notify()
        _show_floating(f"Restora: {run.stage}")

    def _poll(self) -> None:
        if self.runs:
            return  # a job reports its own connection trouble
        self.connection.check()


def _show_floating(message: str) -> None:
    """A short message on the canvas (Krita's own, non-blocking), when there is a window."""
    window = Krita.instance().activeWindow()
    view = window.activeView() if window is not None else None
    if view is not None and hasattr(view, "showFloatingMessage"):
        from .qt import QtGui

        view.showFloatingMessage(floating_text(message), QtGui.QIcon(), 4000, 1)


#: Krita cuts a floating message at about this many characters, mid-word
FLOATING_LIMIT = 72


def floating_text(message: str, limit: int = FLOATING_LIMIT) -> str:
    """The first sentence, cut at a word with an ellipsis when still too long: the docker
    has the whole text."""
    first = message.split(". ")[0].rstrip(".") + "."
    if len(first) <= limit:
        return first
    return first[:limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
