"""The link to the backend as the UI shows it: its state, its catalog, and the last error.

`refresh()` asks the backend on a worker thread and reports through `dispatch` (the UI
thread); a refresh already under way is not started twice. The adapter calls it on start, when
the settings change, and every few seconds while disconnected, so a backend started (or
restarted) later is found without the user doing anything.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable

from .catalog import Catalog, fetch_catalog
from .client import Client
from .errors import BackendUnavailable, PluginError
from .job_runner import Dispatch, call_now


class ConnectionState(str, enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"  # something answered, but it is not usable (token, protocol)


class Connection:
    def __init__(self, url: str, token: str = "", dispatch: Dispatch = call_now,
                 on_change: Callable[[Connection], None] | None = None) -> None:
        self.dispatch = dispatch
        self.on_change = on_change
        self.state = ConnectionState.DISCONNECTED
        self.catalog: Catalog | None = None
        self.error: PluginError | None = None
        self.client = Client(url, token)
        self._busy = threading.Lock()
        self._generation = 0

    def configure(self, url: str, token: str) -> None:
        """Point at another backend (or token); keeps the client id. Call refresh() after."""
        if url == self.client.url and token.strip() == self.client.token:
            return
        self.client = Client(url, token, client_id=self.client.client_id)
        self._generation += 1
        self.catalog = None
        self._set(ConnectionState.DISCONNECTED, None)

    @property
    def connected(self) -> bool:
        return self.state == ConnectionState.CONNECTED

    @property
    def refreshing(self) -> bool:
        """A refresh is under way (the state may still show the previous answer)."""
        return self._busy.locked()

    def refresh(self) -> bool:
        """Ask the backend again, off this thread; False when a refresh is already running."""
        if not self._busy.acquire(blocking=False):
            return False
        client, generation = self.client, self._generation
        if self.state != ConnectionState.CONNECTED:
            self._set(ConnectionState.CONNECTING, self.error)

        def work() -> None:
            try:
                catalog = fetch_catalog(client)
            except PluginError as exc:
                error = exc
                self.dispatch(lambda: self._done(generation, None, error))
            else:
                self.dispatch(lambda: self._done(generation, catalog, None))
            finally:
                self._busy.release()

        threading.Thread(target=work, name="restora-connect", daemon=True).start()
        return True

    def check(self) -> bool:
        """A light look while connected: only the health route, so it can run every second
        or two and the status line follows a backend that stops or restarts within that.
        Gone: disconnected at once; another instance (a restart): a full refresh, since its
        models may differ. False when a check or refresh is already running."""
        if self.state != ConnectionState.CONNECTED:
            return self.refresh()
        if not self._busy.acquire(blocking=False):
            return False
        client, generation, known = self.client, self._generation, self.client.instance

        def work() -> None:
            try:
                try:
                    health = client.health()
                except BackendUnavailable as exc:
                    gone = exc
                    self.dispatch(lambda: self._lost(generation, gone))
                    return
                except PluginError:
                    return  # an odd answer: the next full refresh says what it is
                if health.instance is not None and known is not None \
                        and health.instance != known:
                    self.dispatch(lambda: self._restarted(generation))
            finally:
                self._busy.release()

        threading.Thread(target=work, name="restora-check", daemon=True).start()
        return True

    def _lost(self, generation: int, error: PluginError) -> None:
        if generation == self._generation and self.state == ConnectionState.CONNECTED:
            self._set(ConnectionState.DISCONNECTED, error)

    def _restarted(self, generation: int) -> None:
        if generation == self._generation:
            self.refresh()

    def mark_unavailable(self, error: PluginError) -> None:
        """A job found the backend gone: show it at once rather than at the next refresh."""
        self._set(ConnectionState.DISCONNECTED, error)

    def _done(self, generation: int, catalog: Catalog | None, error: PluginError | None) -> None:
        if generation != self._generation:
            return  # the settings changed meanwhile: this answer is about another backend
        if catalog is not None:
            self.catalog = catalog
            self._set(ConnectionState.CONNECTED, None)
            return
        state = (ConnectionState.DISCONNECTED if isinstance(error, BackendUnavailable)
                 else ConnectionState.FAILED)
        self._set(state, error)

    def _set(self, state: ConnectionState, error: PluginError | None) -> None:
        self.state, self.error = state, error
        if self.on_change is not None:
            self.on_change(self)

    def describe(self) -> str:
        """The connection in one line for the docker."""
        if self.state == ConnectionState.CONNECTED and self.catalog is not None:
            return self.catalog.describe()
        if self.state == ConnectionState.CONNECTING:
            return f"Connecting to {self.client.url}..."
        if self.error is not None:
            return self.error.text
        return f"Not connected to {self.client.url}."
