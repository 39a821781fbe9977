"""Uploaded images, by content id, until a job takes them or they are too old.

An image is named by the sha256 of its shape and pixels (shared.protocol.PixelFormat
.content_id), so uploading the same pixels twice stores them once and a client can check
whether the server already has them. A queued job holds its own reference to the pixels, so
forgetting an upload never affects a job.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from backend.errors import RestoraError
from shared.protocol import ImageInfo, excerpt


class ImageNotFoundError(RestoraError):
    code = "image_not_found"
    http_status = 404


@dataclass
class _Entry:
    pixels: np.ndarray
    used: float


class ImageStore:
    def __init__(self, memory_limit: int, ttl: float) -> None:
        self.memory_limit = memory_limit
        self.ttl = ttl
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, image_id: str, pixels: np.ndarray) -> None:
        with self._lock:
            self._items[image_id] = _Entry(pixels, time.monotonic())
            self._items.move_to_end(image_id)
            self._evict()

    def get(self, image_id: str, what: str = "image") -> np.ndarray:
        with self._lock:
            self._evict()
            entry = self._items.get(image_id)
            if entry is None:
                raise ImageNotFoundError(
                    f"No uploaded {what} with id '{excerpt(image_id)}'.",
                    f"Upload it with POST /v1/images first; uploads are kept {self.ttl:.0f} s.",
                )
            entry.used = time.monotonic()
            self._items.move_to_end(image_id)
            return entry.pixels

    def discard(self, image_id: str) -> bool:
        with self._lock:
            return self._items.pop(image_id, None) is not None

    def memory_bytes(self) -> int:
        with self._lock:
            return sum(e.pixels.nbytes for e in self._items.values())

    def _evict(self) -> None:
        """Drop uploads past their time, then the least recently used beyond the budget."""
        now = time.monotonic()
        total = sum(e.pixels.nbytes for e in self._items.values())
        for key in list(self._items):
            entry = self._items[key]
            # the newest upload stays even when alone it is over budget: a job is about to use it
            newest = key == next(reversed(self._items))
            if now - entry.used > self.ttl or (total > self.memory_limit and not newest):
                total -= entry.pixels.nbytes
                del self._items[key]


def info(image_id: str, pixels: np.ndarray) -> ImageInfo:
    height, width, channels = pixels.shape
    return ImageInfo(image_id, width, height, channels, 16 if pixels.dtype == np.uint16 else 8)
