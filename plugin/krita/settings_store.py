"""The plug-in's settings in Krita's own settings file (kritarc, group [Restora])."""

from __future__ import annotations

import dataclasses

from krita import Krita

from ..common.settings import Settings

GROUP = "Restora"


def load_settings() -> Settings:
    app = Krita.instance()
    values = {f.name: app.readSetting(GROUP, f.name, "") for f in dataclasses.fields(Settings)}
    return Settings.from_strings(values)


def save_settings(settings: Settings) -> None:
    app = Krita.instance()
    for name, value in settings.to_strings().items():
        app.writeSetting(GROUP, name, value)
