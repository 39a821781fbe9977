"""/v1/catalog and /v1/downloads: what the server can download, and downloads from an editor.

The catalog lists every model with its size, licence, traits and whether it is installed; a
download runs on the server's download thread (backend/models/download_queue.py), checked
against the catalog's SHA-256, and the model registry looks again once the file is in place.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from backend.api import transport
from backend.api.deps import DownloadsDep, JobsDep, SettingsDep
from backend.api.errors import UnsupportedMediaTypeError, errors_doc
from backend.errors import InvalidParameterError
from backend.models.catalog import CatalogEntry, load_catalog
from shared.protocol import (
    ID_PATTERN,
    TASK_ID_PATTERN,
    CatalogModelInfo,
    DownloadInfo,
    DownloadRequest,
    ProtocolError,
)

router = APIRouter(prefix="/v1", tags=["downloads"])

DownloadId = Annotated[str, Path(pattern=ID_PATTERN, description="the download's id")]
_DOWNLOAD_ERRORS = errors_doc({404: ("download_not_found",), 422: ("invalid_request",)})


def require_json(request: Request) -> None:
    kind = transport.media_type(request)
    if kind != "application/json":
        raise UnsupportedMediaTypeError(
            f"A download request must be sent as application/json, not "
            f"'{kind or 'no content type'}'.",
            'Send {"name": "...", "accept_licence": false} with Content-Type: application/json.',
        )


@router.get(
    "/catalog",
    response_model=list[CatalogModelInfo],
    responses=errors_doc({422: ("invalid_request",)}),
    summary="Models the server can download",
)
def list_catalog(
    jobs: JobsDep,
    settings: SettingsDep,
    task: Annotated[
        str | None,
        Query(
            pattern=TASK_ID_PATTERN,
            max_length=40,
            description="only models for this catalog task (a task's `catalog_task`)",
        ),
    ] = None,
) -> list[dict]:
    """Every catalog model, with its size, licence, traits and whether its file is in one of
    the server's models folders. Only `verified` ones (pinned SHA-256) download from here."""
    catalog = load_catalog(settings.catalog)
    present = {(kind, path.name) for path, kind in jobs.registry.files()}
    return [
        catalog_model_info(e, (e.folder, e.file) in present).to_json()
        for e in catalog
        if task is None or e.task == task
    ]


@router.post(
    "/downloads",
    status_code=202,
    response_model=DownloadInfo,
    responses={
        200: {"model": DownloadInfo, "description": "the model is being downloaded already"},
        **errors_doc(
            {
                400: ("invalid_request",),
                404: ("model_not_found",),
                408: ("body_timeout",),
                409: ("licence_not_accepted", "unverified_model"),
                415: ("unsupported_media_type",),
                422: ("invalid_request", "invalid_parameter"),
            }
        ),
    },
    dependencies=[Depends(require_json)],
    summary="Download a catalog model",
)
def start_download(
    request: Annotated[DownloadRequest, Body()], downloads: DownloadsDep
) -> JSONResponse:
    """Queue the download of a catalog model into the server's own models folder; 202 with
    its status (200 with the same download when that model is on its way already). A model
    under a non-commercial or use-restricted licence needs `accept_licence: true` (409
    `licence_not_accepted` names the licence); one without a pinned SHA-256 is refused (409
    `unverified_model`). Follow it with GET /v1/downloads/{id}; once it has `finished`,
    /v1/models lists the model."""
    try:
        request.check()
    except ProtocolError as exc:
        raise InvalidParameterError(f"{exc}.", "GET /v1/catalog lists the names.") from None
    info, created = downloads.request(request.name, request.accept_licence)
    return JSONResponse(info.to_json(), status_code=202 if created else 200)


@router.get("/downloads", response_model=list[DownloadInfo], summary="List downloads")
def list_downloads(downloads: DownloadsDep) -> list[dict]:
    """The downloads since the server started (the oldest ended ones are forgotten)."""
    return [d.to_json() for d in downloads.list()]


@router.get(
    "/downloads/{download_id}",
    response_model=DownloadInfo,
    responses=_DOWNLOAD_ERRORS,
    summary="Download status",
)
def get_download(download_id: DownloadId, downloads: DownloadsDep) -> dict:
    """Its state, bytes done and total; a `failed` one carries the error (checksum mismatch,
    host unreachable, disk full), and nothing of it is installed."""
    return downloads.get(download_id).to_json()


@router.delete(
    "/downloads/{download_id}",
    response_model=DownloadInfo,
    responses=_DOWNLOAD_ERRORS,
    summary="Cancel a download",
)
def cancel_download(download_id: DownloadId, downloads: DownloadsDep) -> dict:
    """Stop a download: a queued one at once, a running one at its next read. Nothing is
    installed; what arrived stays in `<file>.part`, so asking again resumes it. An ended
    download is left as it is."""
    return downloads.cancel(download_id).to_json()


def catalog_model_info(entry: CatalogEntry, installed: bool) -> CatalogModelInfo:
    return CatalogModelInfo(
        name=entry.name,
        task=entry.task,
        label=entry.display_label,
        description=entry.description,
        size_bytes=entry.size,
        licence=entry.licence,
        non_commercial=entry.non_commercial,
        restricted_use=entry.restricted_use,
        traits=list(entry.traits),
        recommended=entry.recommended,
        installed=installed,
        verified=entry.verified,
        family=entry.family,
        folder=entry.folder,
        file=entry.file,
    )
