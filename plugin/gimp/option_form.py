"""The dialog's form for a task's options as the backend describes them (`ParamInfo`).

Text in, typed values out, and the `options` argument (a JSON object) as the meeting point:
the form starts from it and writes back only what differs from the backend's default, so a
default the backend changes later still applies. Standard library only; dialog.py draws it.
"""

from __future__ import annotations

import json
from typing import Any

from ..shared.protocol import ParamInfo
from .procedures import BadArgument

TRUE_WORDS = ("1", "true", "yes", "on")


def form_params(params: list[ParamInfo], typed: set[str]) -> list[ParamInfo]:
    """The parameters the form shows: those without an argument of their own."""
    return [p for p in params if p.name not in typed]


def parse_options(raw: str) -> dict[str, Any]:
    """The `options` argument as a dict; broken text counts as empty (the form starts over)."""
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def display_text(param: ParamInfo, options: dict[str, Any]) -> str:
    """What the form's field shows: the current option, else empty (the default applies)."""
    value = options.get(param.name)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_value(param: ParamInfo, text: str) -> Any:
    """A field's text as the parameter's type; None for an empty field (the default)."""
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
        raise BadArgument(f"{param.name} must be {kind}, not '{text}'.", "") from None
    if param.choices and value not in param.choices:
        raise BadArgument(f"'{text}' is not one of the choices for {param.name}: "
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
