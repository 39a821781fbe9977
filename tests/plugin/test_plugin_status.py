"""The status line both editors show: one answer from everything that knows about the
backend, in words for artists (no command lines, no file names)."""

from __future__ import annotations

from plugin.common.connection import Connection, ConnectionState
from plugin.common.errors import BackendUnavailable, Unauthorized
from plugin.common.status import StatusKind, backend_status

LOCAL = "http://127.0.0.1:1"


def _said(status) -> str:
    return f"{status.text} {status.detail}"


def test_a_start_under_way_or_a_lost_stream_wins_over_an_old_connected() -> None:
    conn = Connection(LOCAL)
    conn.state = ConnectionState.CONNECTED  # an answer from before the backend stopped
    assert backend_status(conn, starting=True).kind == StatusKind.BUSY
    lost = backend_status(conn, reconnecting=True)
    assert lost.kind == StatusKind.BUSY and "reconnecting" in lost.text
    assert "Ready" not in _said(lost)


def test_not_running_offers_the_start_button_only_when_it_can_help() -> None:
    conn = Connection(LOCAL)
    conn.state, conn.error = ConnectionState.DISCONNECTED, BackendUnavailable.at(LOCAL)
    off = backend_status(conn, can_start=True)
    assert off.kind == StatusKind.OFF and off.can_start
    assert off.text == "The backend is not running"
    remote = Connection("http://192.0.2.7:8765")
    far = backend_status(remote, can_start=False)
    assert not far.can_start and "another computer" in far.detail


def test_a_failed_start_and_an_unusable_backend_are_errors_in_words() -> None:
    conn = Connection(LOCAL)
    failed = backend_status(conn, start_error="Restora's backend is not installed.",
                            can_start=True)
    assert failed.kind == StatusKind.ERROR and "not installed" in failed.detail
    conn.state, conn.error = ConnectionState.FAILED, Unauthorized("The token was refused.", "")
    refused = backend_status(conn)
    assert refused.kind == StatusKind.ERROR and "token" in refused.detail
    for status in (failed, refused):
        assert "restora serve" not in _said(status) and "backend.json" not in _said(status)
