"""/v1/jobs: submit, list, watch, cancel, remove, and fetch results."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from backend.api import transport
from backend.api.deps import ImagesDep, JobsDep, SettingsDep
from backend.api.errors import UnsupportedMediaTypeError, errors_doc
from shared.protocol import (
    ID_PATTERN,
    PNG_MEDIA_TYPE,
    RAW_PIXELS_MEDIA_TYPE,
    JobRequest,
    JobStatus,
)

router = APIRouter(prefix="/v1", tags=["jobs"])

JobId = Annotated[str, Path(pattern=ID_PATTERN, description="the job's id")]
_SUBMIT_ERRORS = errors_doc(
    {
        400: ("protocol_version", "invalid_request"),
        404: ("image_not_found", "model_not_found"),
        408: ("body_timeout",),
        409: ("job_conflict",),
        413: ("image_too_large", "upload_too_large"),
        415: ("unsupported_media_type",),
        422: ("invalid_request", "invalid_parameter", "task_unavailable", "model_format"),
        429: ("queue_full",),
    }
)
_JOB_ERRORS = errors_doc({404: ("job_not_found",), 422: ("invalid_request",)})
_JOB_STATE_ERRORS = errors_doc(
    {404: ("job_not_found",), 409: ("job_state",), 422: ("invalid_request",)}
)


def require_json(request: Request) -> None:
    """A body sent as anything but JSON is refused by its content type, not by its shape."""
    kind = transport.media_type(request)
    if kind != "application/json":
        raise UnsupportedMediaTypeError(
            f"A job must be sent as application/json, not '{kind or 'no content type'}'.",
            "Send the JobRequest as a JSON object with Content-Type: application/json.",
        )


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobStatus,
    responses={
        200: {"model": JobStatus, "description": "the same request was submitted before"},
        **_SUBMIT_ERRORS,
    },
    dependencies=[Depends(require_json)],
    summary="Submit a job",
)
def submit_job(
    job: Annotated[JobRequest, Body()], jobs: JobsDep, images: ImagesDep
) -> JSONResponse:
    """Queue a job on uploaded images. Answers 202 with the job's status; its events go to
    GET /v1/events?client=... . Resubmitting an identical request with the same `id`
    answers 200 with the existing job instead of running it twice."""
    resubmitted = jobs.resubmission(job)  # answered even when its uploads have expired
    if resubmitted is not None:
        return JSONResponse(resubmitted.to_json(), status_code=200)
    pixels = images.get(job.image)
    mask = images.get(job.mask, "mask") if job.mask is not None else None
    named = {name: images.get(image_id, name) for name, image_id in job.images.items()}
    status, created = jobs.submit(job, pixels, mask, named)
    return JSONResponse(status.to_json(), status_code=202 if created else 200)


@router.get(
    "/jobs",
    response_model=list[JobStatus],
    responses=errors_doc({422: ("invalid_request",)}),
    summary="List jobs",
)
def list_jobs(
    jobs: JobsDep,
    settings: SettingsDep,
    client: Annotated[
        str | None,
        Query(
            pattern=ID_PATTERN,
            description="this client's jobs; without it, the jobs sent without a client id "
            "(every job, on a server with a token)",
        ),
    ] = None,
) -> list[dict]:
    """One client's jobs: a reconnecting plug-in finds its unfinished and unfetched jobs here.

    Without a token any local user can call the server, so a listing never shows other
    clients' jobs; with a token the caller holds the server's secret and may list them all."""
    everyone = client is None and settings.token is not None
    return [s.to_json() for s in jobs.list_jobs(client, everyone=everyone)]


@router.get("/jobs/{job_id}", response_model=JobStatus, responses=_JOB_ERRORS, summary="Job status")
def get_job(job_id: JobId, jobs: JobsDep) -> dict:
    return jobs.status(job_id).to_json()


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobStatus,
    responses=_JOB_ERRORS,
    summary="Cancel a job",
)
def cancel_job(job_id: JobId, jobs: JobsDep) -> dict:
    """A queued job is cancelled at once; a running one stops at its next tile or step and
    then sends its 'cancelled' event. Cancelling an ended job changes nothing."""
    return jobs.cancel(job_id).to_json()


@router.delete(
    "/jobs/{job_id}", status_code=204, responses=_JOB_STATE_ERRORS, summary="Remove a job"
)
def remove_job(job_id: JobId, jobs: JobsDep) -> Response:
    """Remove a queued job, or forget an ended one and free its result. A running job must be
    cancelled first (409)."""
    jobs.remove(job_id)
    return Response(status_code=204)


_RESULT_CONTENT = {
    "content": {
        PNG_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        RAW_PIXELS_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
    },
    "description": "the result's pixels; raw pixels carry their shape in the content type",
}


@router.get(
    "/jobs/{job_id}/result",
    response_class=Response,
    responses={200: _RESULT_CONTENT, **_JOB_STATE_ERRORS},
    summary="Fetch a result",
)
def get_result(
    request: Request,
    job_id: JobId,
    jobs: JobsDep,
    settings: SettingsDep,
    image_format: Annotated[
        Literal["raw", "png"] | None,
        Query(
            alias="format",
            description="raw or png; default: raw if Accept names "
            f"{RAW_PIXELS_MEDIA_TYPE}, else png",
        ),
    ] = None,
    output: Annotated[
        str | None,
        Query(max_length=64, description="which output (result.outputs[].name); default the first"),
    ] = None,
) -> Response:
    """One output image, at the size and place given by its `placement` in `result.outputs`.

    Results are kept `result_ttl` seconds after the job ends (default one hour), and
    `fetched_result_ttl` seconds (default five minutes) once fetched, so a broken download can
    be repeated; DELETE /v1/jobs/{id} frees one at once."""
    pixels, _status = jobs.result(job_id, output)
    if transport.choose_format(request, image_format) == "raw":
        return transport.raw_response(pixels)
    return transport.png_response(pixels, settings.png_compress_level)


_PREVIEW_CONTENT = {
    "content": {PNG_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    "description": "the latest intermediate image, as PNG",
}


@router.get(
    "/jobs/{job_id}/preview",
    response_class=Response,
    responses={200: _PREVIEW_CONTENT, **_JOB_STATE_ERRORS},
    summary="The latest preview of a running job",
)
def get_preview(job_id: JobId, jobs: JobsDep) -> Response:
    """An intermediate image a running task offered (a diffusion step, say), as a quick PNG;
    the job's progress events carry the id of the latest in `preview`."""
    return transport.png_response(jobs.preview(job_id), 1)
