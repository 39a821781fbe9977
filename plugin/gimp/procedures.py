"""Restora's GIMP procedures and their arguments, as plain data.

GIMP registers a procedure's arguments once (when it queries the plug-in) and keeps them in
its plug-in cache, so the list here is fixed: one procedure per task of the protocol, plus
"Restore selection" with the task as an argument. Tasks a backend does not run yet answer with
a message saying so. Models and task options come from the backend at run time, so `model` is
a string and options beyond the typed ones travel as a JSON object in `options`.

`build_settings` turns one run's argument values into the common `Settings`; standard library
only, so it is tested without GIMP.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..common.catalog import task_title
from ..common.errors import PluginError
from ..common.settings import Settings, normalise_url
from ..shared.protocol import Task

MENU_PATH = "<Image>/Filters/Restora"
PREFIX = "restora-"
#: what GIMP's procedure browser shows as the author
ATTRIBUTION = ("Restora", "Restora contributors", "2025")
#: a "whatever the backend chooses" value for numbers where 0 means something
AUTOMATIC = -1


class BadArgument(PluginError):
    code = "bad_argument"


class Action(str, Enum):
    #: the whole layer; the image is scaled by GIMP and the result added on top
    UPSCALE = "upscale"
    #: the selection, in place, with the task named by the `task` argument
    RESTORE = "restore"
    #: one task: on the selection when there is one, else on the whole layer
    TASK = "task"


@dataclass(frozen=True)
class Argument:
    name: str
    kind: str  # "string", "int", "double", "boolean" or "choice"
    nick: str
    blurb: str
    default: Any
    minimum: float = 0
    maximum: float = 0
    #: for "choice": (id, label) pairs
    choices: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ProcedureSpec:
    name: str
    action: Action
    #: the task it runs; None for Restore selection, whose `task` argument says
    task: Task | None
    menu_label: str
    blurb: str
    help: str
    arguments: tuple[Argument, ...] = field(default_factory=tuple)

    @property
    def title(self) -> str:
        """The menu label without its mnemonic and dots: "Upscale image"."""
        return self.menu_label.replace("_", "").rstrip(".")

    def argument(self, name: str) -> Argument | None:
        return next((a for a in self.arguments if a.name == name), None)


BACKEND_URL = Argument(
    "backend-url", "string", "_Backend address",
    "Where `restora serve` listens, e.g. http://127.0.0.1:8765; empty: $RESTORA_URL, else the "
    "last address used, else http://127.0.0.1:8765", "")
TOKEN = Argument(
    "token", "string", "Backend to_ken",
    "The token a backend started with --token needs; empty: $RESTORA_TOKEN or none", "")
MODEL = Argument(
    "model", "string", "_Model",
    "The model's name as the backend lists it; empty: the backend's default for the task", "")
OPTIONS = Argument(
    "options", "string", "More _options",
    'More task options as a JSON object, named as the backend names them, e.g. {"overlap": 16}',
    "")
SAMPLE_MERGED = Argument(
    "sample-merged", "boolean", "Sample mer_ged",
    "Send the image as it is shown (all visible layers) instead of the active layer", False)
SCALE = Argument(
    "scale", "double", "Sc_ale (0: the model's)", "Output scale; 0: the model's own scale",
    0.0, 0.0, 16.0)
TILE = Argument(
    "tile", "int", "_Tile size (0: automatic)",
    "Tile size in pixels for big images; 0: chosen by the backend from the free memory",
    0, 0, 8192)
NEW_IMAGE = Argument(
    "new-image", "boolean", "Open as a _new image",
    "Open the upscaled image as a new image instead of scaling this one", False)
FEATHER = Argument(
    "feather", "double", "_Feather (-1: automatic)",
    "Width of the blend at the selection's edge in pixels; -1: 8% of the selection's diagonal",
    float(AUTOMATIC), float(AUTOMATIC), 1000.0)
PADDING = Argument(
    "padding", "int", "Conte_xt (-1: automatic)",
    "Pixels around the selection the model also sees; -1: the feather width, at least 16",
    AUTOMATIC, AUTOMATIC, 4096)
TASK_CHOICE = Argument(
    "task", "choice", "T_ask", "What to do with the selection", Task.UPSCALE.value,
    choices=tuple((t.value, task_title(t)) for t in Task))

CONNECTION = (BACKEND_URL, TOKEN)


def _specs() -> tuple[ProcedureSpec, ...]:
    specs = [
        ProcedureSpec(
            f"{PREFIX}upscale-image", Action.UPSCALE, Task.UPSCALE, "_Upscale image...",
            "Upscale the image with a Restora model",
            "Sends the active layer to Restora's backend, scales the image with GIMP's own "
            "scaling and adds the upscaled layer on top of the source layer, in one undo step.",
            (MODEL, SCALE, TILE, NEW_IMAGE, SAMPLE_MERGED, OPTIONS, *CONNECTION)),
        ProcedureSpec(
            f"{PREFIX}restore-selection", Action.RESTORE, None, "Restore _selection...",
            "Restore the selected part of the layer with a Restora model",
            "Sends the selection's box plus some context to Restora's backend and adds the "
            "result as a new layer above the source, exactly aligned, feathered at the "
            "selection's edge and transparent outside it, in one undo step.",
            (TASK_CHOICE, MODEL, FEATHER, PADDING, TILE, SAMPLE_MERGED, OPTIONS, *CONNECTION)),
    ]
    for task in Task:
        if task == Task.UPSCALE:
            continue  # "Upscale image" and "Restore selection" cover it
        title = task_title(task)
        specs.append(ProcedureSpec(
            f"{PREFIX}{task.value}", Action.TASK, task, f"{title}...",
            f"{title} with Restora",
            f"Runs Restora's '{task.value}' task on the selection (or the whole layer without "
            "one) and adds the result as a new layer above the source, in one undo step.",
            (MODEL, FEATHER, PADDING, SAMPLE_MERGED, OPTIONS, *CONNECTION)))
    return tuple(specs)


PROCEDURES: tuple[ProcedureSpec, ...] = _specs()
BY_NAME: dict[str, ProcedureSpec] = {spec.name: spec for spec in PROCEDURES}


def build_settings(spec: ProcedureSpec, values: Mapping[str, Any], stored: Settings,
                   env: Mapping[str, str]) -> tuple[Settings, Task]:
    """The settings of one run from its argument values; returns them and the task to run.

    The address and token come from the argument, else the environment (RESTORA_URL,
    RESTORA_TOKEN), else what was stored; everything else comes from the arguments, so a
    script gets the same result whatever the user chose in a dialog.
    """
    task = spec.task or _task(values.get("task"))
    settings = Settings(backend_url=stored.backend_url, token=stored.token)
    url = _text(values.get("backend-url")) or env.get("RESTORA_URL", "").strip()
    if url:
        normalised = normalise_url(url)
        if normalised is None:
            raise BadArgument(f"'{url}' is not a backend address.",
                              "Give an address like http://127.0.0.1:8765.")
        settings.backend_url = normalised
    token = _text(values.get("token")) or env.get("RESTORA_TOKEN", "").strip()
    if token:
        settings.token = token
    settings.task = task.value
    model = _text(values.get("model"))
    if model:
        settings.models = {task.value: model}
    settings.options = {task.value: _options(spec, values)}
    feather = values.get("feather")
    if isinstance(feather, (int, float)) and feather >= 0:
        settings.feather = float(feather)
    padding = values.get("padding")
    if isinstance(padding, int) and padding >= 0:
        settings.padding = padding
    settings.source = "projection" if values.get("sample-merged") else "layer"
    settings.upscale_into = "document" if values.get("new-image") else "layer"
    return settings, task


def _options(spec: ProcedureSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    raw = _text(values.get("options"))
    options: dict[str, Any] = {}
    if raw:
        try:
            options = json.loads(raw)
        except ValueError as exc:
            raise BadArgument(f"The options are not valid JSON ({exc}).",
                              'Write them as a JSON object, e.g. {"overlap": 16}.') from None
        if not isinstance(options, dict):
            raise BadArgument("The options must be a JSON object.",
                              'Write them like {"overlap": 16}.')
    # the typed arguments win over the same name in `options`; 0 means "the backend chooses"
    if spec.argument("scale") is not None and values.get("scale"):
        options["scale"] = float(values["scale"])
    if spec.argument("tile") is not None and values.get("tile"):
        options["tile"] = int(values["tile"])
    return options


def _task(value: Any) -> Task:
    try:
        return Task(_text(value) or Task.UPSCALE.value)
    except ValueError:
        known = ", ".join(t.value for t in Task)
        raise BadArgument(f"'{value}' is not a Restora task.", f"Use one of: {known}.") from None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""
