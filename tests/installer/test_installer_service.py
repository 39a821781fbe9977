"""The backend as a login service: the text of the systemd unit, the launchd agent and the
Windows task, and installing and removing each in a temporary home with the system's commands
recorded instead of run."""

from __future__ import annotations

import plistlib
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "installer"))
import backend_service as svc  # noqa: E402
import krita_plugin  # noqa: E402

COMMAND = ["/home/me/My Restora/.venv/bin/restora", "serve"]


class Recorder:
    """Stands in for the system's commands: records them, answers with fixed exit codes."""

    def __init__(self, codes: dict[str, int] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.codes = codes or {}

    def __call__(self, cmd: Sequence[str]) -> tuple[int, str]:
        self.calls.append(list(cmd))
        words = " ".join(cmd)
        code = next((c for key, c in self.codes.items() if key in words), 0)
        return code, "" if code == 0 else f"{cmd[0]} failed"


def test_systemd_unit_text() -> None:
    unit = svc.systemd_unit(COMMAND, {"RESTORA_HOME": "/data/100% restora"})
    assert unit.splitlines() == [
        "[Unit]",
        f"Description={svc.DESCRIPTION}",
        "",
        "[Service]",
        "Type=simple",
        'ExecStart="/home/me/My Restora/.venv/bin/restora" serve',
        'Environment="RESTORA_HOME=/data/100%% restora"',
        "Restart=on-failure",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=default.target",
    ]
    assert svc.systemd_quote("a$b") == "a$$b" and svc.systemd_quote('say "hi"') == '"say \\"hi\\""'


def test_launchd_plist_text(tmp_path: Path) -> None:
    data = plistlib.loads(svc.launchd_plist(COMMAND, tmp_path / "backend.log", {"A": "1"}))
    assert data["Label"] == "org.restora.backend"
    assert data["ProgramArguments"] == COMMAND  # no shell: spaces need no quoting
    assert data["RunAtLoad"] is True and data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["StandardErrorPath"] == str(tmp_path / "backend.log")
    assert data["EnvironmentVariables"] == {"A": "1"}


def test_windows_task_and_hidden_launcher_text() -> None:
    command = [r"C:\Users\Me Too\restora\.venv\Scripts\restora.exe", "serve"]
    vbs = svc.windows_hidden_launcher(
        command, Path(r"C:\Users\Me Too\restora\backend.log"), {"RESTORA_HOME": r"D:\r"}
    )
    assert 'env("RESTORA_HOME") = "D:\\r"' in vbs
    # cmd /c with the program quoted (doubled quotes inside a VBScript string), window 0
    assert (
        'shell.Run "cmd /c """"C:\\Users\\Me Too\\restora\\.venv\\Scripts\\restora.exe"" '
        'serve >> ""C:\\Users\\Me Too\\restora\\backend.log"" 2>&1""", 0, True'
    ) in vbs
    xml = svc.windows_task_xml("PC\\me & you", Path(r"C:\r\restora-backend.vbs"))
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    root = ET.fromstring(xml.replace('encoding="UTF-16"', ""))
    assert root.find("t:Triggers/t:LogonTrigger/t:UserId", ns).text == "PC\\me & you"
    assert root.find("t:Principals/t:Principal/t:RunLevel", ns).text == "LeastPrivilege"
    assert root.find("t:Actions/t:Exec/t:Command", ns).text == "wscript.exe"
    assert root.find("t:Actions/t:Exec/t:Arguments", ns).text == '"C:\\r\\restora-backend.vbs"'
    assert root.find("t:Settings/t:ExecutionTimeLimit", ns).text == "PT0S"  # runs for good


def test_systemd_install_enables_and_starts_then_removes(tmp_path: Path) -> None:
    runner = Recorder()
    record = svc.install_service(
        COMMAND,
        tmp_path / "log",
        tmp_path / "cfg",
        platform="linux",
        home=tmp_path,
        environ={},
        runner=runner,
    )
    unit = tmp_path / ".config" / "systemd" / "user" / "restora.service"
    assert record.kind == "systemd" and record.files == [str(unit)] and record.running
    assert unit.read_text() == svc.systemd_unit(COMMAND)
    assert runner.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "restora.service"],
        ["systemctl", "--user", "restart", "restora.service"],
    ]
    assert "runs now and at every login" in record.message
    runner.calls.clear()
    done = svc.remove_service(record.to_json(), "linux", runner)
    assert not unit.exists() and done == [f"Removed {unit}"]
    assert runner.calls == [
        ["systemctl", "--user", "disable", "--now", "restora.service"],
        ["systemctl", "--user", "daemon-reload"],
    ]


