"""The backend as a service that starts at login: systemd (Linux), launchd (macOS), Task
Scheduler (Windows).

The text of each service file is made by a pure function (tested as text); `install_service`
writes it and asks the system to load it through a command runner that tests replace.
Standard library only.

Windows: the task is registered from an XML definition with a logon trigger for the current
user, which a user without administrator rights may create (`schtasks /Create /SC ONLOGON`
makes an any-user trigger that needs them). It runs the backend through a small VBScript so no
console window opens at login.
"""

from __future__ import annotations

import getpass
import os
import plistlib
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

SYSTEMD_UNIT = "restora.service"
LAUNCHD_LABEL = "org.restora.backend"
WINDOWS_TASK = "Restora Backend"
DESCRIPTION = "Restora backend (image upscaling and restoration for Krita and GIMP)"

#: runs a command, returns (exit code, output); tests pass a recorder
Runner = Callable[[Sequence[str]], tuple[int, str]]
#: the exit code of a command that is not there (as a shell says it)
NOT_FOUND = 127


def run_command(cmd: Sequence[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=60, errors="replace"
        )
    except FileNotFoundError as exc:
        return NOT_FOUND, str(exc)
    except (OSError, subprocess.SubprocessError) as exc:
        return 1, str(exc)
    return done.returncode, (done.stdout + done.stderr).strip()


@dataclass
class ServiceRecord:
    """What was installed, for the manifest (and for uninstalling)."""

    kind: str  # "systemd", "launchd" or "schtasks"
    name: str  # unit, label or task name
    files: list[str] = field(default_factory=list)
    running: bool = False
    message: str = ""

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "files": self.files}


# --- the texts (pure) -------------------------------------------------------------------------


def systemd_quote(arg: str) -> str:
    """One ExecStart word: quoted when needed; % and $ doubled (systemd expands them)."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and not any(c in text for c in " \t\"'\\;"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(command: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    lines = [
        "[Unit]",
        f"Description={DESCRIPTION}",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(systemd_quote(a) for a in command),
        *(f"Environment={systemd_quote(f'{k}={v}')}" for k, v in sorted((env or {}).items())),
        "Restart=on-failure",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def launchd_plist(
    command: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
) -> bytes:
    data: dict = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(command),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # restart after a crash, not after a stop
        "StandardOutPath": str(log),
        "StandardErrorPath": str(log),
        "ProcessType": "Interactive",
    }
    if env:
        data["EnvironmentVariables"] = dict(env)
    return plistlib.dumps(data)


def windows_quote(arg: str) -> str:
    return f'"{arg}"' if any(c in arg for c in ' \t"') or not arg else arg


def windows_hidden_launcher(
    command: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> str:
    """A VBScript that runs the backend with no window, its output appended to `log`."""
    line = " ".join(windows_quote(a) for a in command) + f' >> "{log}" 2>&1'
    sets = "".join(f'env("{k}") = "{_vbs(v)}"\r\n' for k, v in sorted((env or {}).items()))
    return (
        "' Restora backend, started at login by the task \"" + WINDOWS_TASK + '"\r\n'
        'Set shell = CreateObject("WScript.Shell")\r\n'
        'Set env = shell.Environment("Process")\r\n'
        + sets
        + f'shell.Run "cmd /c ""{_vbs(line)}""", 0, True\r\n'
    )


def _vbs(text: str) -> str:
    return text.replace('"', '""')


def windows_task_xml(user: str, launcher: Path) -> str:
    """Task Scheduler's definition: at this user's logon, run the launcher, hidden."""
    u = escape(user)
    return f"""<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>{escape(DESCRIPTION)}</Description>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
      <UserId>{u}</UserId>
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <UserId>{u}</UserId>
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Hidden>true</Hidden>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>wscript.exe</Command>
      <Arguments>"{escape(str(launcher))}"</Arguments>
    </Exec>
  </Actions>
</Task>
"""


# --- where the files go -----------------------------------------------------------------------


def systemd_unit_path(env: Mapping[str, str], home: Path) -> Path:
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return config / "systemd" / "user" / SYSTEMD_UNIT


def launchd_plist_path(home: Path) -> Path:
    return home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"


# --- installing and removing ------------------------------------------------------------------


def install_service(
    command: Sequence[str],
    log: Path,
    config_dir: Path,
    env: Mapping[str, str] | None = None,
    platform: str | None = None,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    runner: Runner = run_command,
) -> ServiceRecord:
    """Write the service for this platform, enable and start it; says what it did."""
    platform = platform or sys.platform
    home = home or Path.home()
    environ = os.environ if environ is None else environ
    if platform.startswith("win"):
        return _install_windows(command, log, config_dir, env, environ, runner)
    if platform == "darwin":
        return _install_launchd(command, log, env, home, runner)
    return _install_systemd(command, env, home, environ, runner)


