"""The plug-in when the backend process dies: killed in the middle of a job, restarted in the
middle of a job, and found again after a restart, with `restora serve` in a real subprocess."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin.common.catalog import fetch_catalog
from plugin.common.client import Client
from plugin.common.connection import Connection, ConnectionState
from plugin.common.errors import BackendLost
from plugin.common.job_runner import JobRunner, Outcome
from plugin.common.operations import apply_result, prepare_whole_image
from plugin.common.settings import Settings
from plugin.common.status import StatusKind, backend_status
from tests.plugin_fixtures import BackendProcess, FakeEditor, Recorder, checker
from tests.server_fixtures import make_tiny_model

SLOW = {"tile": 32, "overlap": 8}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendProcess]:
    root = tmp_path_factory.mktemp("models")
    make_tiny_model(root / "upscale_models" / "tiny-x2.safetensors", 2, seed=1)
    proc = BackendProcess(root, Path(tmp_path_factory.mktemp("home")))
    yield proc.start()
    proc.kill()


def slow_job(client: Client) -> tuple[FakeEditor, object]:
    catalog = fetch_catalog(client)
    editor = FakeEditor(checker(width=320, height=320))
    settings = Settings(models={"upscale": "tiny-x2"}, options={"upscale": SLOW})
    return editor, prepare_whole_image(editor, settings, "upscale", catalog)


def test_killed_mid_job_fails_with_how_to_restart(backend: BackendProcess) -> None:
    client = Client(backend.url)
    editor, prepared = slow_job(client)
    rec = Recorder()
    runner = JobRunner(client, prepared.input, rec, reconnect_timeout=2.0).start()
    assert rec.started.wait(60), rec.failed
    backend.kill()
    t0 = time.monotonic()
    assert runner.wait(30)
    assert runner.outcome == Outcome.FAILED
    (error,) = rec.failed
    assert isinstance(error, BackendLost)
    assert "stopped while it worked" in error.message and "Start backend" in error.hint
    assert "not changed" in error.message
    assert time.monotonic() - t0 < 10
    assert editor.log == []  # nothing reached the document

    # the next action, once the backend is back, works without restarting the editor
    backend.start()
    editor2, prepared2 = slow_job(client)
    prepared2.input.params = {}
    rec2 = Recorder()
    runner2 = JobRunner(client, prepared2.input, rec2).start()
    assert runner2.wait(60) and runner2.outcome == Outcome.FINISHED, rec2.failed
    apply_result(editor2, prepared2, rec2.finished[0])
    assert editor2.canvas().width == 640


def test_restarted_mid_job_says_the_job_was_lost(backend: BackendProcess) -> None:
    client = Client(backend.url)
    _editor, prepared = slow_job(client)
    rec = Recorder()
    runner = JobRunner(client, prepared.input, rec, reconnect_timeout=90.0).start()
    assert rec.started.wait(60), rec.failed
    backend.kill()
    backend.start()  # a new instance on the same port, before the reconnect gives up
    assert runner.wait(60)
    (error,) = rec.failed
    assert isinstance(error, BackendLost) and "restarted" in error.message


def test_the_connection_finds_a_restarted_backend(backend: BackendProcess) -> None:
    conn = Connection(backend.url)

    def settle() -> ConnectionState:
        assert conn.refresh()
        deadline = time.monotonic() + 60
        while conn.refreshing and time.monotonic() < deadline:
            time.sleep(0.05)
        return conn.state

    assert settle() == ConnectionState.CONNECTED
    first = conn.catalog.health.instance if conn.catalog else None
    backend.kill()
    assert settle() == ConnectionState.DISCONNECTED
    assert "not running" in conn.describe()
    backend.start()
    assert settle() == ConnectionState.CONNECTED
    assert conn.catalog is not None and conn.catalog.health.instance != first


def test_the_light_check_follows_a_stop_and_a_restart_within_two_seconds(
        backend: BackendProcess) -> None:
    """What the docker's status line runs every second while connected: only the health
    route. A stopped backend reads "not running" within two seconds, a restarted one (another
    instance) is read again in full."""
    conn = Connection(backend.url)
    assert conn.refresh()
    deadline = time.monotonic() + 60
    while conn.refreshing and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend_status(conn).kind == StatusKind.READY
    first = conn.catalog.health.instance if conn.catalog else None

    def poll_until(wanted: ConnectionState, seconds: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            conn.check()
            time.sleep(0.25)
            if conn.state == wanted and not conn.refreshing:
                return time.monotonic() - t0
        raise AssertionError(f"still {conn.state} after {seconds} s")

    backend.kill()
    assert poll_until(ConnectionState.DISCONNECTED, 2.0) < 2.0
    status = backend_status(conn, can_start=True)
    assert status.kind == StatusKind.OFF and status.text == "The backend is not running"
    assert status.can_start
    backend.start()
    poll_until(ConnectionState.CONNECTED, 60)
    assert conn.catalog is not None and conn.catalog.health.instance != first
    assert backend_status(conn).text.startswith("Ready on ")
