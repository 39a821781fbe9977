"""Job events: numbered, kept for a while, and handed to each listening client's stream.

The worker thread publishes; `publish` numbers the event under a lock, keeps it in the
history and hands it to the event loop with call_soon_threadsafe, where it is put on the
asyncio queue of every stream that wants it. A client that reconnects passes the last
number it saw (Last-Event-ID or ?after=) and is sent what it missed from the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from shared.protocol import EventType, JobEvent, JobStatus

#: a stream whose client reads slower than this many events behind is closed; the client
#: reconnects with Last-Event-ID and catches up from the history
MAX_PENDING = 10_000


@dataclass(eq=False)
class Subscription:
    client: str | None  # None: the events of jobs sent without a client id
    floor: int  # events up to this number were in the backlog already
    everyone: bool = False  # every client's events (a token holder's stream)
    queue: asyncio.Queue[JobEvent | None] = field(default_factory=asyncio.Queue)

    def wants(self, event: JobEvent) -> bool:
        return self.everyone or event.client == self.client


class EventHub:
    def __init__(self, history: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._history: deque[JobEvent] = deque(maxlen=history)
        self._subscriptions: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq

    def publish(self, kind: EventType, status: JobStatus) -> JobEvent:
        """Number and deliver an event; safe from any thread."""
        with self._lock:
            self._seq += 1
            event = JobEvent(
                seq=self._seq,
                type=kind,
                job=status.id,
                client=status.client,
                time=time.time(),
                state=status.state,
                progress=status.progress,
                stage=status.stage,
                step=status.step,
                steps=status.steps,
                preview=status.preview,
                position=status.position,
                error=status.error,
                result=status.result,
                note=status.note,
            )
            self._history.append(event)
            if self._loop is not None and not self._closed:
                # a closed loop (RuntimeError) means the server is stopping: nobody listens
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._deliver, event)
        return event

    def subscribe(
        self, client: str | None, after: int, everyone: bool = False
    ) -> tuple[Subscription, list[JobEvent]]:
        """A new stream and the events after `after` it missed. Call on the event loop."""
        with self._lock:
            sub = Subscription(client, floor=self._seq, everyone=everyone)
            backlog = [e for e in self._history if e.seq > after and sub.wants(e)]
            if self._closed:
                sub.queue.put_nowait(None)
            self._subscriptions.add(sub)
        return sub, backlog

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(sub)

    def close(self) -> None:
        """End every stream (the server is stopping). Safe from any thread."""
        with self._lock:
            self._closed = True
            loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._end_streams)

    def _end_streams(self) -> None:
        with self._lock:
            subs = list(self._subscriptions)
        for sub in subs:
            sub.queue.put_nowait(None)

    def _deliver(self, event: JobEvent) -> None:
        with self._lock:
            subs = [s for s in self._subscriptions if s.wants(event) and event.seq > s.floor]
        for sub in subs:
            if sub.queue.qsize() >= MAX_PENDING:
                self.unsubscribe(sub)
                sub.queue.put_nowait(None)
            else:
                sub.queue.put_nowait(event)
