"""GET /v1/health: versions, device, memory and queue, answered without touching the worker."""

from __future__ import annotations

from fastapi import APIRouter

from backend import __version__
from backend.api.deps import AuthenticatedDep, JobsDep, SettingsDep
from shared.protocol import PROTOCOL_VERSION, Health, MemoryInfo

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/health", response_model=Health, summary="Server versions, device and queue")
def health(settings: SettingsDep, jobs: JobsDep, authenticated: AuthenticatedDep) -> dict:
    """Always open; without the token (when the server has one) only the versions are given.

    A plug-in checks `protocol_version` on connect; `instance` changes on every start, so a
    client that sees a new one knows its old job ids are gone.
    """
    base = Health(
        status="ok",
        protocol_version=PROTOCOL_VERSION,
        version=__version__,
        auth_required=settings.token is not None,
    )
    if not authenticated:
        return base.to_json()
    queued, running = jobs.counts()
    base.instance = jobs.instance
    base.ready = jobs.ready
    base.device = jobs.device
    base.device_name = jobs.device_name
    base.memory = _memory(jobs.device)
    base.queued = queued
    base.running = running
    base.loaded_models = jobs.models.loaded_names()
    base.tasks = jobs.tasks.ids()
    base.max_upload_bytes = settings.max_upload_bytes
    base.max_pixels = settings.max_pixels
    return base.to_json()


def _memory(device: str | None) -> MemoryInfo:
    if device is None:  # the worker has not chosen the device yet
        return MemoryInfo()
    from backend.devices import free_memory, resolve_device

    ram = free_memory(resolve_device("cpu"))
    if device == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info()
        return MemoryInfo(device_total=int(total), device_free=int(free), ram_available=ram)
    if device == "cpu":
        return MemoryInfo(device_free=ram, ram_available=ram)
    return MemoryInfo(device_free=free_memory(resolve_device(device)), ram_available=ram)
