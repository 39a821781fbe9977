"""A real Restora server on a loopback port, tiny random-weight models, and a small client.

A test module takes the fixtures by assigning them (`server = fx.server` after
`from tests import server_fixtures as fx`), which registers them for that module only: each
module gets its own server, stopped when the module's tests end. The server runs the real
app under uvicorn in a background thread, on a socket bound to a free port before it starts,
so there is no port race.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from backend.settings import Settings
from shared.protocol import PixelFormat

STARTUP_TIMEOUT = 30.0


def make_tiny_model(path: Path, scale: int, seed: int = 0) -> Path:
    """A Compact (Real-ESRGAN video) network with 8 features and random weights."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def make_tiny_pth(path: Path, scale: int, seed: int = 0) -> Path:
    """The same network as a .pth state dict (a catalog entry's file name may end so)."""
    import torch
    from safetensors.torch import load_file

    tiny = make_tiny_model(path.with_name(path.stem + ".tmp.safetensors"), scale, seed)
    torch.save(load_file(str(tiny)), path)
    tiny.unlink()
    return path


def slow_photo_models(folder: Path) -> int:
    """Tiny networks named as the default photo model and as the catalog's
    realesr-general-x4v3 (photo, fast); returns the side of a square image the shipped
    figures estimate at about twice the wait that brings the note."""
    from backend import speed_advice

    make_tiny_model(folder / "realesrgan-x4plus.safetensors", 4, seed=1)
    make_tiny_pth(folder / "realesr-general-x4v3.pth", 4, seed=3)
    rate = speed_advice.MEASURED_SECONDS_PER_MP["realesrgan-x4plus"]
    return round((2 * speed_advice.SLOW_SECONDS / rate * 1e6) ** 0.5)


@dataclass
class ModelsSetup:
    root: Path  # a models folder: root/upscale_models/*.safetensors
    home: Path  # RESTORA_HOME: caches and the default models folder


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelsSetup]:
    root = tmp_path_factory.mktemp("models")
    home = tmp_path_factory.mktemp("home")
    make_tiny_model(root / "upscale_models" / "tiny-x2.safetensors", 2, seed=1)
    make_tiny_model(root / "upscale_models" / "tiny-x4.safetensors", 4, seed=2)
    (root / "upscale_models" / "broken.safetensors").write_bytes(b"not a model at all")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESTORA_HOME", str(home))
        mp.delenv("RESTORA_MODELS", raising=False)
        mp.delenv("RESTORA_MAX_PIXELS", raising=False)
        yield ModelsSetup(root, home)


def test_settings(models: ModelsSetup, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "device": "cpu",
        "models_dirs": [str(models.root)],
        "max_pixels": 4_000_000,
        "max_upload_bytes": 32 << 20,
        "max_output_pixels": 20_000_000,
        "log_level": "warning",
        "keepalive_seconds": 1.0,
    }
    base.update(overrides)
    return Settings(**base)


test_settings.__test__ = False  # a helper, not a test


@dataclass
class LiveServer:
    url: str
    app: Any
    server: Any
    thread: threading.Thread
    settings: Settings

    def stop(self) -> None:
        hub = getattr(self.app.state, "hub", None)
        if hub is not None:
            hub.close()
        self.server.should_exit = True
        self.thread.join(15)


@contextlib.contextmanager
def live_server(settings: Settings, tasks: Any = None) -> Iterator[LiveServer]:
    """The real app under uvicorn on a free loopback port, until the block ends; `tasks`
    (a TaskRegistry) defaults to the product's tasks plus the test-only ones."""
    from backend.app import create_app
    from backend.server import bind, make_server
    from tests.extra_tasks import with_test_tasks

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_app(settings, tasks if tasks is not None else with_test_tasks())
    server = make_server(settings, app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn-test"
    )
    thread.start()
    live = LiveServer(f"http://127.0.0.1:{port}", app, server, thread, settings)
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    deadline = time.monotonic() + STARTUP_TIMEOUT
    try:
        while True:
            try:
                r = httpx.get(f"{live.url}/v1/health", headers=headers, timeout=2)
                if r.status_code == 200 and r.json().get("ready", True):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        yield live
    finally:
        live.stop()
        sock.close()


