"""Start a local Restora backend from an editor: find it, start it detached, wait for health.

The installer (installer/install.py) records how to start the backend in `backend.json` in
Restora's config folder (`~/.config/restora` on Linux, `%APPDATA%\\restora` on Windows,
`~/Library/Application Support/restora` on macOS; `$RESTORA_HOME/config` when set):

    {"command": ["/home/me/restora/.venv/bin/restora", "serve"], "env": {},
     "log": "/home/me/.local/share/restora/logs/backend.log"}

`start_backend(url)` starts that command for the plug-in's address (a loopback address only:
a remote backend is not ours to start) in its own session (POSIX) or without a console window
(Windows), so it outlives the editor, and waits until /v1/health says it is ready. It blocks:
call it from a worker thread (`BackendLauncher` does, for a UI). Standard library only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..shared.protocol import Health
from .client import Client
from .errors import BackendUnavailable, PluginError

BACKEND_FILE = "backend.json"
#: seconds a first start may take (Python, PyTorch and the device check; slow disks, Windows)
START_TIMEOUT = 120.0
_POLL = 0.25
#: Windows process creation flags (named in subprocess on Windows only)
_CREATE_NEW_PROCESS_GROUP = 0x00000200
_CREATE_NO_WINDOW = 0x08000000
_CREATE_BREAKAWAY_FROM_JOB = 0x01000000
#: variables an editor sets for its own embedded Python or libraries; the backend's Python
#: must not inherit them (Krita's PYTHONHOME would make the backend load Krita's stdlib)
_EDITOR_VARIABLES = (
    "PYTHONHOME",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONEXECUTABLE",
    "PYTHONNOUSERSITE",
    "__PYVENV_LAUNCHER__",
    "VIRTUAL_ENV",
)
SANDBOX_HINT = (
    "This editor runs in a sandbox (Flatpak or Snap) that cannot start programs outside it: "
    "let Restora's installer set the backend up as a service, so it starts with the computer."
)
NOT_INSTALLED_HINT = "Install it with Restora's installer (see Restora's README), then click " \
    "Start backend."


class BackendNotInstalled(PluginError):
    """No backend.json, or the program it names is gone."""

    code = "backend_not_installed"


class BackendStartFailed(PluginError):
    """The backend was started but stopped, or did not answer in time."""

    code = "backend_start_failed"


@dataclass(frozen=True)
class BackendCommand:
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    log: str | None = None
    source: str = ""  # the backend.json it came from


@dataclass
class StartResult:
    health: Health
    started: bool  # False: one was already running
    process: subprocess.Popen[bytes] | None = None
    log: str | None = None


#: processes this editor started; polled now and then so none stays a zombie
_spawned: list[subprocess.Popen[bytes]] = []


# --- where the installer's file is ------------------------------------------------------------


def config_dirs(
    env: Mapping[str, str] | None = None, platform: str | None = None, home: Path | None = None
) -> list[Path]:
    """Restora's config folders to look in, as backend/paths.py names them, first wins.

    Inside a Flatpak or Snap the editor sees another XDG_CONFIG_HOME; the real home's folder
    comes next so a backend installed outside the sandbox is still found.
    """
    env = os.environ if env is None else env
    platform = platform or sys.platform
    home = home or Path.home()
    if env.get("RESTORA_HOME"):
        return [Path(env["RESTORA_HOME"]) / "config"]
    if platform.startswith("win"):
        base = env.get("APPDATA")
        return [Path(base) / "restora" if base else home / "AppData" / "restora"]
    if platform == "darwin":
        return [home / "Library" / "Application Support" / "restora"]
    dirs = [Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "restora"]
    real = home / ".config" / "restora"
    if real not in dirs:
        dirs.append(real)
    return dirs


def find_backend(
    env: Mapping[str, str] | None = None, platform: str | None = None, home: Path | None = None
) -> BackendCommand | None:
    """The backend the installer recorded, or None when there is no usable record."""
    for folder in config_dirs(env, platform, home):
        path = folder / BACKEND_FILE
        if path.is_file():
            try:
                return load_backend_file(path)
            except BackendNotInstalled:
                continue
    return None


def load_backend_file(path: Path) -> BackendCommand:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendNotInstalled(
            f"Restora's backend record {path} cannot be read ({exc}).", NOT_INSTALLED_HINT
        ) from None
    command = data.get("command") if isinstance(data, dict) else None
    if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
        raise BackendNotInstalled(
            f"Restora's backend record {path} names no command.", NOT_INSTALLED_HINT
        )
    env = data.get("env") or {}
    env = {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}
    log = data.get("log") if isinstance(data.get("log"), str) else None
    return BackendCommand(tuple(command), env, log, str(path))


# --- pure helpers -----------------------------------------------------------------------------


def is_local(url: str) -> bool:
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def serve_argv(command: BackendCommand, url: str) -> list[str]:
    """The command with the address the plug-in expects (its port may not be the default)."""
    parts = urlsplit(url)
    argv = list(command.argv)
    if parts.hostname and "--host" not in argv:
        argv += ["--host", parts.hostname]
    if parts.port and "--port" not in argv:
        argv += ["--port", str(parts.port)]
    return argv


def child_environment(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The backend's environment: the editor's, less what belongs to the editor's own Python,
    Qt or bundled libraries, plus the installer's variables."""
    appimage = "APPIMAGE" in base or "APPDIR" in base
    env = {
        k: v
        for k, v in base.items()
        if k not in _EDITOR_VARIABLES
        and not k.startswith("QT_")
        and not (appimage and k in ("LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONDONTWRITEBYTECODE"))
    }
    env.update(extra)
    return env


