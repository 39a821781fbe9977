"""A fake editor, a listener that records a job's callbacks, and a backend in a subprocess.

`FakeEditor` implements plugin.common.editor.Editor over numpy arrays, in the wire's channel
order, with a log of what an action did (layers added, canvas scaled, undo groups), so the
editor-agnostic flow runs end to end without an editor. `BackendProcess` runs `restora serve`
as a real process, so a test can kill it in the middle of a job and start it again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from plugin.common.editor import NewLayer
from plugin.common.errors import PluginError
from plugin.common.job_runner import JobResult
from plugin.common.pixels import PixelBuffer
from plugin.common.selection import crop_plane
from shared.geometry import Bounds, Extent
from shared.protocol import PixelFormat
from tests.server_fixtures import env_without_restora, free_port

REPO = Path(__file__).resolve().parent.parent


def to_buffer(array: np.ndarray) -> PixelBuffer:
    height, width, channels = array.shape
    depth = 16 if array.dtype == np.uint16 else 8
    data = np.ascontiguousarray(array.astype("<u2") if depth == 16 else array).tobytes()
    return PixelBuffer(data, PixelFormat(width, height, channels, depth))


def to_array(buffer: PixelBuffer) -> np.ndarray:
    fmt = buffer.format
    dtype = np.dtype("<u2") if fmt.depth == 16 else np.uint8
    return np.frombuffer(bytes(buffer.data), dtype).reshape(fmt.height, fmt.width, fmt.channels)


@dataclass
class FakeLayer:
    name: str
    #: (H, W, C) in the wire's channel order: the canvas's size, but a reference layer may
    #: have its own (as a GIMP layer does)
    pixels: np.ndarray
    #: a group's layers, top to bottom
    children: list[FakeLayer] = field(default_factory=list)


class FakeEditor:
    """One document of RGBA (or gray + alpha) layers, 8 or 16 bits, and a selection."""

    def __init__(self, image: np.ndarray, selection: np.ndarray | None = None) -> None:
        self.layers = [FakeLayer("Background", image.copy())]
        self.source = self.layers[0]
        self.selection = selection  # (H, W) uint8, or None
        self.alive = True
        self.log: list[tuple[str, object]] = []
        self.documents: list[tuple[str, np.ndarray]] = []
        self.reads: list[tuple[Bounds, bool]] = []
        self._group: str | None = None

    @property
    def image(self) -> np.ndarray:
        return self.source.pixels

    def canvas(self) -> Extent:
        height, width = self.image.shape[:2]
        return Extent(width, height)

    def source_name(self) -> str:
        return self.source.name

    def read_pixels(self, region: Bounds, projection: bool = False) -> PixelBuffer:
        self.reads.append((region, projection))
        crop = self.image[region.y:region.bottom, region.x:region.right]
        return to_buffer(crop)

    def list_layers(self) -> list[str]:
        names: list[str] = []
        for layer in self._other_layers():
            if layer.name not in names:
                names.append(layer.name)
        return names

    def read_layer_pixels(self, name: str) -> PixelBuffer | None:
        layer = next((item for item in self._other_layers() if item.name == name), None)
        return None if layer is None else to_buffer(layer.pixels)

    def _other_layers(self) -> list[FakeLayer]:
        """Top to bottom (`layers` is bottom to top; a group's children top to bottom),
        without groups and without the source."""
        found: list[FakeLayer] = []

        def walk(layers: list[FakeLayer]) -> None:
            for layer in layers:
                if layer.children:
                    walk(layer.children)
                elif layer is not self.source:
                    found.append(layer)

        walk(list(reversed(self.layers)))
        return found

    def selection_bounds(self) -> Bounds | None:
        if self.selection is None or not self.selection.any():
            return None
        rows = np.flatnonzero(self.selection.any(axis=1))
        cols = np.flatnonzero(self.selection.any(axis=0))
        return Bounds(int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1),
                      int(rows[-1] - rows[0] + 1))

    def selection_mask(self, region: Bounds) -> bytes:
        assert self.selection is not None
        plane = np.ascontiguousarray(self.selection, dtype=np.uint8).tobytes()
        return bytes(crop_plane(plane, Bounds.of(self.canvas()), region))

    def is_alive(self) -> bool:
        return self.alive

    def _canvas_layer(self, pixels: PixelBuffer, at: Bounds) -> np.ndarray:
        layer = np.zeros_like(self.image)
        patch = to_array(pixels)
        assert patch.shape[2] == layer.shape[2], "the flow must match the document's channels"
        inside = at.clipped(self.canvas())
        layer[inside.y:inside.bottom, inside.x:inside.right] = patch[
            inside.y - at.y:inside.bottom - at.y, inside.x - at.x:inside.right - at.x]
        return layer

    def add_layer(self, name: str, pixels: PixelBuffer, at: Bounds) -> None:
        index = self.layers.index(self.source) + 1
        self.layers.insert(index, FakeLayer(name, self._canvas_layer(pixels, at)))
        self.log.append(("add_layer", (name, at, self._group)))

    def add_layers(self, group: str, layers: list[NewLayer]) -> None:
        children = [FakeLayer(n.name, self._canvas_layer(n.pixels, n.at)) for n in layers]
        index = self.layers.index(self.source) + 1
        self.layers.insert(index, FakeLayer(group, np.zeros_like(self.image), children))
        self.log.append(("add_layers", (group, [n.name for n in layers], self._group)))

    def scale_canvas(self, size: Extent) -> None:
        for layer in self.layers:
            h, w = layer.pixels.shape[:2]
            ys = (np.arange(size.height) * h // size.height)
            xs = (np.arange(size.width) * w // size.width)
            layer.pixels = layer.pixels[ys][:, xs]
        if self.selection is not None:
            h, w = self.selection.shape
            self.selection = self.selection[np.arange(size.height) * h // size.height][
                :, np.arange(size.width) * w // size.width]
        self.log.append(("scale_canvas", (size, self._group)))

    def new_document(self, name: str, pixels: PixelBuffer) -> None:
        self.documents.append((name, to_array(pixels)))
        self.log.append(("new_document", name))

    @contextlib.contextmanager
    def undo_group(self, name: str) -> Iterator[None]:
        self._group = name
        try:
            yield
        finally:
            self._group = None
            self.log.append(("undo_group", name))

    def layer(self, name_start: str) -> FakeLayer:
        return next(layer for layer in self.layers if layer.name.startswith(name_start))


@dataclass
class Recorder:
    """A JobListener that keeps every callback, with the thread it ran on."""

    progress: list[tuple[float, str]] = field(default_factory=list)
    finished: list[JobResult] = field(default_factory=list)
    failed: list[PluginError] = field(default_factory=list)
    cancelled: int = 0
    threads: set[str] = field(default_factory=set)
    started: threading.Event = field(default_factory=threading.Event)

    def on_progress(self, fraction: float, stage: str) -> None:
        self.threads.add(threading.current_thread().name)
        self.progress.append((fraction, stage))
        if fraction > 0:
            self.started.set()

    def on_finished(self, result: JobResult) -> None:
        self.finished.append(result)

    def on_failed(self, error: PluginError) -> None:
        self.failed.append(error)

    def on_cancelled(self) -> None:
        self.cancelled += 1


class BackendProcess:
    """`restora serve` in a subprocess on a fixed port: start, kill, start again."""

    def __init__(self, models_root: Path, home: Path, port: int | None = None) -> None:
        self.models_root = models_root
        self.home = home
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / f"serve-{self.port}.log"

    def start(self, timeout: float = 60.0) -> BackendProcess:
        env = env_without_restora()
        env.update(RESTORA_HOME=str(self.home), RESTORA_MODELS=str(self.models_root),
                   RESTORA_KEEPALIVE_SECONDS="1", PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "backend.cli", "serve", "--port", str(self.port),
                 "--device", "cpu"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"restora serve exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                r = httpx.get(f"{self.url}/v1/health", timeout=2)
                if r.status_code == 200 and r.json().get("ready"):
                    return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"restora serve did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: the backend dies as in a crash, without closing its streams."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


def clean_environment() -> dict[str, str]:
    """This process's environment without Qt's variables: importing OpenCV (the server
    in this process does) sets QT_QPA_PLATFORM_PLUGIN_PATH to its own Qt plug-ins, which
    Krita then fails to load."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QT_")}


