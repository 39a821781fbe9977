"""What the backend offers: its tasks, their models and options, as menus and forms need them.

Everything here comes from the backend's own descriptions (`TaskInfo`, `ParamInfo`,
`ModelInfo`): titles, menu order, availability and what to install, the form of each task,
whether it uses the selection and whether it resizes. No task is known by name, so a task
added to the backend appears in the editors without code per task. The last task list seen is
cached (task_cache.py) so an editor can offer the tasks before the backend answers.

Also here: the words a model list shows (`model_label`), a task's presets and what choosing
one changes (`apply_preset`), and the download to offer when a task has no model
(`Catalog.recommended_download`, `describe_download`, `licence_needs_consent`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..shared.protocol import CatalogModelInfo, Health, ModelInfo, ParamInfo, PresetInfo, TaskInfo
from .client import Client
from .settings import SIZE_PARAMS, Settings

#: what a task's mask mode means for the selection
MASK_OPTIONAL, MASK_REQUIRED, MASK_IGNORED = "optional", "required", "ignored"
GENERIC_MODEL_HINT = ("Download one with the Download button, or put a model file for it in "
                      "Restora's models folder.")


def task_title(info: TaskInfo | None, task: str = "") -> str:
    """The backend's title of a task; its id, readable, when the backend gave none."""
    if info is not None and info.title:
        return info.title
    name = info.task if info is not None else task
    return name.replace("-", " ").capitalize()


def task_action_id(task: str) -> str:
    """The editor action id of "run this task" (stable: users bind shortcuts to it)."""
    return "restora_task_" + task.replace("-", "_")


def resizes_now(info: TaskInfo | None, options: dict[str, Any]) -> bool:
    """Whether the task, with these options, makes the image larger: a task that can resize
    (HYPIR, an upscaler) at scale 1 keeps the size, so it may work on a selection in place.
    A scale left unset means the task's default (None: the model's own, which resizes)."""
    if info is None or not info.resizes:
        return False
    sizes = {p.name: p for p in info.params if p.name in SIZE_PARAMS}
    if not sizes:
        return True  # it resizes, and no option says by how much
    for name, param in sizes.items():
        value = options.get(name, param.default)
        if name == "scale":
            if value is None:
                return True
            try:
                if abs(float(value) - 1.0) > 1e-9:
                    return True
            except (TypeError, ValueError):
                return True
        elif value is not None:
            return True  # a width asked for
    return False


def param_label(param: ParamInfo) -> str:
    return param.label or param.name.replace("_", " ").capitalize()


def missing_model_hint(info: TaskInfo | None) -> str:
    return (info.hint if info is not None and info.hint else "") or GENERIC_MODEL_HINT


def ordered(tasks: list[TaskInfo]) -> list[TaskInfo]:
    """Menu order: the backend's `order`, then the title."""
    return sorted(tasks, key=lambda t: (t.order, task_title(t)))


def dropped_note(title: str, keys: list[str]) -> str:
    """What the user reads when saved options of a task were dropped."""
    quoted = ", ".join(f"'{k}'" for k in keys)
    noun = "option" if len(keys) == 1 else "options"
    return f"Dropped the saved {noun} {quoted} that {title} does not have."


def forget_unknown_options(settings: Settings, catalog: Catalog) -> tuple[Settings, list[str]]:
    """The settings without options the backend's tasks do not declare, and a note for each
    task that lost some (older versions saved one task's options under another)."""
    cleaned, dropped = settings.without_unknown_options(catalog.declared_params())
    return cleaned, [dropped_note(catalog.title(task), keys) for task, keys in dropped.items()]


