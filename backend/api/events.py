"""GET /v1/events: a client's job events as server-sent events (text/event-stream).

Each event is `id: SEQ`, `event: TYPE` and `data: {JobEvent as JSON}`; a comment line is sent
every keepalive period so a dead connection is noticed. The stream starts with the events the
client missed: those after `Last-Event-ID` (or `?after=`), from the server's history.
Server-sent events rather than websockets: the plug-ins read them with urllib alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from backend.api.deps import HubDep, SettingsDep
from backend.api.errors import errors_doc
from backend.api.event_hub import EventHub
from shared.protocol import EVENT_STREAM_MEDIA_TYPE, ID_PATTERN, JobEvent

router = APIRouter(prefix="/v1", tags=["events"])

_STREAM_DOC = {
    200: {
        "content": {EVENT_STREAM_MEDIA_TYPE: {"schema": {"type": "string"}}},
        "description": "server-sent events; each `data:` line is a JobEvent",
        "model": JobEvent,
    },
    **errors_doc({422: ("invalid_request",)}),
}


@router.get(
    "/events", response_class=StreamingResponse, responses=_STREAM_DOC, summary="Live job events"
)
async def events(
    hub: HubDep,
    settings: SettingsDep,
    client: Annotated[
        str | None,
        Query(
            pattern=ID_PATTERN,
            description="this client's jobs; without it, the jobs sent without a client id "
            "(every job, on a server with a token)",
        ),
    ] = None,
    after: Annotated[int | None, Query(ge=0, description="send events after this seq")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Events: queued, started, progress (fraction and stage), finished, failed, cancelled,
    removed. Without `after` or `Last-Event-ID` the stream starts with every event still in
    the history for this client. As for GET /v1/jobs, other clients' events are only sent to
    a server's token holders."""
    start = after if after is not None else _seq(last_event_id)
    everyone = client is None and settings.token is not None
    return StreamingResponse(
        _stream(hub, client, everyone, start, settings.keepalive_seconds),
        media_type=EVENT_STREAM_MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _seq(last_event_id: str | None) -> int:
    try:
        return max(0, int(last_event_id)) if last_event_id else 0
    except ValueError:
        return 0


def format_event(event: JobEvent) -> str:
    data = json.dumps(event.to_json(), separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.type.value}\ndata: {data}\n\n"


async def _stream(
    hub: EventHub, client: str | None, everyone: bool, after: int, keepalive: float
) -> AsyncIterator[str]:
    sub, backlog = hub.subscribe(client, after, everyone)
    try:
        yield "retry: 1000\n\n"
        for event in backlog:
            yield format_event(event)
        while True:
            try:
                event = await asyncio.wait_for(sub.queue.get(), keepalive)
            except asyncio.TimeoutError:
                yield ": keepalive\n\n"
                continue
            if event is None:  # the server is stopping, or this client fell too far behind
                return
            yield format_event(event)
    finally:
        hub.unsubscribe(sub)
