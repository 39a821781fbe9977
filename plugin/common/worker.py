"""How a background runner (a job, a download) ends: exactly one of its listener's callbacks,
dispatched to the UI thread, whatever its worker raised.

A cancel, an error in words (PluginError) and a bug (any other exception, turned into words)
each end the runner; `ended` is set only after the callback is dispatched, so `wait()` returns
when the UI has been told.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import PluginError

T = TypeVar("T")
BUG_HINT = "This is a bug in the plug-in; please report it."


def run_to_end(
    body: Callable[[], T],
    dispatch: Callable[[Callable[[], None]], None],
    ended: threading.Event,
    cancelled: type[BaseException],
    on_finished: Callable[[T], None],
    on_failed: Callable[[PluginError], None],
    on_cancelled: Callable[[], None],
    record: Callable[[str, Any], None],
) -> None:
    """Run `body` and tell its listener how it ended. `record(outcome, value)` keeps the
    outcome ("finished", "failed", "cancelled") and the result or error on the runner first."""

    def end(outcome: str, value: Any, callback: Callable[[], None]) -> None:
        record(outcome, value)
        try:
            dispatch(callback)
        finally:
            ended.set()

    try:
        result = body()
    except cancelled:
        end("cancelled", None, on_cancelled)
    except PluginError as exc:
        failure = exc  # `exc` is unbound after the block; the callback may run later
        end("failed", failure, lambda: on_failed(failure))
    except Exception as exc:  # a bug must end the runner with a message, not hang the UI
        error = PluginError(f"The Restora plug-in failed unexpectedly: {exc!r}.", BUG_HINT)
        end("failed", error, lambda: on_failed(error))
    else:
        end("finished", result, lambda: on_finished(result))
