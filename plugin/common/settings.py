"""The plug-in's settings: a dataclass, and its conversion to and from strings.

Editors store settings as strings (Krita's readSetting/writeSetting, GIMP's parasites or a
file); `to_strings` and `from_strings` give one JSON-encoded string per field, so a value the
user (or an older version) broke falls back to its default instead of breaking the plug-in.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..shared.protocol import DEFAULT_PORT

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
SOURCES = ("layer", "projection")
UPSCALE_TARGETS = ("layer", "document")
#: parameters a selection restore never sends: the result must fit the selection again
SIZE_PARAMS = frozenset({"scale", "width"})


@dataclass
class Settings:
    backend_url: str = DEFAULT_URL
    #: the token a backend started with --token needs; empty for the local one
    token: str = ""
    #: the task "Restore selection" runs and the docker shows; "": the backend's first task
    task: str = ""
    #: model per task ("" or missing: the backend's default model for the task)
    models: dict[str, str] = field(default_factory=dict)
    #: options per task (scale, tile, strength...), as the backend names its parameters
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: reference images per task: the task's further image input (TaskInfo.images) -> the
    #: name of the layer picked for it; names, not editor ids, so the choice carries over to
    #: the next image that has a layer of that name
    references: dict[str, dict[str, str]] = field(default_factory=dict)
    #: feather width of a restored selection's edge in pixels; None: the backend's default
    feather: float | None = None
    #: context around a selection in pixels; None: the feather width, at least 16
    padding: int | None = None
    #: what is sent: the active layer, or the whole image as it is shown
    source: str = "layer"
    #: where an upscaled image goes: a new layer of the scaled document, or a new document
    upscale_into: str = "layer"

    def model_for(self, task: str) -> str | None:
        return self.models.get(task) or None

    def options_for(self, task: str, in_place: bool = False,
                    declared: Collection[str] | None = None) -> dict[str, Any]:
        """The task's options to send; in place (a selection) without the size options; with
        `declared` (the task's parameter names from the backend), only those."""
        opts = {k: v for k, v in self.options.get(task, {}).items() if v is not None}
        if in_place:
            opts = {k: v for k, v in opts.items() if k not in SIZE_PARAMS}
        if declared is not None:
            opts = {k: v for k, v in opts.items() if k in declared}
        return opts

    def references_for(self, task: str) -> dict[str, str]:
        """The task's picked layers: input name -> layer name, without cleared entries."""
        return {k: v for k, v in self.references.get(task, {}).items() if v}

    def with_reference(self, task: str, image: str, layer: str) -> Settings:
        """These settings with `layer` picked for the task's input `image` ("" clears it);
        every other choice stays as it is."""
        picked = {**self.references.get(task, {}), image: layer}
        picked = {k: v for k, v in picked.items() if v}
        references = {k: dict(v) for k, v in self.references.items() if k != task}
        if picked:
            references[task] = picked
        return dataclasses.replace(self, references=references)

    def with_task_form(self, task: str, model: str,
                       options: Mapping[str, Any]) -> Settings:
        """These settings with one task's model and shown options replaced; every other
        task's entries stay as they are, and so do this task's options the form lacks."""
        name = task
        models = {**self.models, name: model}
        all_options = {k: dict(v) for k, v in self.options.items()}
        all_options[name] = {**all_options.get(name, {}), **options}
        return dataclasses.replace(self, models=models, options=all_options)

    def without_unknown_options(self, declared: Mapping[str, Collection[str]]
                                ) -> tuple[Settings, dict[str, list[str]]]:
        """These settings without the options a task does not declare, and what was dropped
        per task. `declared` maps a task to its parameter names; a task it does not name
        keeps its options (another backend may run it)."""
        options: dict[str, dict[str, Any]] = {}
        dropped: dict[str, list[str]] = {}
        for name, values in self.options.items():
            known = declared.get(name)
            if known is None:
                options[name] = dict(values)
                continue
            options[name] = {k: v for k, v in values.items() if k in known}
            unknown = [k for k in values if k not in known]
            if unknown:
                dropped[name] = unknown
        if not dropped:
            return self, {}
        return dataclasses.replace(self, options=options), dropped

    def to_strings(self) -> dict[str, str]:
        return {f.name: json.dumps(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_strings(cls, values: dict[str, str]) -> Settings:
        """Settings from stored strings; a missing or broken value keeps its default."""
        settings = cls()
        for f in dataclasses.fields(cls):
            raw = values.get(f.name)
            if not raw:
                continue
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            default = getattr(settings, f.name)
            if _fits(value, default, f.name):
                setattr(settings, f.name, value)
        # one task's broken entry is dropped alone, so it cannot break the others
        settings.models = {k: v for k, v in settings.models.items() if isinstance(v, str)}
        settings.options = {k: v for k, v in settings.options.items()
                            if isinstance(v, dict) and all(isinstance(n, str) for n in v)}
        settings.references = {k: {n: name for n, name in v.items()
                                   if isinstance(name, str) and name}
                               for k, v in settings.references.items() if isinstance(v, dict)}
        settings.backend_url = normalise_url(settings.backend_url) or DEFAULT_URL
        if settings.source not in SOURCES:
            settings.source = "layer"
        if settings.upscale_into not in UPSCALE_TARGETS:
            settings.upscale_into = "layer"
        return settings


_OPTIONAL_NUMBERS = {"feather": (int, float), "padding": (int,)}


def _fits(value: Any, default: Any, name: str) -> bool:
    if name in _OPTIONAL_NUMBERS:
        return value is None or (isinstance(value, _OPTIONAL_NUMBERS[name])
                                 and not isinstance(value, bool) and value >= 0)
    if isinstance(default, dict):
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return isinstance(value, type(default))


def normalise_url(url: str) -> str | None:
    """`http(s)://host[:port]` without a trailing slash, or None when it is not such a URL.

    A bare `host:port` gets `http://`, since that is what people type.
    """
    url = url.strip()
    if not url:
        return None
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
