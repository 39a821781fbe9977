"""The plug-in's settings in Krita's own settings file (kritarc, group [Restora]), and the
last task list seen beside them."""

from __future__ import annotations

import dataclasses

from krita import Krita

from ..common import task_cache
from ..common.settings import Settings
from ..shared.protocol import TaskInfo

GROUP = "Restora"
TASKS_KEY = "task_cache"


def load_settings() -> Settings:
    app = Krita.instance()
    values = {f.name: app.readSetting(GROUP, f.name, "") for f in dataclasses.fields(Settings)}
    return Settings.from_strings(values)


def save_settings(settings: Settings) -> None:
    app = Krita.instance()
    for name, value in settings.to_strings().items():
        app.writeSetting(GROUP, name, value)


def load_tasks() -> list[TaskInfo]:
    return task_cache.from_text(Krita.instance().readSetting(GROUP, TASKS_KEY, ""))


def save_tasks(tasks: list[TaskInfo]) -> None:
    Krita.instance().writeSetting(GROUP, TASKS_KEY, task_cache.to_text(tasks))