@dataclass
class Catalog:
    health: Health
    tasks: list[TaskInfo]
    models: list[ModelInfo]
    #: what the backend can download (GET /v1/catalog); empty from a backend without downloads
    downloads: list[CatalogModelInfo] = field(default_factory=list)

    def available_tasks(self) -> list[TaskInfo]:
        """The tasks the backend runs now, in menu order; one that only lacks a model is kept,
        so it says what to get."""
        return [t for t in ordered(self.tasks) if t.available or t.needs_model]

    def task_info(self, task: str) -> TaskInfo | None:
        return next((t for t in self.tasks if t.task == task), None)

    def title(self, task: str) -> str:
        return task_title(self.task_info(task), task)

    def offers(self, task: str) -> bool:
        info = self.task_info(task)
        return info is not None and (info.available or info.needs_model)

    def pick_task(self, wanted: str) -> str | None:
        """The task an action without its own runs: the one chosen, else the first offered."""
        if wanted:
            return wanted
        tasks = self.available_tasks()
        return tasks[0].task if tasks else None

    def takes_model(self, task: str) -> bool:
        """Whether the task runs a model the user chooses (a test or edit task may not)."""
        info = self.task_info(task)
        if info is None:
            return True
        return bool(info.default_model or info.catalog_task or self.models_for(task))

    def models_for(self, task: str) -> list[ModelInfo]:
        return [m for m in self.models if m.usable and task in m.tasks]

    def models_of(self, purposes: list[str]) -> list[ModelInfo]:
        """Models for a parameter of widget "model": those of one of these purposes."""
        return [m for m in self.models if m.usable and (not purposes or m.purpose in purposes)]

    def model_info(self, name: str | None) -> ModelInfo | None:
        return next((m for m in self.models if m.name == name), None) if name else None

    def default_model(self, task: str) -> str | None:
        """The backend's default model for the task when it has it, else its first one."""
        names = [m.name for m in self.models_for(task)]
        info = self.task_info(task)
        if info is not None and info.default_model in names:
            return info.default_model
        return names[0] if names else None

    def resolve_model(self, task: str, wanted: str | None) -> str | None:
        """The user's model if the backend has it, else the default."""
        if wanted and any(m.name == wanted for m in self.models_for(task)):
            return wanted
        return self.default_model(task)

    def params(self, task: str) -> list[ParamInfo]:
        info = self.task_info(task)
        return list(info.params) if info is not None else []

    def shown_params(self, task: str, model: str | None) -> list[ParamInfo]:
        """The task's parameters that apply to this model (`applies_to` names architectures;
        an unknown model shows them all)."""
        info = self.model_info(model or self.default_model(task))
        return [p for p in self.params(task) if applies(p, info)]

    def declared_params(self) -> dict[str, set[str]]:
        """Each task the backend runs, by id, with the names of its parameters (a task it
        only lists comes later: its parameters are not known yet)."""
        runs = [t for t in self.tasks if t.available or t.needs_model]
        return {t.task: {p.name for p in t.params} for t in runs}

    def presets(self, task: str) -> list[PresetInfo]:
        info = self.task_info(task)
        return list(info.presets) if info is not None else []

    def recommended_download(self, task: str) -> CatalogModelInfo | None:
        """The model to offer for a task that has none: the catalog's recommended one for the
        task's catalog_task when it is not installed, else the first that is not. None when
        the task has a usable model, or nothing to download (only models with a pinned hash
        download from an editor)."""
        info = self.task_info(task)
        if info is None or not info.catalog_task or self.models_for(task):
            return None
        offered = [d for d in self.downloads
                   if d.task == info.catalog_task and not d.installed and d.verified]
        return next((d for d in offered if d.recommended), offered[0] if offered else None)

    def describe(self) -> str:
        """One line for the docker: version, device, models."""
        h = self.health
        device = h.device_name or h.device or "starting"
        count = sum(1 for m in self.models if m.usable)
        return (f"Connected: Restora {h.version} on {device}, "
                f"{count} model{'s' if count != 1 else ''}")


#: the catalog's trait words as a model list reads them
TRAIT_WORDS = {
    "photo": "photo",
    "illustration": "illustration",
    "faces": "faces",
    "old-photo": "old photos",
    "fast": "fast",
    "slow": "slow",
    "best": "best quality",
    "detail": "fine detail",
    "gentle": "gentle",
}
_SCALE_WORD = re.compile(r"(?<![a-z0-9])(?:x(\d+)|(\d+)x)(?![a-z0-9])", re.IGNORECASE)


def model_label(model: ModelInfo) -> str:
    """How a model list names a model: "Real-ESRGAN x4plus — photo, best quality (x4)".

    The backend's label (else the name), what it is good at, and the scale it delivers. A
    name that says the scale already keeps it; one that says another scale than the model
    delivers (an imported x4 network resized to x2, say) loses that word, so the list never
    reads "name-x2 (x4)"."""
    label = model.label or model.name
    scale = model.scale
    if scale > 1:
        said = {int(a or b) for a, b in _SCALE_WORD.findall(label)}
        if said and said != {scale}:
            label = _SCALE_WORD.sub("", label)
            label = re.sub(r"[\s_-]{2,}", lambda m: m.group(0)[0], label).strip(" -_") or model.name
            said = set()
    words = [TRAIT_WORDS.get(t, t.replace("-", " ")) for t in model.traits]
    text = f"{label} — {', '.join(words)}" if words else label
    return f"{text} (x{scale})" if scale > 1 and not said else text


