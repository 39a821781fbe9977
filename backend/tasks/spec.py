"""The task contract: what a task declares so the CLI, the server and both editors derive from it.

A task is one module in backend/tasks/ that defines `SPEC = TaskSpec(...)`: its id, words for
people, a parameters dataclass whose fields carry their label, range, unit, help and widget
(`param(...)`), the inputs it takes, the outputs it makes, the model it runs and one
`run(context, inputs, params)`, and optionally presets: named sets of options ("Photo",
"Fast") that the editors offer as one choice. Nothing here imports torch: listing tasks, answering
`/v1/tasks` and `restora --help` stay fast, and a task module imports its heavy parts inside
`run`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any

from backend.errors import InvalidParameterError

PARAM_KEY = "restora.param"

#: how the editors draw a parameter; "" means the default for its type
WIDGETS = ("", "spin", "slider", "checkbox", "choice", "text", "prompt", "seed", "model")
#: how a task treats the editor's selection mask
MASK_MODES = ("optional", "required", "ignored")
#: how the editors group tasks for people: make bigger, keep the original, redraw, edit by words
GROUPS = ("upscale", "restore", "enhance", "edit")
#: preset ids, like task ids: lowercase words joined by '-'
_PRESET_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Param:
    """How a parameter reads to people and which values it takes (besides its Python type)."""

    label: str
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    unit: str = ""  # "px", "x", "%", "steps": shown beside the value
    choices: tuple[Any, ...] = ()
    choice_labels: tuple[str, ...] = ()
    widget: str = ""
    #: what a None value means, for optional parameters ("automatic", "the model's own")
    none_label: str = ""
    advanced: bool = False
    #: set by the server or the CLI from its limits; a client cannot send it
    internal: bool = False
    #: command-line flags; default `--name-with-dashes`
    flags: tuple[str, ...] = ()
    #: widget "model": the registry folders and spandrel purposes of the models that fit
    folders: tuple[str, ...] = ()
    purposes: tuple[str, ...] = ()
    #: shown only for these model architectures of the task's own model (empty: always)
    applies_to: tuple[str, ...] = ()


def param(default: Any, label: str, **details: Any) -> Any:
    """A parameters-dataclass field with its description: `fidelity: float = param(0.5, ...)`."""
    return field(default=default, metadata={PARAM_KEY: Param(label=label, **details)})


@dataclass(frozen=True)
class ParamField:
    """One parameter resolved from its dataclass field: name, type, default and description."""

    name: str
    type: str  # "int", "float", "bool" or "str"
    optional: bool
    default: Any
    info: Param

    @property
    def widget(self) -> str:
        if self.info.widget:
            return self.info.widget
        if self.info.choices:
            return "choice"
        return {"bool": "checkbox", "str": "text"}.get(self.type, "spin")

    def check(self, task: str, value: Any) -> Any:
        """The value converted to this parameter's type, or an error naming the parameter."""
        if value is None:
            if self.optional:
                return None
            raise InvalidParameterError(
                f"Parameter '{self.name}' of task '{task}' cannot be empty.", self.describe()
            )
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }[self.type]
        if not ok:
            kind = {"int": "a whole number", "float": "a number", "bool": "true or false"}
            raise InvalidParameterError(
                f"Parameter '{self.name}' of task '{task}' must be "
                f"{kind.get(self.type, 'a string')}{' or null' if self.optional else ''}, "
                f"not {_short(value)}.",
                self.describe(),
            )
        value = float(value) if self.type == "float" else value
        info = self.info
        if info.choices and value not in info.choices:
            raise InvalidParameterError(
                f"Parameter '{self.name}' of task '{task}' must be one of "
                f"{', '.join(repr(c) for c in info.choices)}, not {_short(value)}.",
                "",
            )
        low, high = info.minimum, info.maximum
        if self.type in ("int", "float") and (
            (low is not None and value < low) or (high is not None and value > high)
        ):
            raise InvalidParameterError(
                f"Parameter '{self.name}' of task '{task}' must be {self.range_text()}, "
                f"not {value:g}.",
                self.describe(),
            )
        if self.type == "str" and high is not None and len(value) > high:
            raise InvalidParameterError(
                f"Parameter '{self.name}' of task '{task}' is {len(value)} characters long; "
                f"at most {high:g} are allowed.",
                "",
            )
        return value

    def range_text(self) -> str:
        low, high, unit = self.info.minimum, self.info.maximum, self.info.unit
        suffix = f" {unit}" if unit and unit != "x" else ("x" if unit == "x" else "")
        if low is not None and high is not None:
            return f"between {low:g} and {high:g}{suffix}"
        if low is not None:
            return f"at least {low:g}{suffix}"
        if high is not None:
            return f"at most {high:g}{suffix}"
        return "any value"

    def describe(self) -> str:
        """One line for help texts: the label, the range and what None means."""
        parts = [self.info.label]
        if self.type in ("int", "float") and (
            self.info.minimum is not None or self.info.maximum is not None
        ):
            parts.append(self.range_text())
        if self.optional and self.info.none_label:
            parts.append(f"empty: {self.info.none_label}")
        return "; ".join(parts)