def _install_systemd(
    command: Sequence[str],
    env: Mapping[str, str] | None,
    home: Path,
    environ: Mapping[str, str],
    runner: Runner,
) -> ServiceRecord:
    path = systemd_unit_path(environ, home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(systemd_unit(command, env), encoding="utf-8")
    record = ServiceRecord("systemd", SYSTEMD_UNIT, [str(path)])
    code, _ = runner(["systemctl", "--user", "daemon-reload"])
    if code == NOT_FOUND:
        record.message = (
            f"Wrote {path}, but this system has no systemd, so nothing starts it "
            "at login: start the backend with `restora serve`, or add that "
            "command to your desktop's autostart programs."
        )
        return record
    if code == 0:
        code, out = runner(["systemctl", "--user", "enable", SYSTEMD_UNIT])
        if code == 0:  # restart: an upgrade's new files must be the ones running
            code, out = runner(["systemctl", "--user", "restart", SYSTEMD_UNIT])
        if code == 0:
            record.running = True
            record.message = (
                f"Installed the systemd user service {SYSTEMD_UNIT}: it runs "
                "now and at every login (`systemctl --user status restora`)."
            )
            return record
        record.message = f"Wrote {path}, but systemctl could not start it: {out}"
        return record
    record.message = (
        f"Wrote {path}, but systemd's user manager cannot be reached from here "
        "(no login session: root, sudo or a plain ssh). In your desktop session "
        f"run: systemctl --user daemon-reload && systemctl --user enable --now "
        f"{SYSTEMD_UNIT}"
    )
    return record


def _install_launchd(
    command: Sequence[str], log: Path, env: Mapping[str, str] | None, home: Path, runner: Runner
) -> ServiceRecord:
    path = launchd_plist_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    domain = f"gui/{os.getuid()}" if hasattr(os, "getuid") else "gui/501"
    runner(["launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"])  # an older one, if loaded
    path.write_bytes(launchd_plist(command, log, env))
    record = ServiceRecord("launchd", LAUNCHD_LABEL, [str(path)])
    code, out = runner(["launchctl", "bootstrap", domain, str(path)])
    record.running = code == 0
    record.message = (
        f"Installed the launchd agent {LAUNCHD_LABEL}: it runs now and at every login."
        if code == 0
        else f"Wrote {path}; launchctl could not load it ({out}). It starts at the next login."
    )
    return record


def _install_windows(
    command: Sequence[str],
    log: Path,
    config_dir: Path,
    env: Mapping[str, str] | None,
    environ: Mapping[str, str],
    runner: Runner,
) -> ServiceRecord:
    config_dir.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    launcher = config_dir / "restora-backend.vbs"
    launcher.write_text(windows_hidden_launcher(command, log, env), encoding="utf-8")
    definition = config_dir / "restora-backend-task.xml"
    user = environ.get("USERNAME") or getpass.getuser()
    domain = environ.get("USERDOMAIN")
    definition.write_text(
        windows_task_xml(f"{domain}\\{user}" if domain else user, launcher), encoding="utf-16"
    )
    record = ServiceRecord("schtasks", WINDOWS_TASK, [str(launcher), str(definition)])
    code, out = runner(["schtasks", "/Create", "/TN", WINDOWS_TASK, "/XML", str(definition), "/F"])
    if code != 0:
        record.message = f"Task Scheduler refused the task ({out}); nothing starts at login."
        return record
    runner(["schtasks", "/End", "/TN", WINDOWS_TASK])  # an upgrade: the old one stops first
    code, _ = runner(["schtasks", "/Run", "/TN", WINDOWS_TASK])
    record.running = code == 0
    record.message = (
        f'Installed the scheduled task "{WINDOWS_TASK}": it runs now and at every login.'
    )
    return record


def stop_service(record: Mapping, runner: Runner = run_command) -> None:
    """Stop a running service without removing it (before its files are replaced)."""
    kind, name = record.get("kind"), str(record.get("name"))
    if kind == "systemd":
        runner(["systemctl", "--user", "stop", name])
    elif kind == "launchd":
        domain = f"gui/{os.getuid()}" if hasattr(os, "getuid") else "gui/501"
        runner(["launchctl", "bootout", f"{domain}/{name}"])
    elif kind == "schtasks":
        runner(["schtasks", "/End", "/TN", name])


def remove_service(
    record: Mapping, platform: str | None = None, runner: Runner = run_command
) -> list[str]:
    """Stop and remove a service the manifest lists; returns what was done, in words."""
    platform = platform or sys.platform
    kind, name = record.get("kind"), str(record.get("name"))
    done: list[str] = []
    if kind == "systemd":
        runner(["systemctl", "--user", "disable", "--now", name])
    elif kind == "launchd":
        domain = f"gui/{os.getuid()}" if hasattr(os, "getuid") else "gui/501"
        runner(["launchctl", "bootout", f"{domain}/{name}"])
    elif kind == "schtasks":
        runner(["schtasks", "/End", "/TN", name])
        code, _ = runner(["schtasks", "/Delete", "/TN", name, "/F"])
        if code == 0:
            done.append(f'Removed the scheduled task "{name}".')
    for file in record.get("files", []):
        path = Path(file)
        if path.is_file():
            path.unlink()
            done.append(f"Removed {path}")
    if kind == "systemd":
        runner(["systemctl", "--user", "daemon-reload"])
    return done
