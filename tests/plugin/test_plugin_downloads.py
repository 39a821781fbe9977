"""Downloading a model from an editor, without the editor: the client's download calls and
DownloadRunner against the real server, whose catalog names tiny real upscalers served by a
local mirror (tests/model_mirror.py); and what the model lists, presets and the download
button show (catalog.py), from the backend's own descriptions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from backend.jobs import task_info
from backend.tasks.registry import default_registry
from plugin.common.catalog import (
    Catalog,
    apply_preset,
    consent_question,
    describe_download,
    fetch_catalog,
    licence_needs_consent,
    model_label,
)
from plugin.common.client import Client
from plugin.common.downloads import LICENCE_NOT_ACCEPTED, DownloadOutcome, DownloadRunner
from plugin.common.errors import BackendLost, PluginError, ServerError
from shared.protocol import CatalogModelInfo, DownloadInfo, Health, ModelInfo
from tests.model_mirror import DownloadServer, MirrorModel, download_server, noise, tiny_model_bytes

SLOW_BYTES = 2 << 20


def catalog_models(tmp: Path) -> list[MirrorModel]:
    return [
        MirrorModel(
            "tiny-photo",
            "tiny-photo-x2.safetensors",
            tiny_model_bytes(tmp, 2, seed=21),
            label="Tiny Photo",
            traits=["photo", "fast"],
            recommended=True,
        ),
        MirrorModel(
            "tiny-anime",
            "tiny-anime-x4.safetensors",
            tiny_model_bytes(tmp, 4, seed=22),
            licence="CC-BY-NC-SA-4.0",
            non_commercial=True,
            label="Tiny Anime",
            traits=["illustration"],
        ),
        MirrorModel(
            "tiny-bad",
            "tiny-bad-x2.safetensors",
            tiny_model_bytes(tmp, 2, seed=23),
            sha256="f" * 64,
        ),
        MirrorModel(
            "slow-file",
            "slow.safetensors",
            noise(SLOW_BYTES, seed=2),
            task="instruct-edit",
            folder="text_encoders",
        ),
    ]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DownloadServer]:
    with download_server(tmp_path_factory, catalog_models) as server:
        yield server


@pytest.fixture
def client(backend: DownloadServer) -> Client:
    return Client(backend.live.url)


@dataclass
class Recorder:
    """A listener that records its callbacks, and on which thread they ran."""

    progress: list[tuple[int, int | None]] = field(default_factory=list)
    finished: list[DownloadInfo] = field(default_factory=list)
    failed: list[PluginError] = field(default_factory=list)
    cancelled: int = 0
    threads: set[str] = field(default_factory=set)

    def _saw(self) -> None:
        self.threads.add(threading.current_thread().name)

    def on_download_progress(self, done: int, total: int | None) -> None:
        self._saw()
        self.progress.append((done, total))

    def on_download_finished(self, info: DownloadInfo) -> None:
        self._saw()
        self.finished.append(info)

    def on_download_failed(self, error: PluginError) -> None:
        self._saw()
        self.failed.append(error)

    def on_download_cancelled(self) -> None:
        self._saw()
        self.cancelled += 1


class UiThread:
    """Stands in for the editor's event loop: dispatched callbacks run on its own thread."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], None]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="ui", daemon=True)
        self._thread.start()

    def dispatch(self, fn: Callable[[], None]) -> None:
        with self._cond:
            self.calls.append(fn)
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self.calls:
                    self._cond.wait()
                fn = self.calls.pop(0)
            fn()

    def drain(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # the last callback has run


def run(
    client: Client, name: str, accept: bool = False, timeout: float = 60.0
) -> tuple[DownloadRunner, Recorder]:
    rec = Recorder()
    runner = DownloadRunner(client, name, accept, rec, poll_interval=0.05).start()
    assert runner.wait(timeout), "the download did not end"
    return runner, rec


# --- against the server ---


def test_a_task_without_a_model_offers_the_recommended_download(client: Client) -> None:
    catalog = fetch_catalog(client)
    assert catalog.task_info("upscale").needs_model
    offer = catalog.recommended_download("upscale")
    assert offer is not None and offer.name == "tiny-photo" and not offer.installed
    assert describe_download(offer) == f"Tiny Photo, {round(offer.size_bytes / 1024)} kB, MIT"
    assert not licence_needs_consent(offer)
    assert {m.name for m in client.catalog_models("upscale")} == {
        "tiny-photo",
        "tiny-anime",
        "tiny-bad",
    }
    assert [m.name for m in client.catalog_models("instruct-edit")] == ["slow-file"]


def test_the_runner_downloads_with_progress_then_the_model_is_listed(
    backend: DownloadServer, client: Client
) -> None:
    ui = UiThread()
    rec = Recorder()
    runner = DownloadRunner(
        client, "tiny-photo", False, rec, dispatch=ui.dispatch, poll_interval=0.05
    ).start()
    assert runner.wait(60)
    ui.drain()
    assert runner.outcome == DownloadOutcome.FINISHED, rec.failed
    assert rec.threads == {"ui"}  # every callback went through dispatch
    size = len(backend.mirror.files["tiny-photo-x2.safetensors"])
    assert rec.progress and rec.progress[-1] == (size, size)
    assert [i.model for i in rec.finished] == ["tiny-photo-x2"]
    assert runner.info is not None and runner.info.state == "finished"

    catalog = fetch_catalog(client)  # what the editor does next: refresh its lists
    model = catalog.model_info("tiny-photo-x2")
    assert model is not None and model.usable and "upscale" in model.tasks
    assert model_label(model) == "Tiny Photo — photo, fast (x2)"
    upscale = catalog.task_info("upscale")
    assert upscale.available and not upscale.needs_model
    assert catalog.recommended_download("upscale") is None  # it has a model now
    assert next(d for d in catalog.downloads if d.name == "tiny-photo").installed

    # the presets pick the model by its traits, and set their options
    assert apply_preset(catalog, "upscale", "fast", {"alpha": "model", "tile": 64}) == (
        "tiny-photo-x2",
        {"alpha": "resize", "tile": 64},
    )
    model_name, options = apply_preset(catalog, "upscale", "photo", {"alpha": "resize"})
    assert (model_name, options) == ("tiny-photo-x2", {"alpha": "model"})
    assert apply_preset(catalog, "upscale", "illustration", {})[0] is None  # none installed
    assert [p.label for p in catalog.presets("upscale")] == ["Photo", "Illustration", "Fast"]


def test_a_licence_must_be_accepted_before_the_download(
    backend: DownloadServer, client: Client
) -> None:
    entry = next(m for m in client.catalog_models("upscale") if m.name == "tiny-anime")
    assert licence_needs_consent(entry)
    assert "CC-BY-NC-SA-4.0 (non-commercial use only)" in describe_download(entry)
    assert "CC-BY-NC-SA-4.0" in consent_question(entry)
    with pytest.raises(ServerError) as refused:
        client.start_download("tiny-anime")
    assert refused.value.code == LICENCE_NOT_ACCEPTED and refused.value.status == 409
    assert "CC-BY-NC-SA-4.0" in refused.value.text

    runner, rec = run(client, "tiny-anime")
    assert runner.outcome == DownloadOutcome.FAILED and not rec.finished
    assert rec.failed[0].code == LICENCE_NOT_ACCEPTED and "CC-BY-NC-SA-4.0" in rec.failed[0].text
    assert not backend.target("upscale_models", "tiny-anime-x4.safetensors").exists()

    runner, rec = run(client, "tiny-anime", accept=True)
    assert runner.outcome == DownloadOutcome.FINISHED, rec.failed
    assert rec.finished[0].model == "tiny-anime-x4"
    catalog = fetch_catalog(client)
    assert model_label(catalog.model_info("tiny-anime-x4")) == "Tiny Anime — illustration (x4)"
    assert apply_preset(catalog, "upscale", "illustration", {})[0] == "tiny-anime-x4"


def test_a_checksum_mismatch_fails_in_the_backends_words(
    backend: DownloadServer, client: Client
) -> None:
    runner, rec = run(client, "tiny-bad")
    assert runner.outcome == DownloadOutcome.FAILED and rec.cancelled == 0
    error = rec.failed[0]
    assert isinstance(error, ServerError) and error.code == "checksum_mismatch"
    assert "checksum" in error.text and runner.error is error
    assert not backend.target("upscale_models", "tiny-bad-x2.safetensors").exists()
    assert client.catalog_models("upscale")[2].installed is False


def test_a_cancel_stops_the_download_promptly(backend: DownloadServer, client: Client) -> None:
    backend.mirror.slow["slow.safetensors"] = 0.05
    rec = Recorder()
    runner = DownloadRunner(client, "slow-file", False, rec, poll_interval=0.05).start()
    deadline = time.monotonic() + 30
    while not any(done for done, _ in rec.progress):
        assert time.monotonic() < deadline and not runner.done, rec.failed
        time.sleep(0.02)
    asked = time.monotonic()
    runner.cancel()
    assert runner.wait(10) and time.monotonic() - asked < 3.0
    assert runner.outcome == DownloadOutcome.CANCELLED and rec.cancelled == 1
    assert not rec.finished and not rec.failed
    assert rec.progress[-1][1] == SLOW_BYTES and rec.progress[-1][0] < SLOW_BYTES
    assert runner.info is not None
    assert client.download_status(runner.info.id).state == "cancelled"
    assert not backend.target("text_encoders", "slow.safetensors").exists()
    backend.mirror.slow.pop("slow.safetensors")


def test_a_cancel_before_the_request_sends_nothing(backend: DownloadServer, client: Client) -> None:
    rec = Recorder()
    runner = DownloadRunner(client, "tiny-photo", False, rec)
    runner.cancel()
    runner.start()
    assert runner.wait(10) and runner.outcome == DownloadOutcome.CANCELLED
    assert runner.info is None and rec.cancelled == 1


def test_unknown_names_and_ids(client: Client) -> None:
    with pytest.raises(ServerError) as unknown:
        client.start_download("no-such-model")
    assert unknown.value.status == 404 and unknown.value.code == "model_not_found"
    assert "no-such-model" in unknown.value.text
    runner, rec = run(client, "no-such-model")
    assert runner.outcome == DownloadOutcome.FAILED and "no-such-model" in rec.failed[0].text
    with pytest.raises(ServerError) as gone:
        client.download_status("dl-gone")
    assert gone.value.status == 404 and gone.value.code == "download_not_found"
    client.cancel_download("dl-gone")  # already gone: nothing to stop


def test_a_restarted_backend_loses_the_download(backend: DownloadServer, client: Client) -> None:
    class Forgetful(Client):
        """A backend that restarted after the download began: it knows no such download."""

        def download_status(self, download_id: str) -> DownloadInfo:
            raise ServerError("No download.", code="download_not_found", status=404)

    backend.mirror.slow["slow.safetensors"] = 0.05
    rec = Recorder()
    runner = DownloadRunner(Forgetful(client.url), "slow-file", False, rec, poll_interval=0.05)
    try:
        assert runner.start().wait(30)
        assert runner.outcome == DownloadOutcome.FAILED
        assert isinstance(rec.failed[0], BackendLost) and "resumed" in rec.failed[0].text
    finally:
        if runner.info is not None:
            client.cancel_download(runner.info.id)
        backend.mirror.slow.pop("slow.safetensors")


class _OldBackend(BaseHTTPRequestHandler):
    """A backend from before downloads: every route it does not have answers 404."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _not_found(self) -> None:
        body = b'{"error": {"code": "not_found", "message": "No such endpoint.", "hint": ""}}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _not_found


def test_an_older_backend_has_no_downloads() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _OldBackend)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        old = Client(f"http://127.0.0.1:{httpd.server_address[1]}")
        assert old.catalog_models() == []
        with pytest.raises(ServerError, match="cannot download models"):
            old.start_download("realesrgan-x4plus")
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- what the lists and the buttons show ---


def words_catalog(models: list[ModelInfo], downloads: list[CatalogModelInfo]) -> Catalog:
    health = Health(status="ok", protocol_version=2, version="0", auth_required=False)
    tasks = [task_info(spec) for spec in default_registry()]
    for info in tasks:
        info.needs_model = not any(info.task in m.tasks for m in models)
    return Catalog(health, tasks, models, downloads)


def upscaler(name: str, scale: int, *traits: str, label: str = "") -> ModelInfo:
    return ModelInfo(
        name,
        ["upscale"],
        "upscale_models",
        True,
        scale=scale,
        label=label,
        traits=list(traits),
        purpose="SR",
    )


def test_model_labels_say_what_a_model_is_for_and_never_contradict_its_scale() -> None:
    x4plus = upscaler("realesrgan-x4plus", 4, "photo", "best", label="Real-ESRGAN x4plus")
    assert model_label(x4plus) == "Real-ESRGAN x4plus — photo, best quality (x4)"
    # an ncnn x2 import is an x4 network plus a resize: the result's scale is what counts
    assert model_label(upscaler("realesr-animevideov3-x2", 2)) == "realesr-animevideov3-x2"
    assert model_label(upscaler("tiny-x2", 4)) == "tiny (x4)"
    assert model_label(upscaler("4x-UltraSharp", 4, "detail")) == "4x-UltraSharp — fine detail"
    assert model_label(upscaler("plain", 0)) == "plain"
    denoiser = ModelInfo("scunet", ["denoise"], "upscale_models", True, scale=1, traits=["photo"])
    assert model_label(denoiser) == "scunet — photo"
    odd = upscaler("m", 2, "old-photo", "new-trait")
    assert model_label(odd) == "m — old photos, new trait (x2)"


def test_the_recommended_download_and_the_fallbacks() -> None:
    def entry(name: str, task: str = "upscale", **kw: bool) -> CatalogModelInfo:
        return CatalogModelInfo(name, task, **{"verified": True, **kw})

    downloads = [
        entry("general"),
        entry("unverified", verified=False),
        entry("best", recommended=True),
        entry("faces", task="face-restore"),
    ]
    catalog = words_catalog([], downloads)
    assert catalog.recommended_download("upscale").name == "best"
    assert catalog.recommended_download("face-restore").name == "faces"
    assert catalog.recommended_download("defects") is None  # runs no model
    assert catalog.recommended_download("no-such-task") is None
    downloads[2].installed = True  # installed but not usable: the first other one
    assert catalog.recommended_download("upscale").name == "general"
    downloads[0].installed = True
    assert catalog.recommended_download("upscale") is None  # only an unverified one is left
    usable = words_catalog([upscaler("mine", 4)], downloads)
    assert usable.recommended_download("upscale") is None


def test_presets_reset_what_another_preset_set() -> None:
    models = [
        upscaler("quick", 4, "fast", "photo"),
        upscaler("anime", 4, "illustration"),
        upscaler("realesrgan-x4plus", 4, "photo", "best"),
    ]
    catalog = words_catalog(models, [])
    # the task's default model has the traits: it is kept over the first that fits
    chosen = apply_preset(catalog, "upscale", "photo", {})
    assert chosen == ("realesrgan-x4plus", {"alpha": "model"})
    assert apply_preset(catalog, "upscale", "fast", {"scale": 2.0}) == (
        "quick",
        {"alpha": "resize", "scale": 2.0},
    )
    assert apply_preset(catalog, "upscale", "no-such-preset", {"scale": 2.0}) == (
        None,
        {"scale": 2.0},
    )
    # refine: Fast sets only the steps; Photo then puts them back to the default
    _, fast = apply_preset(catalog, "refine", "fast", {"seed": 7, "prompt": "mine"})
    assert fast["steps"] == 10 and fast["seed"] == 7 and fast["prompt"] != "mine"
    _, photo = apply_preset(catalog, "refine", "photo", fast)
    assert photo["steps"] == 20 and photo["strength"] == 0.3 and photo["seed"] == 7
    model, natural = apply_preset(catalog, "face-restore", "natural", {"strength": 1.0})
    assert model is None and natural["strength"] == 0.7