@dataclass(frozen=True)
class ModelSlot:
    """The model a task runs: where such files live and what to say when none is there."""

    folders: tuple[str, ...]
    purposes: tuple[str, ...]
    #: None: the first installed model that fits, by the registry's preference
    default: str | None = None
    #: what to install when no model fits (plain words; the catalog offers the download)
    missing_hint: str = ""
    #: the catalog's task name, so a plug-in can offer "Download..." for it
    catalog_task: str = ""


@dataclass(frozen=True)
class Preset:
    """A named set of options the editors offer as one choice ("Photo", "Fast").

    `params` are values of the task's own parameters, checked against their ranges when the
    spec is made; `model_traits` picks the first usable installed model that has every one of
    these catalog traits (empty: the preset keeps whatever model is chosen).
    """

    name: str
    label: str
    help: str = ""
    # not hashed: a spec stays hashable although a mapping is not
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    model_traits: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageInput:
    """A further named image a task takes besides the layer and the mask (a reference image)."""

    name: str
    label: str
    required: bool = False
    help: str = ""


@dataclass(frozen=True)
class OutputSpec:
    """One thing a task returns; several outputs arrive as several layers, in this order."""

    name: str
    title: str
    kind: str = "image"  # "image" or "mask"


@dataclass
class TaskInputs:
    image: Any  # numpy array HxWxC, uint8 or uint16
    mask: Any = None  # HxWx1 uint8 selection, or None
    images: dict[str, Any] = field(default_factory=dict)
    #: "model": the task's own model; a parameter's name: the model that parameter names
    models: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> Any:
        return self.models.get("model")


@dataclass
class Output:
    name: str
    pixels: Any
    title: str = ""
    #: a layer over the input, transparent where nothing changed (the faces alone, a
    #: selection): the editors add it as it is, the command line writes it over the input
    overlay: bool = False


@dataclass
class TaskResult:
    outputs: list[Output]
    #: what the task reports besides pixels (faces found, seed used, how far it moved, ...)
    details: dict[str, Any] = field(default_factory=dict)
    #: nothing to do (no face found): not an error, and no layer is added
    nothing_found: bool = False
    message: str = ""


@dataclass(frozen=True)
class Limits:
    """What the caller allows; the task's `prepare` checks a request against it before queueing."""

    max_output_pixels: int


Run = Callable[[Any, TaskInputs, Any], "TaskResult | Any"]
#: check (and complete) the params against the input's size and the chosen model, before any
#: model is loaded: prepare(params, inputs, model_entry, limits)
Prepare = Callable[[Any, TaskInputs, Any, Limits], None]


