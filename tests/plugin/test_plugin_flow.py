"""The editor-agnostic plug-in end to end: a FakeEditor, the real client and job runner, and
the real server on loopback with tiny random-weight models.

Upscale image and Restore selection (8 and 16 bits, RGBA and gray), progress on a worker
thread marshalled to the "UI" thread, cancel, a backend that is down, a token, a server that
is not Restora, and a connection cut in the middle of a job.
"""

from __future__ import annotations

import contextlib
import http.server
import queue
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from backend.masking import apply_selection
from plugin.common.catalog import Catalog, fetch_catalog
from plugin.common.client import Client
from plugin.common.connection import Connection, ConnectionState
from plugin.common.errors import (
    BackendUnavailable,
    NothingSelected,
    PluginError,
    ProtocolMismatch,
    ServerError,
    Unauthorized,
)
from plugin.common.job_runner import JobInput, JobRunner, Outcome
from plugin.common.operations import (
    apply_result,
    prepare_restore,
    prepare_task,
    prepare_whole_image,
)
from plugin.common.settings import Settings
from shared.geometry import Bounds
from shared.protocol import PROTOCOL_VERSION
from tests import server_fixtures as fx
from tests.plugin_fixtures import FakeEditor, Recorder, TcpProxy, checker, to_array
from tests.server_fixtures import free_port, live_server, reference_upscale, test_settings

server, tiny_models = fx.server, fx.tiny_models  # one real server for this module

SLOW = {"tile": 32, "overlap": 8}  # hundreds of tiles: a job long enough to interrupt


def settings(**kw: object) -> Settings:
    base = Settings(models={"upscale": "tiny-x2"})
    for key, value in kw.items():
        setattr(base, key, value)
    return base


def run(client: Client, job, timeout: float = 60.0, **kw: object) -> tuple[JobRunner, Recorder]:
    rec = Recorder()
    runner = JobRunner(client, job, rec, **kw).start()
    assert runner.wait(timeout), "the job did not end"
    return runner, rec


