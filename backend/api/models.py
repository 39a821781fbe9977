"""GET /v1/models and GET /v1/tasks: what the server can run, so plug-ins build their menus."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import JobsDep, SettingsDep
from backend.api.errors import errors_doc
from backend.errors import RestoraError
from backend.models.catalog import Catalog, load_catalog
from backend.models.labels import ModelLabels, ModelWords
from backend.models.registry import ModelEntry
from shared.protocol import TASK_ID_PATTERN, ModelInfo, TaskInfo

router = APIRouter(prefix="/v1", tags=["models"])


@router.get(
    "/models",
    response_model=list[ModelInfo],
    responses=errors_doc({422: ("invalid_request",)}),
    summary="Models, by task",
)
def list_models(
    jobs: JobsDep,
    settings: SettingsDep,
    task: Annotated[
        str | None,
        Query(pattern=TASK_ID_PATTERN, max_length=40, description="only models for this task"),
    ] = None,
    refresh: Annotated[bool, Query(description="look for new model files first")] = False,
) -> list[dict]:
    """Every model file found, with the tasks it can run and what it supports, and words for
    people: a catalog model's label, description and traits (else a label from its name).

    Unusable files are listed with the reason (with `task`, only usable models are listed).
    """
    loaded = set(jobs.models.loaded_names())
    labels = ModelLabels(_catalog(settings.catalog), jobs.registry.folders)
    infos = [
        _model_info(e, e.name in loaded, jobs.tasks_for(e), labels.words(e.name, e.folder, e.path))
        for e in jobs.model_entries(refresh=refresh)
    ]
    if task is not None:
        infos = [m for m in infos if task in m.tasks]
    return [m.to_json() for m in infos]


@router.get("/tasks", response_model=list[TaskInfo], summary="Tasks and their parameters")
def list_tasks(jobs: JobsDep) -> list[dict]:
    """Every task this server knows, in menu order: words for people, the inputs it takes, the
    outputs it makes, and each parameter's type, default, range, unit, label, help and widget,
    so a plug-in builds its menus and forms from this alone. `available` is false, with a
    `reason` and a `hint`, when a package or a model the task needs is missing."""
    return [t.to_json() for t in jobs.task_infos()]


def _catalog(path: str | None) -> Catalog | None:
    try:
        return load_catalog(path)
    except RestoraError:  # a broken catalog file costs the labels, not the listing
        return None


def _model_info(e: ModelEntry, loaded: bool, tasks: list[str], words: ModelWords) -> ModelInfo:
    return ModelInfo(
        name=e.name,
        tasks=tasks,
        folder=e.folder,
        usable=e.usable,
        reason=e.reason,
        architecture=e.architecture,
        purpose=e.purpose,
        scale=e.output_scale or e.scale,  # what the file delivers (ncnn x2: x4 net + resize)
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
        label=words.label,
        description=words.description,
        traits=list(words.traits),
        catalog_name=words.catalog_name,
    )
