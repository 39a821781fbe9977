"""The FastAPI application: routers, the request guard, error handlers, and the lifespan that
builds the heavy objects (registry, model cache, worker, event hub) on app.state.

Importing this module imports no torch: the worker thread imports it when it chooses the device.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from backend import __version__, paths
from backend.api import downloads, events, health, images, jobs, models
from backend.api.errors import install_error_handlers
from backend.api.event_hub import EventHub
from backend.api.image_store import ImageStore
from backend.api.security import OPEN_PATHS, RequestGuard
from backend.jobs import JobManager
from backend.model_cache import ModelCache
from backend.models.catalog import load_catalog
from backend.models.download_queue import DownloadQueue
from backend.models.registry import Registry
from backend.settings import Settings
from backend.tasks.registry import TaskRegistry, default_registry
from shared.protocol import PROTOCOL_VERSION

DESCRIPTION = f"""
The local backend of the Restora plug-ins for Krita and GIMP (protocol {PROTOCOL_VERSION}).

1. Upload the image (and the selection mask) with `POST /v1/images`: PNG, or raw pixels.
2. Submit a job naming them with `POST /v1/jobs`.
3. Follow `GET /v1/events?client=ID` (server-sent events) or poll `GET /v1/jobs/{{id}}`.
4. Fetch `GET /v1/jobs/{{id}}/result` and place it at `result.placement`.

One worker runs the jobs one at a time. With a token, send `Authorization: Bearer TOKEN`.

A task with no model says `needs_model`: `GET /v1/catalog?task=...` lists what to download,
`POST /v1/downloads` fetches one into the server's models folder, and `GET
/v1/downloads/{{id}}` follows it until /v1/models lists the model.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    hub = EventHub(settings.event_history)
    hub.bind(asyncio.get_running_loop())
    registry = Registry(paths.models_dirs(settings.models_dirs))
    cache = ModelCache(
        settings.device,
        settings.precision,
        settings.max_loaded_models,
        device_budget_bytes=settings.model_device_bytes or None,
        host_budget_bytes=settings.model_host_bytes or None,
    )
    manager = JobManager(settings, registry, cache, hub.publish, app.state.tasks)
    app.state.hub = hub
    app.state.images = ImageStore(settings.image_memory_bytes, settings.image_ttl)
    app.state.jobs = manager
    app.state.downloads = _download_queue(settings, registry, manager)
    manager.start()
    try:
        yield
    finally:
        hub.close()
        await asyncio.to_thread(app.state.downloads.close)
        await asyncio.to_thread(manager.stop)


def _download_queue(settings: Settings, registry: Registry, manager: JobManager) -> DownloadQueue:
    """Downloads go to Restora's own models folder (the registry's last); an intact copy in
    any of the registry's folders counts as installed."""

    def installed(path: Path) -> str:
        target = path.resolve()
        for entry in manager.model_entries(refresh=True):  # the registry looks again
            if Path(entry.path).resolve() == target:
                return entry.name
        return path.stem

    return DownloadQueue(
        paths.default_models_dir(),
        lambda: load_catalog(settings.catalog),
        search_roots=registry.folders,
        base_url=settings.catalog_base_url,
        on_installed=installed,
    )


def create_app(settings: Settings | None = None, tasks: TaskRegistry | None = None) -> FastAPI:
    """The app; `tasks` defaults to every task module in backend/tasks/."""
    settings = settings or Settings()
    app = FastAPI(title="Restora", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.tasks = tasks if tasks is not None else default_registry()
    install_error_handlers(app)
    for module in (health, models, images, jobs, events, downloads):
        app.include_router(module.router)
    app.add_middleware(RequestGuard, settings=settings)
    _describe_guard(app, settings)
    return app


#: what the guard answers on every operation (security.py), whatever the route
_GUARD_ERRORS: dict[str, tuple[str, ...]] = {
    "403": ("forbidden_host", "forbidden_origin"),
    "413": ("upload_too_large",),
}
_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}


def _describe_guard(app: FastAPI, settings: Settings) -> None:
    """Make the OpenAPI document say what the guard does: the bearer token only when this
    server has one, and the errors it answers before any route runs."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            if settings.token:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "this server was started with a token",
                    }
                }
            for path, ops in schema.get("paths", {}).items():
                for op in ops.values():
                    errors = dict(_GUARD_ERRORS)
                    if settings.token and path not in OPEN_PATHS:
                        op["security"] = [{"bearer": []}]
                        errors["401"] = ("unauthorized",)
                    _add_errors(op.setdefault("responses", {}), errors)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_errors(responses: dict[str, Any], errors: dict[str, tuple[str, ...]]) -> None:
    # FastAPI's own 422 body (HTTPValidationError) is never sent: the handler answers ours
    default_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
    if "HTTPValidationError" in str(default_422.get("schema", "")):
        responses["422"] = _error_doc(("invalid_request",))
    for status, codes in errors.items():
        if status not in responses:
            responses[status] = _error_doc(codes)
            continue
        described = responses[status].get("description", "")
        extra = [f"`{c}`" for c in codes if f"`{c}`" not in described]
        if extra:
            responses[status]["description"] = f"{described}, {', '.join(extra)}"


def _error_doc(codes: tuple[str, ...]) -> dict[str, Any]:
    return {
        "description": "error codes: " + ", ".join(f"`{c}`" for c in codes),
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    }
