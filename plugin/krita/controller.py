"""The UI-thread side of the plug-in: settings, the backend connection, and the running action.

Workers never touch Krita: they hand callbacks to `UiDispatcher.post`, a queued Qt signal, so
results are applied on Krita's UI thread. One action runs at a time (the backend runs one job
at a time anyway); the docker follows `Controller.changed`.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from krita import Krita

from ..common.catalog import Catalog, forget_unknown_options, ordered
from ..common.connection import Connection, ConnectionState
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
from ..common.settings import Settings
from ..shared.protocol import TaskInfo
from .document import KritaEditor
from .qt import QEventLoop, QObject, Qt, QTimer, pyqtSignal

#: seconds between health checks while disconnected; connected, every POLL_CONNECTED_EVERY-th
POLL_SECONDS = 5
POLL_CONNECTED_EVERY = 6


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
        self.layer_name: str | None = None
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
        self.controller.notify()

    def on_finished(self, result: JobResult) -> None:
        editor, prepared = self.editor, self.prepared
        if editor is None or prepared is None:  # a runner starts only once both are set
            return
        try:
            self.layer_name = apply_result(editor, prepared, result)
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
        self._end("finished", " ".join([f"Added '{self.layer_name}'.", *result.notes]))

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
        self.controller.action_ended(self)
        for callback in self._on_done:
            callback()


Prepare = Callable[[KritaEditor, Catalog], PreparedJob]


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
        #: an action waiting for the backend's catalog: (run, prepare)
        self._waiting: tuple[ActionRun, Prepare] | None = None
        self.dispatcher = UiDispatcher()
        self.connection = Connection(settings.backend_url, settings.token,
                                     dispatch=self.dispatcher.post,
                                     on_change=self._connection_changed)
        self.launcher = BackendLauncher(self.dispatcher.post)
        self.current: ActionRun | None = None
        self.last: ActionRun | None = None
        #: what the user should know about their settings, e.g. saved options dropped
        self.notes: list[str] = []
        self._checked: Catalog | None = None
        self._ticks = 0
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_SECONDS * 1000)
        self._timer.timeout.connect(self._poll)

    def start(self) -> None:
        """Connect now and keep checking, so a backend started later is found."""
        self._timer.start()
        self.connection.refresh()

    def notify(self) -> None:
        self.changed.emit()

    def known_tasks(self) -> list[TaskInfo]:
        """The tasks to offer, in menu order: the backend's, else the last ones seen."""
        catalog = self.connection.catalog
        if catalog is not None:
            return catalog.available_tasks()
        return [t for t in ordered(self.cached_tasks) if t.available]

    def _connection_changed(self, connection: Connection) -> None:
        catalog = connection.catalog
        if self._waiting is not None and connection.state != ConnectionState.CONNECTING:
            run, prepare = self._waiting
            self._waiting = None
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

    # - the actions -

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
        """A task's own action: its spec says whether it takes the selection."""
        catalog = self.connection.catalog
        info = next((t for t in (catalog.tasks if catalog else self.cached_tasks)
                     if t.task == task), None)
        return self._start(info.title if info is not None and info.title else task,
                           lambda e, c: prepare_task(e, self.settings, task, c),
                           document, node)

    def cancel(self) -> None:
        if self._waiting is not None:  # not sent yet: nothing to tell the backend
            run, _prepare = self._waiting
            self._waiting = None
            run.on_cancelled()
        elif self.current is not None:
            self.current.cancel()

    def _start(self, title: str, prepare: Prepare, document: Any, node: Any) -> ActionRun:
        run = ActionRun(self, title)
        self.notes = []  # read by now: the docker shows this action instead
        if self.current is not None and not self.current.done:
            run.fail(PluginError(f"Restora is still working on '{self.current.title}'.",
                                 "Wait for it to finish, or cancel it."))
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
        self.current = run
        catalog = self.connection.catalog
        if catalog is None:
            # what the task does with the selection is in the backend's task list: ask first
            run.stage = "connecting"
            self._waiting = (run, prepare)
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
        run.title = run.prepared.title or run.title
        run.runner = JobRunner(self.connection.client, run.prepared.input, run,
                               dispatch=self.dispatcher.post).start()
        self.notify()

    def action_ended(self, run: ActionRun) -> None:
        if self.current is run:
            self.current = None
        self.last = run
        self.notify()
        _show_floating(f"Restora: {run.stage}")

    def _poll(self) -> None:
        self._ticks += 1
        if self.current is not None:
            return  # a job reports its own connection trouble
        if not self.connection.connected or self._ticks % POLL_CONNECTED_EVERY == 0:
            self.connection.refresh()


def _show_floating(message: str) -> None:
    """A short message on the canvas (Krita's own, non-blocking), when there is a window."""
    window = Krita.instance().activeWindow()
    view = window.activeView() if window is not None else None
    if view is not None and hasattr(view, "showFloatingMessage"):
        from .qt import QtGui

        view.showFloatingMessage(message, QtGui.QIcon(), 4000, 1)
