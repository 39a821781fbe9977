"""Cancel the backend's job when GIMP kills the plug-in in the middle of it.

GIMP 3.0 has no cancel callback for a plug-in: Cancel on GIMP's progress bar closes the
plug-in's pipes and kills its process (app/plug-in/gimpplugin-progress.c). A killed process
cannot tell the backend anything, so each job gets a small watchdog process in its own
session: it waits for end-of-file on a pipe from the plug-in. The plug-in writes "done" before
it closes the pipe when the job ends normally; end-of-file without it means the plug-in died,
and the watchdog asks the backend to cancel the job, so the GPU stops working for nobody.

Standard library only; the watchdog imports nothing of the plug-in until it has to cancel.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

DONE = b"done\n"
#: the token reaches the watchdog through its environment, not its command line (`ps` shows that)
TOKEN_ENV = "RESTORA_GUARD_TOKEN"
_BOOTSTRAP = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from {package}.cancel_guard import main; sys.exit(main(sys.argv[2:]))")


class CancelGuard:
    """The plug-in's end of the watchdog; `release()` when the job has ended."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @classmethod
    def start(cls, url: str, token: str, job_id: str) -> CancelGuard | None:
        """Start the watchdog for `job_id`; None when no process can be started (the job then
        runs unguarded: only a kill would leave it running on the backend)."""
        if not os.path.basename(sys.executable or "").lower().startswith("python"):
            return None  # an embedding application, not an interpreter we can start
        package = __package__ or "plugin.gimp"
        top = sys.modules[package.split(".")[0]].__file__ or ""
        search_root = os.path.dirname(os.path.dirname(os.path.abspath(top)))
        env = dict(os.environ)
        env[TOKEN_ENV] = token
        kwargs: dict[str, object] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True  # not in the plug-in's process group
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP.format(package=package), search_root, url,
                 job_id],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=env, close_fds=True, **kwargs)  # type: ignore[call-overload]
        except OSError:
            return None
        return cls(process)

    def release(self) -> None:
        """The job has ended here: let the watchdog go without cancelling anything."""
        stdin = self._process.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):  # a watchdog that died already is fine too
                stdin.write(DONE)
                stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(5)

    @property
    def pid(self) -> int:
        return self._process.pid


def main(argv: list[str]) -> int:
    """The watchdog: `URL JOB_ID`, the token in $RESTORA_GUARD_TOKEN."""
    url, job_id = argv[0], argv[1]
    try:
        said = sys.stdin.buffer.read()  # returns at end-of-file: when the plug-in ends or dies
    except OSError:
        said = b""
    if said == DONE:
        return 0
    from ..common.client import Client
    from ..common.errors import PluginError

    with contextlib.suppress(PluginError):  # a backend that is gone has nothing to cancel
        Client(url, os.environ.get(TOKEN_ENV, "")).cancel(job_id)
    return 0
