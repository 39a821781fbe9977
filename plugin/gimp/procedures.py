"""Restora's GIMP procedures and their arguments, as plain data, from the backend's task list.

GIMP registers procedures when it starts, so they come from the last task list the plug-in saw
(task_cache.py, beside its settings; refreshed whenever the backend answers): one procedure per
task the backend can run, or could once a model is installed, in the backend's order and titled
as it titles the task, then "Restore selection" (the task is an argument) and "Settings...".
Each task procedure is `restora-<task id>`; the upscale task keeps the name older versions gave
it (`restora-upscale-image`), so scripts keep working.

Menu order: GIMP 3.0.4 adds the menu items it knows at its start in the order of a sort key
made of the menu path, the label and the procedure name (app/menus/plug-in-menus.c); the order
procedures are registered in makes no difference. A menu path may end in a named section,
`.../Restora/[name]`; the section name is part of that key, and a name the menu does not define
puts the item in the menu itself, without a separator. So each procedure's path ends in a
section named after its place in the backend's order (`menu_path`), and the menu shows Upscale
first instead of alphabetically, with the labels as the backend titles them.

Every task procedure takes the same arguments, whatever its task: a task's list entry may
change between GIMP's start and a run, and GIMP checks a run's arguments against what was
registered. The task's own options travel as a JSON object in `options`, named as the backend
names its parameters; the dialog draws them from the backend's description with real ranges.
A task's reference images (its further image inputs) travel the same way in `references`: a
JSON object from the input's name to the name of a layer of the image.

`build_settings` turns one run's argument values into the common `Settings`; standard library
only, so it is tested without GIMP.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from ..common.catalog import ordered, task_title
from ..common.errors import PluginError
from ..common.settings import Settings, normalise_url
from ..shared.protocol import TaskInfo, check_task_id

MENU_PATH = "<Image>/Filters/Restora"
PREFIX = "restora-"
RESTORE_NAME = f"{PREFIX}restore-selection"
SETTINGS_NAME = f"{PREFIX}settings"
#: procedure names older versions gave tasks, kept so scripts that call them still work
LEGACY_NAMES = {"upscale": f"{PREFIX}upscale-image"}
#: what GIMP's procedure browser shows as the author
ATTRIBUTION = ("Restora", "Restora contributors", "2025")
#: what `feather` and `padding` hold for "the backend's default" (the dialog shows a toggle)
AUTOMATIC = -1
#: a host name or an IPv4 or IPv6 address (urlsplit gives IPv6 without its brackets)
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")


class BadArgument(PluginError):
    code = "bad_argument"


class Action(str, Enum):
    #: the selection, in place, with the task named by the `task` argument
    RESTORE = "restore"
    #: one task, as its spec says: the selection when there is one (and it uses selections)
    TASK = "task"
    #: the backend's address and token, which every other procedure uses
    SETTINGS = "settings"


@dataclass(frozen=True)
class Argument:
    name: str
    kind: str  # "string", "int", "double" or "boolean"
    nick: str
    blurb: str
    default: Any
    minimum: float = 0
    maximum: float = 0


@dataclass(frozen=True)
class ProcedureSpec:
    name: str
    action: Action
    #: the task it runs; "" for Restore selection, whose `task` argument says
    task: str
    menu_label: str
    blurb: str
    help: str
    arguments: tuple[Argument, ...] = field(default_factory=tuple)
    #: the task's description when it is known (from the cache, or the backend)
    info: TaskInfo | None = None
    #: place in the Restora menu, first is 0 (see `menu_path`)
    position: int = 0

    @property
    def title(self) -> str:
        """The menu label without its mnemonic and dots: "Upscale"."""
        return self.menu_label.replace("_", "").rstrip(".")

    def argument(self, name: str) -> Argument | None:
        return next((a for a in self.arguments if a.name == name), None)

    @property
    def menu_path(self) -> str:
        return menu_path(self.position)


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
    "options", "string", "_Options",
    'The task\'s options as a JSON object, named as the backend names them, e.g. '
    '{"scale": 2, "overlap": 16}; a missing option takes the backend\'s default', "")
REFERENCES = Argument(
    "references", "string", "_Reference images",
    "For a task that takes further images (Edit by instruction's reference images): a JSON "
    'object from the input\'s name to a layer of this image, e.g. {"reference_1": "Hat"}; '
    "a layer that is not there is left out; empty: none", "")
SAMPLE_MERGED = Argument(
    "sample-merged", "boolean", "Sample mer_ged",
    "Send the image as it is shown (all visible layers) instead of the active layer", False)
NEW_IMAGE = Argument(
    "new-image", "boolean", "Open as a _new image",
    "For a task that resizes: open the result as a new image instead of scaling this one",
    False)
FEATHER = Argument(
    "feather", "double", "_Feather",
    "Width of the blend at the selection's edge in pixels; negative: the backend's default "
    "(8% of the selection's diagonal)", float(AUTOMATIC), float(AUTOMATIC), 1000.0)
PADDING = Argument(
    "padding", "int", "Conte_xt",
    "Pixels around the selection the model also sees; negative: the feather width, at least "
    "16", AUTOMATIC, AUTOMATIC, 4096)
TASK_ARGUMENT = Argument(
    "task", "string", "T_ask",
    "The id of the task to run on the selection, as the backend lists it (GET /v1/tasks); "
    "empty: the backend's first task", "")

SETTINGS_URL = Argument(
    "backend-url", "string", "_Backend address",
    "The address to store, e.g. http://127.0.0.1:8765; empty: keep the stored one", "")
SETTINGS_TOKEN = Argument(
    "token", "string", "Access to_ken",
    "The token to store (a backend started with --token needs it); empty: keep the stored "
    "one", "")

CONNECTION = (BACKEND_URL, TOKEN)
TASK_ARGUMENTS = (MODEL, OPTIONS, FEATHER, PADDING, NEW_IMAGE, SAMPLE_MERGED, *CONNECTION,
                  REFERENCES)
RESTORE_ARGUMENTS = (TASK_ARGUMENT, MODEL, OPTIONS, FEATHER, PADDING, SAMPLE_MERGED,
                     *CONNECTION, REFERENCES)
SETTINGS_ARGUMENTS = (SETTINGS_URL, SETTINGS_TOKEN)


def menu_path(position: int) -> str:
    """The menu path of the procedure at `position` in the Restora menu: the menu, then a
    section that exists nowhere, named so that GIMP's sort keeps the backend's order."""
    return f"{MENU_PATH}/[{position:03d}]"


def offered(info: TaskInfo) -> bool:
    """A task gets a procedure when the backend runs it, or would with a model installed (its
    dialog then says what is missing); one that needs a package or a newer backend does not."""
    return info.available or info.needs_model


def procedure_name(task: str) -> str:
    return LEGACY_NAMES.get(task, f"{PREFIX}{task}")


def task_of(name: str) -> str | None:
    """The task a procedure name runs; None for a name that is not a task procedure."""
    for task, legacy in LEGACY_NAMES.items():
        if name == legacy:
            return task
    if not name.startswith(PREFIX) or name in (RESTORE_NAME, SETTINGS_NAME):
        return None
    try:
        return check_task_id(name[len(PREFIX):])
    except ValueError:
        return None


def restore_spec(position: int = 0) -> ProcedureSpec:
    return ProcedureSpec(
        RESTORE_NAME, Action.RESTORE, "", "Restore _selection...",
        "Restore the selected part of the layer with a Restora task",
        "Sends the selection's box plus some context to Restora's backend and adds the "
        "result as a new layer above the source, exactly aligned, feathered at the "
        "selection's edge and transparent outside it, in one undo step.",
        RESTORE_ARGUMENTS, position=position)


def settings_spec(position: int = 0) -> ProcedureSpec:
    return ProcedureSpec(
        SETTINGS_NAME, Action.SETTINGS, "", "Se_ttings...", "Restora settings",
        "Where Restora's backend is (this computer, or another one on the network) and the "
        "token a shared backend needs; every Restora command uses them. Shows whether the "
        "backend answers, and starts the one installed on this computer.",
        SETTINGS_ARGUMENTS, position=position)


def task_spec(task: str, info: TaskInfo | None, position: int = 0) -> ProcedureSpec:
    title = task_title(info, task)
    help_text = (info.help + " " if info is not None and info.help else "") + (
        "Works on the selection when there is one, else on the whole layer; the result is a "
        "new layer (a group of layers for several outputs) above the source, in one undo step.")
    return ProcedureSpec(procedure_name(task), Action.TASK, task, f"{title}...",
                         f"{title} with Restora", help_text, TASK_ARGUMENTS, info, position)


def procedures(tasks: list[TaskInfo]) -> list[ProcedureSpec]:
    """What GIMP registers, in menu order: each task the backend offers (by its `order`),
    then Restore selection, then Settings."""
    specs: list[ProcedureSpec] = []
    seen = {RESTORE_NAME, SETTINGS_NAME}
    for info in ordered(tasks):
        name = procedure_name(info.task)
        if offered(info) and name not in seen:
            seen.add(name)
            specs.append(task_spec(info.task, info, len(specs)))
    specs.append(restore_spec(len(specs)))
    specs.append(settings_spec(len(specs)))
    return specs


def spec_for(name: str, tasks: list[TaskInfo]) -> ProcedureSpec:
    """The spec of a procedure GIMP asks for, at its place in the menu; a task gone from the
    list since GIMP started still runs (the backend says whether it can)."""
    for spec in procedures(tasks):
        if spec.name == name:
            return spec
    task = task_of(name)
    if task is None:
        raise KeyError(name)
    return task_spec(task, next((t for t in tasks if t.task == task), None))


def connection(stored: Settings, env: Mapping[str, str],
               values: Mapping[str, Any] | None = None) -> Settings:
    """The backend's address and token for a run: the argument (a script's), else the
    environment (RESTORA_URL, RESTORA_TOKEN), else what Settings stored."""
    values = values or {}
    settings = Settings(backend_url=stored.backend_url, token=stored.token)
    url = _text(values.get("backend-url")) or env.get("RESTORA_URL", "").strip()
    if url:
        settings.backend_url = _address(url)
    token = _text(values.get("token")) or env.get("RESTORA_TOKEN", "").strip()
    if token:
        settings.token = token
    return settings


def stored_connection(stored: Settings, values: Mapping[str, Any]) -> Settings:
    """What the Settings procedure stores when a script calls it: a given address or token
    replaces the stored one, an empty one keeps it."""
    settings = Settings(backend_url=stored.backend_url, token=stored.token)
    url = _text(values.get("backend-url"))
    if url:
        settings.backend_url = _address(url)
    token = _text(values.get("token"))
    if token:
        settings.token = token
    return settings


def build_settings(spec: ProcedureSpec, values: Mapping[str, Any], stored: Settings,
                   env: Mapping[str, str]) -> tuple[Settings, str]:
    """The settings of one run from its argument values; returns them and the task to run
    ("" for Restore selection without a task: the backend's first).

    The address and token come from `connection`; everything else comes from the arguments,
    so a script gets the same result whatever the user chose in a dialog.
    """
    task = spec.task or _task(values.get("task"))
    settings = connection(stored, env, values)
    settings.task = task
    model = _text(values.get("model"))
    if model:
        settings.models = {task: model}
    settings.options = {task: _options(values)}
    references = parse_references(values.get("references"))
    if references:
        settings.references = {task: references}
    feather = values.get("feather")
    if isinstance(feather, (int, float)) and feather >= 0:
        settings.feather = float(feather)
    padding = values.get("padding")
    if isinstance(padding, int) and padding >= 0:
        settings.padding = padding
    settings.source = "projection" if values.get("sample-merged") else "layer"
    settings.upscale_into = "document" if values.get("new-image") else "layer"
    return settings, task


def backend_address(text: str) -> str | None:
    """`text` as a backend address (`http://host:port`), or None when it is not one: the
    common check takes any text for a host name, a typo with a space included."""
    normalised = normalise_url(text)
    if normalised is None:
        return None
    host = urlsplit(normalised).hostname or ""
    return normalised if _HOST.fullmatch(host) else None


def _address(url: str) -> str:
    normalised = backend_address(url)
    if normalised is None:
        raise BadArgument(f"'{url}' is not a backend address.",
                          "Give an address like http://127.0.0.1:8765.")
    return normalised


def _options(values: Mapping[str, Any]) -> dict[str, Any]:
    raw = _text(values.get("options"))
    if not raw:
        return {}
    try:
        options = json.loads(raw)
    except ValueError as exc:
        raise BadArgument(f"The options are not valid JSON ({exc}).",
                          'Write them as a JSON object, e.g. {"overlap": 16}.') from None
    if not isinstance(options, dict):
        raise BadArgument("The options must be a JSON object.",
                          'Write them like {"overlap": 16}.')
    return options


def parse_references(value: Any) -> dict[str, str]:
    """The `references` argument: input name -> layer name; empty text is none."""
    raw = _text(value)
    if not raw:
        return {}
    example = 'Write them like {"reference_1": "Hat"}: the input\'s name, then the layer\'s.'
    try:
        references = json.loads(raw)
    except ValueError as exc:
        raise BadArgument(f"The reference images are not valid JSON ({exc}).",
                          example) from None
    if not isinstance(references, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in references.items()):
        raise BadArgument("The reference images must be a JSON object of names.", example)
    return {k: v for k, v in references.items() if v.strip()}


def _task(value: Any) -> str:
    text = _text(value)
    if not text:
        return ""
    try:
        return check_task_id(text)
    except ValueError:
        raise BadArgument(f"'{text}' is not a Restora task id.",
                          "Use an id the backend lists, such as 'upscale'.") from None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""
