"""A virtual X display (Xvfb) for the tests that run a whole editor (Krita's GUI test; the GIMP
tests still start theirs in tests/gimp/harness.py, and could share this one: a chroot shares
the host's network namespace, so GIMP in its root reaches the server's abstract socket).

Xvfb picks its own free display number (-displayfd), so runs beside other X users never race
for one, and the display is opened from here before it is handed out: a display number that
was reported but cannot be connected to is a server that failed, and another one is started
instead of letting the editor fail with "could not connect to display". Xvfb's own messages
are kept so a failure can say what the server said.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ATTEMPTS = 3


class Display:
    """A running Xvfb: its name for DISPLAY, and what it has written so far."""

    def __init__(self, name: str, server: subprocess.Popen[bytes], log: str) -> None:
        self.name = name
        self.server = server
        self._log = log
        self.opened = False  # an X client has connected to it

    def alive(self) -> bool:
        return self.server.poll() is None

    def messages(self) -> str:
        with open(self._log, encoding="utf-8", errors="replace") as f:
            return f.read()[-3000:]

    def describe(self) -> str:
        state = "running" if self.alive() else f"ended with {self.server.returncode}"
        return f"Xvfb {self.name} ({state}) said:\n{self.messages() or '(nothing)'}"


def xvfb_path() -> str:
    xvfb = shutil.which("Xvfb")
    if xvfb is None or ctypes.util.find_library("X11") is None:
        pytest.fail("Xvfb or libX11 is missing (apt-get install xvfb libxtst6; tests/run.sh "
                    "installs them): the editors' windows need a display", pytrace=False)
    return xvfb


#: opens and closes the display named by argv[1]; exit status 0 if it could
OPEN_PROBE = """
import ctypes, ctypes.util, sys
x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
x11.XOpenDisplay.restype = ctypes.c_void_p
x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
handle = x11.XOpenDisplay(sys.argv[1].encode())
if handle:
    x11.XCloseDisplay(handle)
sys.exit(0 if handle else 1)
"""


def can_open(name: str) -> bool:
    """Whether an X client can connect to display `name` now. The client is a child process:
    Xlib's default handler for a connection that breaks calls exit(1), which in the test
    process would end the whole run without a word."""
    try:
        done = subprocess.run([sys.executable, "-c", OPEN_PROBE, name], capture_output=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _start(xvfb: str, size: tuple[int, int], log_path: str) -> Display:
    read_end, write_end = os.pipe()
    with open(log_path, "wb") as log:
        server = subprocess.Popen([xvfb, "-displayfd", str(write_end), "-screen", "0",
                                   f"{size[0]}x{size[1]}x24", "-nolisten", "tcp"],
                                  pass_fds=(write_end,), stdout=log, stderr=log)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 30)
        number = os.read(read_end, 32).decode().strip() if ready else ""
    finally:
        os.close(read_end)
    display = Display(f":{number}", server, log_path)
    if number.isdigit():
        deadline = time.monotonic() + 10
        while display.alive() and time.monotonic() < deadline:
            if can_open(display.name):
                display.opened = True
                return display
            time.sleep(0.1)
    stop(display)
    return display


def stop(display: Display) -> None:
    if display.alive():
        display.server.terminate()
        try:
            display.server.wait(10)
        except subprocess.TimeoutExpired:
            display.server.kill()
            display.server.wait(10)


@contextmanager
def virtual_display(size: tuple[int, int]) -> Iterator[Display]:
    """An Xvfb screen of `size` that a client has connected to; stopped afterwards."""
    xvfb = xvfb_path()
    logs = tempfile.mkdtemp(prefix="restora-xvfb-")
    failures: list[str] = []
    for attempt in range(ATTEMPTS):
        log_path = os.path.join(logs, f"xvfb-{attempt}.log")
        display = _start(xvfb, size, log_path)
        if display.opened:
            break
        failures.append(display.messages())
    else:
        shutil.rmtree(logs, ignore_errors=True)
        pytest.fail(f"Xvfb did not give a display that could be opened ({ATTEMPTS} tries); it "
                    "said:\n" + "\n---\n".join(failures), pytrace=False)
    try:
        yield display
    finally:
        stop(display)
        shutil.rmtree(logs, ignore_errors=True)