def selection(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    plane = np.zeros((height, width), np.uint8)
    plane[y:y + h, x:x + w] = 255
    return plane


def test_connect_lists_tasks_and_models(client: Client, catalog: Catalog) -> None:
    assert catalog.health.protocol_version == PROTOCOL_VERSION
    assert client.instance == catalog.health.instance is not None
    assert catalog.available_tasks()[0].task == "upscale"  # the backend's order
    assert "test-split" in [t.task for t in catalog.available_tasks()]
    # no restoration model on this backend: offered all the same, to say what to get
    assert catalog.offers("denoise") and catalog.task_info("denoise").needs_model
    assert [m.name for m in catalog.models_for("upscale")] == ["tiny-x2", "tiny-x4"]
    assert catalog.resolve_model("upscale", None) in ("tiny-x2", "tiny-x4")
    assert any(not m.usable for m in catalog.models)  # the broken file is listed, not offered


def test_upscale_image_scales_the_document_and_adds_the_layer_on_top(
        client: Client, catalog: Catalog, tiny_models: fx.ModelsSetup) -> None:
    image = checker(width=40, height=30)
    editor = FakeEditor(image)
    editor.layers.append(editor.layers[0].__class__("Above", np.zeros_like(image)))
    prepared = prepare_whole_image(editor, settings(), catalog=catalog)
    assert prepared.input.model == "tiny-x2" and prepared.input.mask is None
    runner, rec = run(client, prepared.input)
    assert runner.outcome == Outcome.FINISHED, rec.failed
    name = apply_result(editor, prepared, rec.finished[0])

    assert name == "Upscale x2 - tiny-x2"
    assert editor.canvas().width == 80 and editor.canvas().height == 60
    assert [layer.name for layer in editor.layers] == ["Background", name, "Above"]
    assert [entry[0] for entry in editor.log] == ["scale_canvas", "add_layer", "undo_group"]
    assert editor.log[0][1][1] == name  # scaling and the new layer are one undo group
    np.testing.assert_array_equal(editor.layer(name).pixels,
                                  reference_upscale(tiny_models, image, "tiny-x2"))
    fractions = [f for f, _ in rec.progress if f >= 0]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any(stage == "sending the image" for _, stage in rec.progress)


def test_upscale_with_options_and_into_a_new_document(client: Client, catalog: Catalog) -> None:
    image = checker(width=24, height=16)
    editor = FakeEditor(image)
    s = settings(upscale_into="document", models={"upscale": "tiny-x4"},
                 options={"upscale": {"scale": 3, "tile": 0}})
    prepared = prepare_whole_image(editor, s, catalog=catalog)
    assert prepared.input.params == {"scale": 3, "tile": 0}
    runner, rec = run(client, prepared.input)
    assert runner.outcome == Outcome.FINISHED, rec.failed
    name = apply_result(editor, prepared, rec.finished[0])
    assert name == "Upscale x3 - tiny-x4"
    assert editor.canvas().width == 24 and len(editor.layers) == 1  # this document unchanged
    assert editor.documents[0][0] == name and editor.documents[0][1].shape == (48, 72, 4)


@pytest.mark.parametrize(("channels", "depth"), [(4, 8), (4, 16), (2, 8)])
def test_restore_selection_is_a_feathered_layer_at_the_selection(
        client: Client, catalog: Catalog, tiny_models: fx.ModelsSetup, channels: int,
        depth: int) -> None:
    image = checker(width=64, height=48, channels=channels, depth=depth)
    mask = selection(48, 64, (20, 12, 24, 16))
    editor = FakeEditor(image, mask)
    before = image.copy()
    s = settings(padding=6, feather=3.0, options={"upscale": {"scale": 4, "tile": 0}})
    prepared = prepare_restore(editor, s, catalog=catalog)
    job = prepared.input
    assert (job.bounds.x, job.bounds.y, job.bounds.width, job.bounds.height) == (14, 6, 36, 28)
    assert job.params == {"tile": 0}  # a selection is restored in place: no scale
    assert job.image.format.depth == depth and job.image.format.channels == channels
    runner, rec = run(client, job)
    assert runner.outcome == Outcome.FINISHED, rec.failed
    name = apply_result(editor, prepared, rec.finished[0])

    assert name == "Upscale selection - tiny-x2"
    assert editor.canvas().width == 64  # nothing scaled
    np.testing.assert_array_equal(editor.layers[0].pixels, before)  # the source is untouched
    layer = editor.layer(name).pixels
    assert layer.dtype == image.dtype and layer.shape == image.shape
    crop = image[6:34, 14:50]
    expected = apply_selection(reference_upscale(tiny_models, crop, "tiny-x2", scale=1.0,
                                                 tile=0), mask[6:34, 14:50, None], 3.0)
    expected[expected[:, :, -1] == 0] = 0  # hidden colour is cleared: empty pixels
    np.testing.assert_array_equal(layer[6:34, 14:50], expected)
    outside = layer.copy()
    outside[12:28, 20:44] = 0
    assert not outside.any()  # transparent (all zero) outside the selection
    alpha = layer[:, :, -1]
    top = 65535 if depth == 16 else 255
    assert (alpha[15:25, 23:41] == top).all()  # opaque beyond the feather
    assert 0 < alpha[12, 30] < top  # the feathered edge


def test_without_a_model_the_backend_runs_its_default(client: Client,
                                                       catalog: Catalog) -> None:
    editor = FakeEditor(checker(width=12, height=10))
    job = JobInput("upscale", editor.read_pixels(Bounds(0, 0, 12, 10)), Bounds(0, 0, 12, 10),
                   editor.canvas())
    assert job.model is None
    runner, rec = run(client, job)
    assert runner.outcome == Outcome.FINISHED, rec.failed
    assert rec.finished[0].model == catalog.default_model("upscale") == "tiny-x2"


def test_a_task_the_backend_does_not_run_is_refused_before_sending(catalog: Catalog) -> None:
    editor = FakeEditor(checker(), selection(48, 64, (4, 4, 8, 8)))
    with pytest.raises(PluginError, match="Denoise needs a model") as caught:
        prepare_restore(editor, settings(task="denoise"), catalog=catalog)
    assert "SCUNet model" in caught.value.hint  # what to install, from the backend's catalog
    with pytest.raises(PluginError, match="does not run 'No such'"):
        prepare_restore(editor, settings(task="no-such"), catalog=catalog)
    assert editor.reads == []


def test_several_outputs_become_one_group_in_order(client: Client, catalog: Catalog) -> None:
    """test-split returns "bright" and "inverse": one group named after the task (it runs
    no model), its layers in the backend's order, each with its own pixels."""
    image = checker(width=24, height=16)
    editor = FakeEditor(image)
    prepared = prepare_task(editor, settings(options={"test-split": {"gain": 1.5}}),
                            "test-split", catalog)
    assert prepared.input.model is None and prepared.input.params == {"gain": 1.5}
    runner, rec = run(client, prepared.input)
    assert runner.outcome == Outcome.FINISHED, rec.failed
    assert any(stage.startswith("splitting: step") for _, stage in rec.progress)
    name = apply_result(editor, prepared, rec.finished[0])
    assert name == "Split (test)"
    assert [layer.name for layer in editor.layers] == ["Background", name]
    group = editor.layer(name)
    assert [child.name for child in group.children] == ["Brighter", "Inverse"]
    assert editor.log == [("add_layers", (name, ["Brighter", "Inverse"], name)),
                          ("undo_group", name)]
    colour = image[..., :3].astype(np.float32)
    np.testing.assert_array_equal(group.children[0].pixels[..., :3],
                                  np.clip(colour * 1.5, 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(group.children[1].pixels[..., :3], 255 - image[..., :3])
    assert editor.canvas().width == 24  # the task does not resize: nothing scaled


def test_restore_needs_a_selection(catalog: Catalog) -> None:
    editor = FakeEditor(checker())
    with pytest.raises(NothingSelected, match="Nothing is selected"):
        prepare_restore(editor, settings(), catalog=catalog)
    assert editor.reads == []


def test_callbacks_reach_the_ui_thread_through_dispatch(client: Client, catalog: Catalog) -> None:
    ui: queue.Queue = queue.Queue()
    editor = FakeEditor(checker(width=16, height=16))
    prepared = prepare_whole_image(editor, settings(), catalog=catalog)
    rec = Recorder()
    runner = JobRunner(client, prepared.input, rec, dispatch=ui.put).start()
    deadline = time.monotonic() + 60
    while not (runner.done and ui.empty()):
        assert time.monotonic() < deadline
        with contextlib.suppress(queue.Empty):
            ui.get(timeout=0.1)()  # the "UI thread" runs what the worker hands it
    assert rec.threads == {threading.current_thread().name} and len(rec.finished) == 1


def test_cancel_a_running_job(client: Client, catalog: Catalog) -> None:
    editor = FakeEditor(checker(width=320, height=320))
    s = settings(options={"upscale": SLOW})
    prepared = prepare_whole_image(editor, s, catalog=catalog)
    rec = Recorder()
    runner = JobRunner(client, prepared.input, rec).start()
    assert rec.started.wait(60), rec.failed
    t0 = time.monotonic()
    runner.cancel()
    assert runner.wait(20)
    assert runner.outcome == Outcome.CANCELLED and rec.cancelled == 1
    assert not rec.finished and not rec.failed
    assert time.monotonic() - t0 < 10
    assert client.status(runner.job_id).state.value == "cancelled"
    assert editor.log == []  # nothing reached the document


def test_cancel_before_the_job_reaches_the_backend(client: Client, catalog: Catalog) -> None:
    prepared = prepare_whole_image(FakeEditor(checker()), settings(), catalog=catalog)
    rec = Recorder()
    runner = JobRunner(client, prepared.input, rec)
    runner.cancel()  # not started: nothing to tell the backend yet
    runner.start()
    assert runner.wait(30) and runner.outcome == Outcome.CANCELLED


def test_backend_down_says_how_to_start_it(catalog: Catalog) -> None:
    editor = FakeEditor(checker())
    prepared = prepare_whole_image(editor, settings(), catalog=catalog)
    dead = Client(f"http://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    runner, rec = run(dead, prepared.input)
    assert time.monotonic() - t0 < 5
    assert runner.outcome == Outcome.FAILED
    (error,) = rec.failed
    assert isinstance(error, BackendUnavailable)
    assert "not running" in error.message and "Start backend" in error.hint
    assert editor.log == []


def test_connection_state_for_the_docker(server: fx.LiveServer) -> None:
    changes: list[ConnectionState] = []
    down = Connection(f"http://127.0.0.1:{free_port()}", on_change=lambda c: changes.append(
        c.state))
    assert down.refresh()
    while down.refreshing:
        time.sleep(0.02)
    assert down.state == ConnectionState.DISCONNECTED and "not running" in down.describe()
    down.configure(server.url, "")
    assert down.refresh()
    deadline = time.monotonic() + 30
    while down.refreshing and time.monotonic() < deadline:
        time.sleep(0.02)
    assert down.connected and down.describe().startswith("Connected: Restora")
    assert changes[:2] == [ConnectionState.CONNECTING, ConnectionState.DISCONNECTED]


def test_server_errors_reach_the_painter_in_words(client: Client, catalog: Catalog) -> None:
    prepared = prepare_whole_image(FakeEditor(checker()), settings(
        options={"upscale": {"tile": 3}}), catalog=catalog)
    _runner, rec = run(client, prepared.input)
    (error,) = rec.failed
    assert isinstance(error, ServerError) and error.status == 422
    assert "tile" in error.message


def test_a_token_is_sent_and_a_missing_or_wrong_one_explained(tiny_models) -> None:
    with live_server(test_settings(tiny_models, token="s3cret")) as live:
        with pytest.raises(Unauthorized, match="needs a token"):
            Client(live.url).connect()
        with pytest.raises(Unauthorized, match="refused the token"):
            Client(live.url, token="nope").connect()
        good = Client(live.url, token="s3cret")
        catalog = fetch_catalog(good)
        prepared = prepare_whole_image(FakeEditor(checker(width=8, height=8)), settings(),
                                       catalog=catalog)
        runner, rec = run(good, prepared.input)
        assert runner.outcome == Outcome.FINISHED, rec.failed


@pytest.fixture
def not_restora() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>a web page</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_server_that_is_not_restora(not_restora: str) -> None:
    with pytest.raises(ProtocolMismatch, match="not a Restora backend"):
        Client(not_restora).connect()


def test_a_cut_connection_is_resumed_with_the_last_event_id(
        server: fx.LiveServer, catalog: Catalog) -> None:
    proxy = TcpProxy(int(server.url.rsplit(":", 1)[1]))
    try:
        client = Client(proxy.url)
        prepared = prepare_whole_image(FakeEditor(checker(width=160, height=160)),
                                       settings(options={"upscale": SLOW}), catalog=catalog)
        rec = Recorder()
        runner = JobRunner(client, prepared.input, rec, reconnect_timeout=20).start()
        assert rec.started.wait(60)
        proxy.refuse(1.0)  # the stream breaks and the backend is unreachable for a second
        assert runner.wait(60)
        assert runner.outcome == Outcome.FINISHED, rec.failed
        assert any("reconnecting" in stage for _, stage in rec.progress)
        assert rec.finished[0].pixels.format.width == 320
    finally:
        proxy.close()


def test_a_closed_document_drops_the_result(client: Client, catalog: Catalog) -> None:
    from plugin.common.errors import DocumentGone

    editor = FakeEditor(checker(width=16, height=16))
    prepared = prepare_whole_image(editor, settings(), catalog=catalog)
    _runner, rec = run(client, prepared.input)
    editor.alive = False
    with pytest.raises(DocumentGone, match="closed"):
        apply_result(editor, prepared, rec.finished[0])
    assert to_array(rec.finished[0].pixels).shape == (32, 32, 4)


def test_saved_options_a_task_lacks_are_not_sent_without_a_catalog(client: Client) -> None:
    """A job from a script without the catalog: the runner asks the backend for the task's
    parameters, and a stale saved option is dropped with a note, not a failed job."""
    editor = FakeEditor(checker(width=24, height=16))
    params = {"tile": 0, "fidelity": 0.5, "strength": 1.0}
    job = JobInput("upscale", editor.read_pixels(Bounds(0, 0, 24, 16)), Bounds(0, 0, 24, 16),
                   editor.canvas(), model="tiny-x2", params=params)
    runner, rec = run(client, job)
    assert runner.outcome == Outcome.FINISHED, rec.failed
    assert rec.finished[0].notes == [
        "Dropped the saved options 'fidelity', 'strength' that Upscale does not have."]
