"""The dialog's form for a task's options as the backend describes them (`ParamInfo`).

Typed values in and out, and the `options` argument (a JSON object) as the meeting point: the
form starts from it and writes back only what differs from the backend's default, so a
default the backend changes later still applies. Standard library only; option_widgets.py
draws it with GTK widgets from what this module works out (ranges, steps, digits, choices).
"""

from __future__ import annotations

import json
from typing import Any

from ..shared.protocol import ParamInfo
from .procedures import BadArgument

TRUE_WORDS = ("1", "true", "yes", "on")
#: a number field's bounds where a parameter gives none
NO_LIMIT = 1_000_000.0
DEFAULT_TEXT = "default"


def form_params(params: list[ParamInfo], hidden: set[str]) -> list[ParamInfo]:
    """The parameters the form shows: those not hidden (a selection keeps its size)."""
    return [p for p in params if p.name not in hidden]


def is_number(param: ParamInfo) -> bool:
    return param.type in ("int", "float") and not param.choices and param.widget != "model"


def number_range(param: ParamInfo) -> tuple[float, float, float]:
    """A number field's lower and upper bounds and its step, from the spec."""
    step = param.step or (1.0 if param.type == "int" else 0.1)
    low = param.minimum if param.minimum is not None else (0.0 if param.optional else -NO_LIMIT)
    high = param.maximum if param.maximum is not None else NO_LIMIT
    return float(low), float(high), float(step)


def digits(param: ParamInfo) -> int:
    """Decimals a number field shows: none for whole numbers, enough for the step."""
    if param.type == "int":
        return 0
    places = 1
    for value in (param.step, param.minimum, param.maximum):
        if value:
            text = f"{abs(value):.6f}".rstrip("0")
            places = max(places, len(text.split(".")[1]) if "." in text else 0)
    return min(places, 6)


def choice_items(param: ParamInfo) -> list[tuple[str, str]]:
    """(id, label) pairs of a choice; an optional one starts with "" for its none_label."""
    items = [("", param.none_label or DEFAULT_TEXT)] if param.optional else []
    for i, choice in enumerate(param.choices or []):
        label = param.choice_labels[i] if i < len(param.choice_labels) else str(choice)
        items.append((json.dumps(choice), label))
    return items


def choice_value(param: ParamInfo, item_id: str) -> Any:
    """A choice's value from its id in `choice_items`; None for the optional "" item."""
    if not item_id:
        return None if param.optional else param.default
    try:
        return json.loads(item_id)
    except ValueError:
        return item_id


def current(param: ParamInfo, options: dict[str, Any]) -> Any:
    """The value a field starts with: the option set, else the backend's default."""
    return options.get(param.name, param.default)


def label_text(param: ParamInfo) -> str:
    return param.label or param.name.replace("_", " ").capitalize()


def parse_options(raw: str) -> dict[str, Any]:
    """The `options` argument as a dict; broken text counts as empty (the form starts over)."""
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def parse_value(param: ParamInfo, text: str) -> Any:
    """A text field's text as the parameter's type; None for an empty field (the default)."""
    text = text.strip()
    if not text:
        return None
    try:
        if param.type == "int":
            value: Any = int(text)
        elif param.type == "float":
            value = float(text)
        elif param.type == "bool":
            value = text.lower() in TRUE_WORDS
        else:
            value = text
    except ValueError:
        kind = "a whole number" if param.type == "int" else "a number"
        raise BadArgument(f"{label_text(param)} must be {kind}, not '{text}'.", "") from None
    if param.choices and value not in param.choices:
        raise BadArgument(f"'{text}' is not one of the choices for {label_text(param)}: "
                          f"{', '.join(str(c) for c in param.choices)}.", "")
    return value


def merge_options(raw: str, params: list[ParamInfo], values: dict[str, Any]) -> str:
    """The new `options` JSON: the form's values that differ from their default, plus any key
    of the old text the form does not show (a script's or another task's)."""
    options = parse_options(raw)
    for param in params:
        value = values.get(param.name)
        if value is None or value == param.default:
            options.pop(param.name, None)
        else:
            options[param.name] = value
    return json.dumps(options, sort_keys=True) if options else ""