def apply_preset(catalog: Catalog, task: str, preset_name: str,
                 options: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """What choosing a preset changes: (the model to choose, or None to keep the current one;
    the new options). The options any of the task's presets sets go back to their defaults
    first, so going from one preset to another never keeps the first one's values; then the
    preset's own values are set. With model traits, the model is the task's default when it
    has them all, else the first usable model that does (None when no installed model has)."""
    presets = catalog.presets(task)
    preset = next((p for p in presets if p.name == preset_name), None)
    new = dict(options)
    if preset is None:
        return None, new
    defaults = {p.name: p.default for p in catalog.params(task)}
    for other in presets:
        for key in other.params:
            if key in defaults:
                new[key] = defaults[key]
    new.update(preset.params)
    if not preset.model_traits:
        return None, new
    wanted = set(preset.model_traits)
    fitting = [m.name for m in catalog.models_for(task) if wanted <= set(m.traits)]
    default = catalog.default_model(task)
    return (default if default in fitting else (fitting[0] if fitting else None)), new


def licence_needs_consent(entry: CatalogModelInfo) -> bool:
    """A non-commercial or use-restricted licence is shown and accepted before downloading."""
    return entry.non_commercial or entry.restricted_use


def licence_text(entry: CatalogModelInfo) -> str:
    """The licence and what it limits: "CC-BY-NC-SA-4.0 (non-commercial use only)"."""
    licence = entry.licence or "an unknown licence"
    if entry.non_commercial:
        return f"{licence} (non-commercial use only)"
    if entry.restricted_use:
        return f"{licence} (use restrictions apply)"
    return licence


def describe_download(entry: CatalogModelInfo) -> str:
    """One line for a download button: "Real-ESRGAN x4plus, 64 MB, BSD-3-Clause"."""
    return f"{entry.label or entry.name}, {size_text(entry.size_bytes)}, {licence_text(entry)}"


def consent_question(entry: CatalogModelInfo) -> str:
    """What to ask before downloading a model whose licence needs consent."""
    return (f"{entry.label or entry.name} is published under {licence_text(entry)}. Download "
            "it and accept this licence?")


def size_text(size: int | None) -> str:
    """Bytes as a person reads a download's size (binary units, as file managers show)."""
    if size is None:
        return "size unknown"
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f} GB"
    if size >= 1 << 20:
        return f"{size / (1 << 20):.0f} MB"
    return f"{max(1, round(size / 1024))} kB"


def applies(param: ParamInfo, model: ModelInfo | None) -> bool:
    """A parameter with `applies_to` shows only for a model of one of those architectures."""
    if not param.applies_to or model is None:
        return True
    return model.architecture in param.applies_to


def fetch_catalog(client: Client) -> Catalog:
    """Connect and read the backend's tasks, models and downloads (blocking: call off the UI
    thread)."""
    health = client.connect()
    return Catalog(health, client.tasks(), client.models(), client.catalog_models())


#: how the editors group tasks, in this order, and what each group means for the picture
GROUPS = (
    ("upscale", "Make bigger", "Enlarges the image."),
    ("restore", "Restore", "Keeps the original and repairs it."),
    ("enhance", "Enhance", "Redraws details with a diffusion model: it can change them."),
    ("edit", "Edit by instruction", "Changes the image as a sentence says."),
)


def group_words(group: str) -> tuple[str, str]:
    """A group's name and what it means, for a header or a tooltip."""
    for key, name, meaning in GROUPS:
        if key == group:
            return name, meaning
    return group.capitalize(), ""


def grouped(tasks: list[TaskInfo]) -> list[tuple[str, list[TaskInfo]]]:
    """Tasks by group (restore keeps the original, enhance redraws), groups in GROUPS' order
    and unknown ones after; within a group, the order given."""
    keys = [key for key, _, _ in GROUPS]
    groups: dict[str, list[TaskInfo]] = {}
    for task in tasks:
        groups.setdefault(task.group, []).append(task)
    order = sorted(groups, key=lambda g: (keys.index(g) if g in keys else len(keys), g))
    return [(g, groups[g]) for g in order]