@pytest.mark.parametrize(
    ("codes", "words"),
    [
        ({"systemctl": svc.NOT_FOUND}, "this system has no systemd"),
        ({"daemon-reload": 1}, "user manager cannot be reached"),  # root, sudo, plain ssh
        ({"restart": 1}, "could not start it"),
    ],
)
def test_systemd_unavailable_is_explained(
    tmp_path: Path, codes: dict[str, int], words: str
) -> None:
    record = svc.install_service(
        COMMAND,
        tmp_path / "log",
        tmp_path / "cfg",
        platform="linux",
        home=tmp_path,
        environ={"XDG_CONFIG_HOME": str(tmp_path / "x")},
        runner=Recorder(codes),
    )
    assert words in record.message and not record.running
    assert (tmp_path / "x" / "systemd" / "user" / "restora.service").is_file()


def test_launchd_install_and_remove(tmp_path: Path) -> None:
    runner = Recorder({"bootout": 3})  # nothing loaded yet
    record = svc.install_service(
        COMMAND,
        tmp_path / "logs" / "b.log",
        tmp_path / "cfg",
        platform="darwin",
        home=tmp_path,
        runner=runner,
    )
    plist = tmp_path / "Library" / "LaunchAgents" / "org.restora.backend.plist"
    assert record.files == [str(plist)] and record.running
    assert plistlib.loads(plist.read_bytes())["ProgramArguments"] == COMMAND
    assert runner.calls[-1][:2] == ["launchctl", "bootstrap"] and runner.calls[-1][-1] == str(plist)
    svc.remove_service(record.to_json(), "darwin", runner)
    assert not plist.exists() and runner.calls[-1][:2] == ["launchctl", "bootout"]


def test_windows_install_and_remove(tmp_path: Path) -> None:
    runner = Recorder()
    record = svc.install_service(
        COMMAND,
        tmp_path / "b.log",
        tmp_path / "cfg",
        platform="win32",
        home=tmp_path,
        environ={"USERNAME": "me", "USERDOMAIN": "PC"},
        runner=runner,
    )
    definition = tmp_path / "cfg" / "restora-backend-task.xml"
    assert record.kind == "schtasks" and record.running
    assert "<UserId>PC\\me</UserId>" in definition.read_text(encoding="utf-16")
    assert runner.calls[0] == [
        "schtasks",
        "/Create",
        "/TN",
        "Restora Backend",
        "/XML",
        str(definition),
        "/F",
    ]
    assert runner.calls[-1] == ["schtasks", "/Run", "/TN", "Restora Backend"]
    done = svc.remove_service(record.to_json(), "win32", runner)
    assert ["schtasks", "/Delete", "/TN", "Restora Backend", "/F"] in runner.calls
    assert not definition.exists() and not (tmp_path / "cfg" / "restora-backend.vbs").exists()
    assert done[0] == 'Removed the scheduled task "Restora Backend".'


@pytest.mark.parametrize(
    "original",
    [
        "",
        "[General]\na=1\n",
        "[python]\nenable_other=true\n",
        "[General]\na=1\n\n[python]\nenable_scripter=true\n\n[Restora]\nbackend_url=x\n",
    ],
)
def test_kritarc_enable_is_undone_line_for_line(tmp_path: Path, original: str) -> None:
    kritarc = tmp_path / "kritarc"
    if original:
        kritarc.write_text(original)
    krita_plugin.enable_in_kritarc(kritarc)
    assert "enable_restora=true" in kritarc.read_text()
    assert krita_plugin.disable_in_kritarc(kritarc)
    assert (kritarc.read_text() if kritarc.exists() else "") == original
    assert not krita_plugin.disable_in_kritarc(kritarc)
