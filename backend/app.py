"""The FastAPI application: routers, the request guard, error handlers, and the lifespan that
builds the heavy objects (registry, model cache, worker, event hub) on app.state.

Importing this module imports no torch: the worker thread imports it when it chooses the device.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from backend import __version__, paths
from backend.api import events, health, images, jobs, models
from backend.api.errors import install_error_handlers
from backend.api.event_hub import EventHub
from backend.api.image_store import ImageStore
from backend.api.security import OPEN_PATHS, RequestGuard
from backend.jobs import JobManager
from backend.model_cache import ModelCache
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
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    hub = EventHub(settings.event_history)
    hub.bind(asyncio.get_running_loop())
    registry = Registry(paths.models_dirs(settings.models_dirs))
    cache = ModelCache(settings.device, settings.precision, settings.max_loaded_models)
    manager = JobManager(settings, registry, cache, hub.publish, app.state.tasks)
    app.state.hub = hub
    app.state.images = ImageStore(settings.image_memory_bytes, settings.image_ttl)
    app.state.jobs = manager
    manager.start()
    try:
        yield
    finally:
        hub.close()
        await asyncio.to_thread(manager.stop)


def create_app(settings: Settings | None = None, tasks: TaskRegistry | None = None) -> FastAPI:
    """The app; `tasks` defaults to every task module in backend/tasks/."""
    settings = settings or Settings()
    app = FastAPI(title="Restora", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.tasks = tasks if tasks is not None else default_registry()
    install_error_handlers(app)
    for module in (health, models, images, jobs, events):
        app.include_router(module.router)
    app.add_middleware(RequestGuard, settings=settings)
    _describe_token(app)
    return app


def _describe_token(app: FastAPI) -> None:
    """Declare the bearer token in the OpenAPI document, so /docs offers to send it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "needed when the server was started with --token",
                }
            }
            for path, ops in schema.get("paths", {}).items():
                if path in OPEN_PATHS:
                    continue
                for op in ops.values():
                    op["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