def checker(size: int = 8, width: int = 64, height: int = 48, channels: int = 4,
            depth: int = 8) -> np.ndarray:
    """A checkerboard of two colours with a gradient, opaque: easy to compare after upscaling."""
    top = 65535 if depth == 16 else 255
    y, x = np.mgrid[0:height, 0:width]
    board = ((x // size + y // size) % 2).astype(np.float64)
    r = board * 0.8 + 0.1
    g = x / max(1, width - 1)
    b = y / max(1, height - 1)
    colour = [0.3 * r + 0.6 * g + 0.1 * b] if channels in (1, 2) else [r, g, b]
    planes = [*colour, np.ones_like(r)] if channels in (2, 4) else colour
    dtype = np.uint16 if depth == 16 else np.uint8
    return np.rint(np.stack(planes, axis=2) * top).astype(dtype)


class TcpProxy:
    """A loopback TCP relay in front of the backend whose connections a test can cut.

    `cut()` drops every open connection, as a flaky network or a sleeping laptop would, while
    the backend itself keeps running; `refuse(seconds)` also turns new connections away for a
    while.
    """

    def __init__(self, target_port: int) -> None:
        import socket

        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._conns: list[object] = []
        self._lock = threading.Lock()
        self._refuse_until = 0.0
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self._refuse_until:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: object, dst: object) -> None:
        import socket

        assert isinstance(src, socket.socket) and isinstance(dst, socket.socket)
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        import socket

        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            assert isinstance(conn, socket.socket)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.cuts += 1

    def refuse(self, seconds: float) -> None:
        self._refuse_until = time.monotonic() + seconds
        self.cut()

    def close(self) -> None:
        self.listener.close()
        self.cut()
