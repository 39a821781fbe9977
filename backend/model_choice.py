"""Which installed model a task runs: the one named, the slot's default, or the one preferred.

The server and the CLI choose the same way, and say the same thing when nothing fits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from backend.errors import InvalidParameterError, ModelNotFoundError, RestoraError
from backend.models.registry import ModelEntry, preferred_entry
from backend.tasks.spec import ModelSlot, TaskSpec


def slot_accepts(slot: ModelSlot, entry: ModelEntry) -> bool:
    return entry.usable and entry.folder in slot.folders and entry.purpose in slot.purposes


def choose_model(
    spec: TaskSpec,
    slot: ModelSlot,
    name: str | None,
    entries: Callable[[], Iterable[ModelEntry]],
    find: Callable[[str], ModelEntry],
    server: bool = False,
) -> ModelEntry:
    """The entry of model `name` for `slot`; with no name, the slot's default when it is
    installed, else the installed model that fits which the registry prefers."""
    if not name:
        entry = default_entry(slot, entries())
        if entry is None:
            raise ModelNotFoundError(
                f"No model for {spec.title} is installed (it looks in {slot.folders[0]}/).",
                missing_model_hint(slot, server),
            )
        return entry
    entry = find(name)
    if not slot_accepts(slot, entry):
        raise InvalidParameterError(
            f"Model '{entry.name}' is a {entry.purpose or 'non-spandrel'} model (in "
            f"{entry.folder}/), which {spec.title} cannot run: it needs a "
            f"{' or '.join(slot.purposes)} model.",
            f"`restora models list` (or GET /v1/models?task={spec.id}) lists the models.",
        )
    return entry


def default_entry(slot: ModelSlot, entries: Iterable[ModelEntry]) -> ModelEntry | None:
    fitting = [e for e in entries if slot_accepts(slot, e)]
    chosen = next((e for e in fitting if e.name == slot.default), None)
    return chosen or preferred_entry(fitting)


def missing_model_hint(slot: ModelSlot, server: bool = False) -> str:
    """What to install for a slot that has no model: from the shipped catalog's entries for
    the task, or else the spec's own words; a server also needs to look again."""
    from backend.models.catalog import load_catalog

    after = (
        "then restart `restora serve` (or list GET /v1/models?refresh=true)."
        if server
        else "then run the command again."
    )
    try:
        found = load_catalog().by_task(slot.catalog_task) if slot.catalog_task else []
    except RestoraError:  # a broken RESTORA_CATALOG must not break the task list
        found = []
    folder = slot.folders[0]
    if not found:
        return slot.missing_hint or f"Put a model for it in the {folder} folder, {after}"
    families = list(dict.fromkeys(e.family for e in found))
    named = ", ".join(families[:-1]) + f" or {families[-1]}" if len(families) > 1 else families[0]
    suggested = next((e for e in found if not e.needs_consent), found[0])
    return (
        f"Put a {named} model in the {folder} folder, or run "
        f"`restora models download {suggested.name}`, {after}"
    )
