"""What the backend offers: its tasks, their models and options, as menus and forms need them.

The plug-ins build their task actions and option forms from this, so a task added to the
backend appears in the editors without code per task.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..shared.protocol import Health, ModelInfo, ParamInfo, Task, TaskInfo
from .client import Client
from .settings import Settings

TASK_TITLES = {
    Task.UPSCALE: "Upscale",
    Task.FACE_RESTORE: "Restore faces",
    Task.REFINE: "Refine",
    Task.TILED_REFINE: "Refine in tiles",
    Task.INSTRUCT_EDIT: "Edit by instruction",
    Task.COLORIZE: "Colorize",
    Task.INPAINT: "Inpaint",
    Task.DENOISE: "Denoise",
}

#: options the docker shows for every task, with a label; the rest keep the backend's names
PARAM_LABELS = {"scale": "Scale", "tile": "Tile size", "overlap": "Tile overlap",
                "alpha": "Transparency", "strength": "Strength", "width": "Width"}


#: what to install when the backend has no model for a task
MISSING_MODEL_HINTS = {
    Task.UPSCALE: "Install one with `restora models install-defaults`, or put a model file in "
                  "the backend's upscale_models folder, then restart `restora serve`.",
    Task.FACE_RESTORE: "Put a GFPGAN, CodeFormer or RestoreFormer model in the backend's "
                       "facerestore_models folder (or run `restora models download "
                       "gfpgan-v1.4`), then restart `restora serve`.",
}


def missing_model_hint(task: Task) -> str:
    return MISSING_MODEL_HINTS.get(task, "Put a model for it in the backend's models folder "
                                         "(see `restora models catalog`), then restart "
                                         "`restora serve`.")


def task_title(task: Task) -> str:
    return TASK_TITLES.get(task, task.value.replace("-", " ").capitalize())


def task_action_id(task: Task) -> str:
    """The editor action id of "run this task" (stable: users bind shortcuts to it)."""
    return "restora_task_" + task.value.replace("-", "_")


def param_label(param: ParamInfo) -> str:
    return PARAM_LABELS.get(param.name, param.name.replace("_", " ").capitalize())


def dropped_note(task: Task | str, keys: list[str]) -> str:
    """What the user reads when saved options of a task were dropped."""
    try:
        title = task_title(Task(task))
    except ValueError:
        title = str(task)
    quoted = ", ".join(f"'{k}'" for k in keys)
    noun = "option" if len(keys) == 1 else "options"
    return f"Dropped the saved {noun} {quoted} that {title} does not have."


def forget_unknown_options(settings: Settings, catalog: Catalog) -> tuple[Settings, list[str]]:
    """The settings without options the backend's tasks do not declare, and a note for each
    task that lost some (older versions saved one task's options under another)."""
    cleaned, dropped = settings.without_unknown_options(catalog.declared_params())
    return cleaned, [dropped_note(task, keys) for task, keys in dropped.items()]


@dataclass
class Catalog:
    health: Health
    tasks: list[TaskInfo]
    models: list[ModelInfo]

    def available_tasks(self) -> list[Task]:
        """Tasks the backend runs; one that only lacks a model is kept, so it says what to get."""
        return [t.task for t in self.tasks if t.available or t.needs_model]

    def task_info(self, task: Task) -> TaskInfo | None:
        return next((t for t in self.tasks if t.task == task), None)

    def offers(self, task: Task) -> bool:
        info = self.task_info(task)
        return info is not None and (info.available or info.needs_model)

    def models_for(self, task: Task) -> list[ModelInfo]:
        return [m for m in self.models if m.usable and task in m.tasks]

    def default_model(self, task: Task) -> str | None:
        """The backend's default model for the task when it has it, else its first one."""
        names = [m.name for m in self.models_for(task)]
        info = self.task_info(task)
        if info is not None and info.default_model in names:
            return info.default_model
        return names[0] if names else None

    def resolve_model(self, task: Task, wanted: str | None) -> str | None:
        """The user's model if the backend has it, else the default."""
        if wanted and any(m.name == wanted for m in self.models_for(task)):
            return wanted
        return self.default_model(task)

    def params(self, task: Task) -> list[ParamInfo]:
        info = self.task_info(task)
        return list(info.params) if info is not None else []

    def declared_params(self) -> dict[str, set[str]]:
        """Each task the backend runs (or would, given a model), by name, with the names of its
        parameters (a task it only lists comes later: its parameters are not known yet)."""
        runs = [t for t in self.tasks if t.available or t.needs_model]
        return {t.task.value: {p.name for p in t.params} for t in runs}

    def describe(self) -> str:
        """One line for the docker: version, device, models."""
        h = self.health
        device = h.device_name or h.device or "starting"
        count = sum(1 for m in self.models if m.usable)
        return (f"Connected: Restora {h.version} on {device}, "
                f"{count} model{'s' if count != 1 else ''}")


def fetch_catalog(client: Client) -> Catalog:
    """Connect and read the backend's tasks and models (blocking: call off the UI thread)."""
    health = client.connect()
    return Catalog(health, client.tasks(), client.models())