@pytest.fixture(scope="module")
def server(tiny_models: ModelsSetup) -> Iterator[LiveServer]:
    with live_server(test_settings(tiny_models)) as live:
        yield live


@dataclass
class RecordingServer:
    live: LiveServer
    #: per edit job, in the order they ran: the shape of each further image its task got
    received: list[dict[str, list[int]]]


@contextlib.contextmanager
def edit_plus_server(root: Path, home: Path) -> Iterator[RecordingServer]:
    """A backend with a tiny Qwen-Image-Edit-2509 (a family that reads reference images),
    whose edit task notes what further images each job brought before it edits: what an
    editor sent is then seen where the backend received it, at the layer's size."""
    import dataclasses

    from backend.diffusion import edit_run
    from backend.tasks.registry import TaskRegistry
    from tests import edit_zoo
    from tests.extra_tasks import with_test_tasks

    edit_zoo.qwen_edit_plus_folder(root)
    received: list[dict[str, list[int]]] = []

    def recording(spec: Any) -> Any:
        def run(ctx: Any, inputs: Any, params: Any) -> Any:
            received.append({name: list(image.shape) for name, image in inputs.images.items()})
            return spec.run(ctx, inputs, params)

        return dataclasses.replace(spec, run=run)

    tasks = TaskRegistry([recording(s) if s.id == "edit" else s for s in with_test_tasks()])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(edit_run, "CONDITION_AREA", 56 * 56)  # quicker; the server runs in-process
        with live_server(test_settings(ModelsSetup(root, home)), tasks) as live:
            yield RecordingServer(live, received)


FACE_MODEL = "random-restoreformer"


@pytest.fixture(scope="module")
def face_server(
    tiny_models: ModelsSetup, face_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server with the tiny upscalers and one face model: the random-weight RestoreFormer
    (small, so quick; the big families run in test_face_restore.py), in fp32 so a test can
    compare its output with the engine's."""
    import shutil

    root = tmp_path_factory.mktemp("face-server-models")
    shutil.copytree(tiny_models.root / "upscale_models", root / "upscale_models")
    (root / "facerestore_models").mkdir()
    src = face_models / "facerestore_models" / f"{FACE_MODEL}.safetensors"
    shutil.copy(src, root / "facerestore_models" / src.name)
    settings = test_settings(ModelsSetup(root, tiny_models.home), precision="fp32")
    with live_server(settings) as live:
        yield live


def opaque_rgba(photo: np.ndarray) -> np.ndarray:
    """An RGB photo as the editors send a layer: RGBA, fully opaque."""
    alpha = np.full((*photo.shape[:2], 1), 255, np.uint8)
    return np.ascontiguousarray(np.concatenate([photo, alpha], axis=2))


def expected_face_layer(server: LiveServer, pixels: np.ndarray) -> np.ndarray:
    """The layer the face server makes of `pixels` with FACE_MODEL: the engine's own result,
    computed here the way the server computes it (fp32, CPU, default parameters)."""
    from backend.models.registry import Registry
    from backend.models.runtime import load_model
    from backend.tasks import face_restore

    models = Registry([Path(d) for d in server.settings.models_dirs])
    model = load_model(models.find(FACE_MODEL), device="cpu", precision="fp32")
    return face_restore.run(pixels, model, face_restore.FaceRestoreParams()).layer()


@dataclass
class Client:
    """What a plug-in does, in a few lines of httpx: upload, submit, follow, fetch."""

    url: str
    name: str = "test"
    token: str | None = None
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def close(self) -> None:
        self.http.close()

    def upload(self, pixels: np.ndarray) -> str:
        fmt = PixelFormat(
            pixels.shape[1],
            pixels.shape[0],
            pixels.shape[2],
            16 if pixels.dtype == np.uint16 else 8,
        )
        data = np.ascontiguousarray(pixels.astype("<u2") if fmt.depth == 16 else pixels)
        r = self.http.post(
            "/v1/images", content=data.tobytes(), headers={"Content-Type": fmt.media_type()}
        )
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def submit(self, pixels: np.ndarray, mask: np.ndarray | None = None, **request: Any) -> dict:
        body = {
            "task": "upscale",
            "model": "tiny-x2",
            "client": self.name,
            **request,
            "image": self.upload(pixels),
        }
        if mask is not None:
            body["mask"] = self.upload(mask)
        r = self.http.post("/v1/jobs", json=body)
        assert r.status_code in (200, 202), r.text
        return r.json()

    def status(self, job_id: str) -> dict:
        r = self.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status["state"] in ("finished", "failed", "cancelled"):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status['state']}")
            time.sleep(0.02)

    def result(self, job_id: str, output: str | None = None) -> np.ndarray:
        params = {"format": "raw", **({"output": output} if output else {})}
        r = self.http.get(f"/v1/jobs/{job_id}/result", params=params)
        assert r.status_code == 200, r.text
        fmt = PixelFormat.parse(r.headers["content-type"])
        dtype = np.dtype("<u2") if fmt.depth == 16 else np.uint8
        return np.frombuffer(r.content, dtype).reshape(fmt.height, fmt.width, fmt.channels)

    def events(
        self, until: Any, after: int | None = None, timeout: float = 30.0, client: str | None = None
    ) -> list[dict]:
        """Read this client's event stream until `until(event)` is true for an event."""
        params: dict[str, Any] = {"client": client or self.name}
        if after is not None:
            params["after"] = after
        return read_events(self.http, params, until, timeout)


