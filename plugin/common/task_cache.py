"""The last task list the plug-in saw, kept beside its settings.

GIMP registers its procedures when it starts, before any backend answers, and Krita's menu
should not wait for the backend either: both read the tasks from here, and every connection
that brings a different list writes it again. Stored as the protocol's own JSON, with the
protocol version, so a list from an older protocol is ignored rather than misread.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

from ..shared.protocol import PROTOCOL_VERSION, ProtocolError, TaskInfo

FILE_NAME = "restora-tasks.json"


def to_text(tasks: list[TaskInfo]) -> str:
    return json.dumps({"protocol_version": PROTOCOL_VERSION,
                       "tasks": [t.to_json() for t in tasks]}, sort_keys=True)


def from_text(text: str) -> list[TaskInfo]:
    """The cached tasks; empty for a missing, broken or other-protocol cache."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        return []
    if not isinstance(data, dict) or data.get("protocol_version") != PROTOCOL_VERSION:
        return []
    tasks = []
    for raw in data.get("tasks") or []:
        with contextlib.suppress(ProtocolError):  # one broken entry does not hide the others
            tasks.append(TaskInfo.from_json(raw))
    return tasks


def load(path: str) -> list[TaskInfo]:
    try:
        with open(path, encoding="utf-8") as f:
            return from_text(f.read())
    except OSError:
        return []


def save(path: str, tasks: list[TaskInfo]) -> bool:
    """Write atomically when the list changed; True when the file was written."""
    text = to_text(tasks)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".restora-tasks-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except OSError:
            os.unlink(tmp)
            raise
    except OSError:
        return False  # a read-only settings folder: the next start asks the backend again
    return True
