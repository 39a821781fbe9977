"""GET /v1/models and GET /v1/tasks: what the server can run, so plug-ins build their menus."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import JobsDep
from backend.api.errors import errors_doc
from backend.jobs import TASKS, all_task_infos, missing_model_hint, output_scale
from backend.models.registry import ModelEntry
from shared.protocol import ModelInfo, Task, TaskInfo

router = APIRouter(prefix="/v1", tags=["models"])


@router.get(
    "/models",
    response_model=list[ModelInfo],
    responses=errors_doc({422: ("invalid_request",)}),
    summary="Models, by task",
)
def list_models(
    jobs: JobsDep,
    task: Annotated[Task | None, Query(description="only models that can run this task")] = None,
    refresh: Annotated[bool, Query(description="look for new model files first")] = False,
) -> list[dict]:
    """Every model file found, with the tasks it can run and what it supports.

    Unusable files are listed with the reason (with `task`, only usable models are listed).
    """
    loaded = set(jobs.models.loaded_names())
    infos = [_model_info(e, e.name in loaded) for e in jobs.model_entries(refresh=refresh)]
    if task is not None:
        infos = [m for m in infos if task in m.tasks]
    return [m.to_json() for m in infos]


@router.get("/tasks", response_model=list[TaskInfo], summary="Tasks and their parameters")
def list_tasks(jobs: JobsDep) -> list[dict]:
    """Every task of the protocol; `available` says whether this server runs it (a task it
    runs but has no model for is unavailable, with `needs_model`, and `reason` and `hint` say
    what to install), and `params` describes the task's parameters (name, type, default,
    choices) for a plug-in's form."""
    infos = all_task_infos()
    for info in infos:
        if not info.available:
            info.reason = "This version of the server does not run this task."
        elif info.default_model is None:
            spec = TASKS[info.task]
            info.default_model = jobs.default_model_name(spec)
            if info.default_model is None:
                info.available, info.needs_model = False, True
                info.reason = f"It needs a model, and no {spec.folders[0]} model is installed."
                info.hint = missing_model_hint(spec)
    return [t.to_json() for t in infos]


def _model_info(e: ModelEntry, loaded: bool) -> ModelInfo:
    return ModelInfo(
        name=e.name,
        tasks=[s.task for s in TASKS.values() if s.accepts(e)],
        folder=e.folder,
        usable=e.usable,
        reason=e.reason,
        architecture=e.architecture,
        purpose=e.purpose,
        scale=output_scale(e),
        network_scale=e.scale,
        input_channels=e.input_channels,
        output_channels=e.output_channels,
        size_minimum=e.size_minimum,
        size_multiple_of=e.size_multiple_of,
        size_square=e.size_square,
        tiling=e.tiling,
        dtypes=list(e.dtypes),
        tags=list(e.tags),
        size_bytes=e.size_bytes,
        loaded=loaded,
    )