def read_events(
    http: httpx.Client,
    params: dict[str, Any],
    until: Any,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> list[dict]:
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    with http.stream(
        "GET",
        "/v1/events",
        params=params,
        headers=headers,
        timeout=httpx.Timeout(timeout, read=5.0),
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                seen.append(event)
                if until(event):
                    return seen
            if time.monotonic() > deadline:
                break
    raise TimeoutError(f"events ended without the awaited one; saw {[e['type'] for e in seen]}")


def random_image(
    height: int, width: int, channels: int = 3, depth: int = 8, seed: int = 0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 65535 if depth == 16 else 255
    return rng.integers(
        0, top + 1, (height, width, channels), dtype=np.uint16 if depth == 16 else np.uint8
    )


def reference_upscale(
    models: ModelsSetup, pixels: np.ndarray, model: str = "tiny-x2", **params: Any
) -> np.ndarray:
    """What the engine itself makes of `pixels`: the result a job must return."""
    from backend import paths
    from backend.models.registry import Registry
    from backend.models.runtime import load_model
    from backend.tasks.upscale import UpscaleParams, run

    entry = Registry(paths.models_dirs([str(models.root)])).find(model)
    return run(pixels, load_model(entry, device="cpu"), UpscaleParams(**params))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_without_restora() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RESTORA_")}


def offered_titles(url: str) -> list[str]:
    """The titles of the tasks a plug-in offers from this server, in the server's order: those
    it runs, and those it would run given a model (offered to say what to get)."""
    tasks = httpx.get(f"{url}/v1/tasks", timeout=10).json()
    return [t["title"] for t in tasks if t["available"] or t["needs_model"]]


def task_help(url: str, task: str) -> str:
    """A task's help text as the server describes it."""
    tasks = httpx.get(f"{url}/v1/tasks", timeout=10).json()
    return next(t["help"] for t in tasks if t["task"] == task)


def task_title(url: str, task: str) -> str:
    """A task's title as the server gives it (layer names start with it)."""
    tasks = httpx.get(f"{url}/v1/tasks", timeout=10).json()
    return next(t["title"] for t in tasks if t["task"] == task)


GROUP_ORDER = ("upscale", "restore", "enhance", "edit")


def offered_groups(url: str) -> list[tuple[str, list[str]]]:
    """The offered tasks' titles by group, groups in the editors' order, tasks in the
    server's order within each."""
    tasks = httpx.get(f"{url}/v1/tasks", timeout=10).json()
    groups: dict[str, list[str]] = {}
    for t in tasks:
        if t["available"] or t["needs_model"]:
            groups.setdefault(t["group"], []).append(t["title"])
    order = sorted(groups, key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else 9, g))
    return [(g, groups[g]) for g in order]


def grouped_titles(url: str) -> list[str]:
    """The offered tasks' titles in the editors' grouped order."""
    return [title for _, titles in offered_groups(url) for title in titles]


def grouped_ids(url: str) -> list[str]:
    """The offered tasks' ids in the editors' grouped order."""
    tasks = httpx.get(f"{url}/v1/tasks", timeout=10).json()
    by_title = {t["title"]: t["task"] for t in tasks}
    return [by_title[title] for title in grouped_titles(url)]
