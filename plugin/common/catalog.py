"""What the backend offers: its tasks, their models and options, as menus and forms need them.

Everything here comes from the backend's own descriptions (`TaskInfo`, `ParamInfo`,
`ModelInfo`): titles, menu order, availability and what to install, the form of each task,
whether it uses the selection and whether it resizes. No task is known by name, so a task
added to the backend appears in the editors without code per task. The last task list seen is
cached (task_cache.py) so an editor can offer the tasks before the backend answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..shared.protocol import Health, ModelInfo, ParamInfo, TaskInfo
from .client import Client
from .settings import Settings

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

    def describe(self) -> str:
        """One line for the docker: version, device, models."""
        h = self.health
        device = h.device_name or h.device or "starting"
        count = sum(1 for m in self.models if m.usable)
        return (f"Connected: Restora {h.version} on {device}, "
                f"{count} model{'s' if count != 1 else ''}")


def applies(param: ParamInfo, model: ModelInfo | None) -> bool:
    """A parameter with `applies_to` shows only for a model of one of those architectures."""
    if not param.applies_to or model is None:
        return True
    return model.architecture in param.applies_to


def fetch_catalog(client: Client) -> Catalog:
    """Connect and read the backend's tasks and models (blocking: call off the UI thread)."""
    health = client.connect()
    return Catalog(health, client.tasks(), client.models())


def model_label(model: ModelInfo) -> str:
    """A model as a list shows it: its friendly label (or file name) and what one run does to
    the size, never a name and a scale that contradict each other."""
    label = getattr(model, "label", "") or model.name
    if model.scale and f"x{model.scale}" not in label.lower():
        return f"{label} (x{model.scale})"
    return label