@dataclass(frozen=True)
class TaskSpec:
    id: str
    title: str
    help: str
    params: type
    run: Run
    model: ModelSlot | None = None
    mask: str = "optional"
    images: tuple[ImageInput, ...] = ()
    outputs: tuple[OutputSpec, ...] = (OutputSpec("result", "Result"),)
    #: the result may be larger than the input (the editors then scale the document)
    resizes: bool = False
    #: the last output is the finished image (a chain of stages): the command line writes it
    #: to the output's name and the others beside it; otherwise the first is the main one
    final_last: bool = False
    #: a selection blends in through a soft edge; False: the mask is the exact region the
    #: task changes (inpainting fills the holes it is given, edge pixels included)
    feather: bool = True
    #: Python modules the task needs beyond the core install, and the command that adds them
    requires: tuple[str, ...] = ()
    install_hint: str = ""
    group: str = "restore"
    #: place in menus: lower first
    order: int = 100
    #: the `restora` subcommand; default the id
    command: str = ""
    prepare: Prepare | None = None
    #: lines the command line prints about a result's details (the faces it found, ...)
    summarize: Callable[[dict[str, Any]], list[str]] | None = None
    #: named sets of options, in the order the editors list them
    presets: tuple[Preset, ...] = ()

    def __post_init__(self) -> None:
        if self.mask not in MASK_MODES:
            raise ValueError(f"task {self.id}: mask must be one of {MASK_MODES}")
        if self.group not in GROUPS:
            raise ValueError(f"task {self.id}: group must be one of {GROUPS}")
        for f in param_fields(self.params):
            if f.widget not in WIDGETS:
                raise ValueError(f"task {self.id}: unknown widget {f.widget!r} for {f.name}")
        self._check_presets()

    def _check_presets(self) -> None:
        """A preset that sets an unknown or out-of-range option would fail every job it is
        chosen for; refuse it when the task is defined, not when a user picks it."""
        from backend.models.catalog import TRAITS  # standard library only, like this module

        names = [p.name for p in self.presets]
        if len(set(names)) != len(names):
            raise ValueError(f"task {self.id}: two presets share a name: {names}")
        known = {f.name: f for f in self.fields()}
        for preset in self.presets:
            where = f"task {self.id}, preset {preset.name!r}"
            if not _PRESET_NAME.match(preset.name) or not preset.label:
                raise ValueError(f"{where}: needs an id of lowercase words and a label")
            unknown = [k for k in preset.params if k not in known]
            if unknown:
                raise ValueError(f"{where}: {', '.join(unknown)} is not a parameter of the task")
            try:  # each value against its range and choices, then the task's own checks
                self.parse_params(dict(preset.params))
            except InvalidParameterError as exc:
                raise ValueError(f"{where}: {exc.message}") from None
            if preset.model_traits and self.model is None:
                raise ValueError(f"{where}: picks a model by traits, but the task runs none")
            odd = [t for t in preset.model_traits if t not in TRAITS]
            if odd:
                raise ValueError(f"{where}: unknown model traits {', '.join(odd)}")

    def preset(self, name: str) -> Preset | None:
        return next((p for p in self.presets if p.name == name), None)

    @property
    def cli_name(self) -> str:
        return self.command or self.id

    def missing_packages(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def availability(self) -> tuple[bool, str]:
        """Whether this install can run the task, and if not, why in plain words."""
        missing = self.missing_packages()
        if missing:
            return False, (
                f"{self.title} needs the Python package(s) {', '.join(missing)}, which are "
                f"not installed. {self.install_hint}".strip()
            )
        return True, ""

    def fields(self, include_internal: bool = False) -> list[ParamField]:
        return [f for f in param_fields(self.params) if include_internal or not f.info.internal]

    def parse_params(self, raw: dict[str, Any], internal: dict[str, Any] | None = None) -> Any:
        """The params dataclass from a JSON object, naming any unknown, mistyped or out-of-range
        value; `internal` sets the parameters only the caller itself may set."""
        if not isinstance(raw, dict):
            raise InvalidParameterError("params must be a JSON object.", "")
        known = {f.name: f for f in self.fields()}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in known:
                raise InvalidParameterError(
                    f"Unknown parameter '{_short(key, 40)}' for task '{self.id}'.",
                    f"Its parameters are: {', '.join(known) or 'none'}.",
                )
            values[key] = known[key].check(self.id, value)
        params = self.params(**values, **(internal or {}))
        validate = getattr(params, "validate", None)
        if validate is not None:
            validate()
        return params

    def helper_models(self, params: Any) -> dict[str, tuple[str, ModelSlot]]:
        """The further models a job names through its "model" parameters: name -> (model, slot)."""
        found = {}
        for f in self.fields():
            value = getattr(params, f.name)
            if f.widget == "model" and value:
                found[f.name] = (value, ModelSlot(f.info.folders, f.info.purposes))
        return found


def check_ranges(params: Any, task: str) -> None:
    """Every field of `params` against its own description (type, range, choices): for a
    params object built in code, which never went through `TaskSpec.parse_params`."""
    for f in param_fields(type(params)):
        f.check(task, getattr(params, f.name))


_fields_cache: dict[type, list[ParamField]] = {}


def param_fields(params_type: type) -> list[ParamField]:
    """Every parameter of a params dataclass, with its type and description."""
    if params_type in _fields_cache:
        return _fields_cache[params_type]
    hints = typing.get_type_hints(params_type)
    out = []
    for f in dataclasses.fields(params_type):
        info = f.metadata.get(PARAM_KEY)
        if info is None:
            raise TypeError(f"{params_type.__name__}.{f.name} has no param(...) description")
        kind, optional = _type_of(hints[f.name])
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"{params_type.__name__}.{f.name} needs a default")
        out.append(ParamField(f.name, kind, optional, default, info))
    _fields_cache[params_type] = out
    return out


def _type_of(hint: Any) -> tuple[str, bool]:
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    name = getattr(base, "__name__", str(base))
    if name not in ("int", "float", "bool", "str"):
        raise TypeError(f"parameter type {hint!r} is not int, float, bool or str")
    return name, optional


def _short(value: Any, limit: int = 60) -> str:
    """A value for an error message, never more than `limit` characters of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