def in_sandbox(env: Mapping[str, str] | None = None) -> str | None:
    """The sandbox the editor runs in, "flatpak" or "snap", or None."""
    env = os.environ if env is None else env
    if env.get("FLATPAK_ID") or Path("/.flatpak-info").exists():
        return "flatpak"
    if env.get("SNAP"):
        return "snap"
    return None


def sandboxed_argv(argv: list[str], env: Mapping[str, str], sandbox: str | None) -> list[str]:
    """Inside Flatpak, ask for the host to run it (works where the app may talk to
    org.freedesktop.Flatpak); elsewhere the command as it is."""
    if sandbox != "flatpak":
        return argv
    return ["flatpak-spawn", "--host", *(f"--env={k}={v}" for k, v in env.items()), *argv]


# --- starting ---------------------------------------------------------------------------------


def spawn_detached(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `argv` so that it outlives the editor and shows no window; output goes to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        common: dict = {
            "stdin": subprocess.DEVNULL,
            "stdout": out,
            "stderr": subprocess.STDOUT,
            "env": env,
            "cwd": str(Path.home()),
            "close_fds": True,
        }
        if os.name == "nt":
            flags = _CREATE_NEW_PROCESS_GROUP | _CREATE_NO_WINDOW
            try:  # leave the editor's job object, which may end its children with it
                process = subprocess.Popen(
                    argv, creationflags=flags | _CREATE_BREAKAWAY_FROM_JOB, **common
                )
            except OSError:
                process = subprocess.Popen(argv, creationflags=flags, **common)
        else:
            process = subprocess.Popen(argv, start_new_session=True, **common)
    reap()
    _spawned.append(process)
    return process


def reap() -> None:
    """Forget started backends that have ended (collecting their exit status, so none stays
    a zombie while the editor runs)."""
    _spawned[:] = [p for p in _spawned if p.poll() is None]


def wait_for_health(
    client: Client,
    process: subprocess.Popen[bytes] | None,
    timeout: float,
    log: Path | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Health:
    """Poll /v1/health until the backend is ready; fails early when the process ends."""
    deadline = time.monotonic() + timeout
    health: Health | None = None
    while time.monotonic() < deadline and not cancelled():
        try:
            health = client.health()
            if health.ready:
                return health
        except BackendUnavailable:
            pass
        if process is not None and process.poll() is not None:
            raise BackendStartFailed(
                f"Restora's backend stopped at start (exit code {process.returncode})."
                + _log_tail(log),
                _failure_hint(),
            )
        time.sleep(_POLL)
    if health is not None:
        return health  # it answers; still loading, but the plug-in can connect
    raise BackendStartFailed(
        f"Restora's backend did not answer at {client.url} within {timeout:.0f} s."
        + _log_tail(log),
        _failure_hint(),
    )


def start_backend(
    url: str,
    token: str = "",
    timeout: float = START_TIMEOUT,
    command: BackendCommand | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> StartResult:
    """Make sure a backend answers at `url`: the running one, or one started now. Blocking."""
    client = Client(url, token, timeout=2.0)
    try:
        return StartResult(client.health(), started=False)
    except BackendUnavailable:
        pass
    if not is_local(client.url):
        raise BackendUnavailable(
            f"Restora's backend at {client.url} is not running.",
            "It is on another computer: start it there.",
        )
    command = command or find_backend()
    if command is None:
        raise BackendNotInstalled(
            "Restora's backend is not installed on this computer.",
            NOT_INSTALLED_HINT,
        )
    program = command.argv[0]
    sandbox = in_sandbox()
    if sandbox is None and os.path.isabs(program) and not os.path.exists(program):
        raise BackendNotInstalled(
            f"Restora's backend is gone: {program} does not exist.",
            "Run Restora's installer again.",
        )
    log = Path(command.log) if command.log else Path(tempfile.gettempdir()) / "restora-backend.log"
    env = child_environment(os.environ, command.env)
    argv = sandboxed_argv(serve_argv(command, client.url), command.env, sandbox)
    try:
        process = spawn_detached(argv, env, log)
    except OSError as exc:
        raise BackendStartFailed(
            f"Restora's backend could not be started: {exc}.",
            SANDBOX_HINT if sandbox else "Run Restora's installer again.",
        ) from None
    health = wait_for_health(client, process, timeout, log, cancelled)
    return StartResult(health, started=True, process=process, log=str(log))


def _log_tail(log: Path | None, lines: int = 3) -> str:
    if log is None:
        return ""
    try:
        text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    tail = [t for t in text[-lines:] if t.strip()]
    return f" Its log ({log}) ends: " + " | ".join(tail) if tail else ""


def _failure_hint() -> str:
    if in_sandbox():
        return SANDBOX_HINT
    return "The backend's log says what went wrong; Restora's installer can set it up again."


# --- for a UI ---------------------------------------------------------------------------------


class BackendLauncher:
    """`start_backend` on a worker thread; `on_done(error or None)` runs through `dispatch`."""

    def __init__(self, dispatch: Callable[[Callable[[], None]], None]) -> None:
        self.dispatch = dispatch
        self.error: PluginError | None = None
        self.result: StartResult | None = None
        self._busy = threading.Lock()
        self._checked_at = -1e9
        self._command: BackendCommand | None = None

    @property
    def busy(self) -> bool:
        return self._busy.locked()

    def command(self, max_age: float = 5.0) -> BackendCommand | None:
        """The installer's record, looked up at most every `max_age` seconds."""
        now = time.monotonic()
        if now - self._checked_at > max_age:
            self._command, self._checked_at = find_backend(), now
            reap()
        return self._command

    def start(self, url: str, token: str, on_done: Callable[[PluginError | None], None]) -> bool:
        """Start in the background; False when a start is already under way."""
        if not self._busy.acquire(blocking=False):
            return False
        self.error = None

        def work() -> None:
            error: PluginError | None = None
            try:
                self.result = start_backend(url, token, command=self.command(max_age=0))
            except PluginError as exc:
                error = exc
            except Exception as exc:  # a bug must still end the start, in words
                error = BackendStartFailed(
                    f"Restora's backend could not be started: {exc!r}.",
                    "This is a bug in the plug-in; please report it.",
                )
            finally:
                self._busy.release()

            def done() -> None:
                self.error = error
                on_done(error)

            self.dispatch(done)

        threading.Thread(target=work, name="restora-start-backend", daemon=True).start()
        return True
