"""What request handlers get from the app, as typed dependencies (tests override get_settings)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from backend.api.event_hub import EventHub
from backend.api.image_store import ImageStore
from backend.jobs import JobManager
from backend.models.download_queue import DownloadQueue
from backend.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_jobs(request: Request) -> JobManager:
    return request.app.state.jobs


def get_images(request: Request) -> ImageStore:
    return request.app.state.images


def get_downloads(request: Request) -> DownloadQueue:
    return request.app.state.downloads


def get_hub(request: Request) -> EventHub:
    return request.app.state.hub


def is_authenticated(request: Request) -> bool:
    """Set by the guard: True when no token is configured or the right one was sent."""
    return bool(request.scope.get("restora.authenticated", True))


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
ImagesDep = Annotated[ImageStore, Depends(get_images)]
HubDep = Annotated[EventHub, Depends(get_hub)]
DownloadsDep = Annotated[DownloadQueue, Depends(get_downloads)]
AuthenticatedDep = Annotated[bool, Depends(is_authenticated)]
