"""The GIMP plug-in's flow on a fake editor against the real server: what each procedure does
apart from GIMP itself. Progress reaches the calling thread (GIMP may only be called from the
plug-in's main thread), errors are typed and worded, and a plug-in killed in the middle of a
job (GIMP's progress-bar Cancel) leaves the job cancelled on the backend.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from plugin.common import task_cache
from plugin.common.errors import BackendUnavailable, NothingSelected, PluginError
from plugin.common.settings import Settings
from plugin.gimp import flow
from plugin.gimp.flow import run_action
from plugin.gimp.procedures import Action, build_settings, spec_for
from shared.geometry import Bounds
from tests import server_fixtures as fx
from tests.plugin_fixtures import FakeEditor, checker
from tests.server_fixtures import free_port

server, tiny_models = fx.server, fx.tiny_models
REPO = Path(__file__).resolve().parents[2]


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []
        self.threads: set[str] = set()

    def progress(self, fraction: float, stage: str) -> None:
        self.calls.append((fraction, stage))
        self.threads.add(threading.current_thread().name)


def settings_for(url: str, spec: str, **values: object) -> tuple[Settings, str]:
    return build_settings(spec_for(spec, []), {"backend-url": url, **values}, Settings(), {})


def selected(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    plane = np.zeros((height, width), np.uint8)
    plane[y:y + h, x:x + w] = 255
    return plane


def test_restore_selection_on_the_calling_thread(server: fx.LiveServer) -> None:
    editor = FakeEditor(checker(width=64, height=48), selected(48, 64, (20, 12, 24, 16)))
    settings, task = settings_for(server.url, "restora-restore-selection", model="tiny-x2",
                                  feather=4.0)
    assert task == ""  # no task given: the backend's first, which is upscale
    sink = Sink()
    name = run_action(Action.RESTORE, editor, settings, task, sink)
    assert name == "Upscale selection - tiny-x2"
    assert sink.threads == {threading.current_thread().name}
    assert sink.calls[0][1] == "connecting to the backend"
    assert any(0 < f <= 1 for f, _ in sink.calls)
    layer = editor.layer("Upscale selection")
    alpha = layer.pixels[..., 3]
    assert alpha[selected(48, 64, (20, 12, 24, 16)) == 0].max() == 0
    assert alpha[24, 32] == 255
    assert [e[0] for e in editor.log] == ["add_layer", "undo_group"]


class TickingSink(Sink):
    """A sink that shows the time, as GIMP's progress line does."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        self.threads.add(threading.current_thread().name)


def test_waiting_moves_the_clock_on_the_calling_thread(server: fx.LiveServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow, "_TICK_SECONDS", 0.05)  # the job's seconds are few here
    editor = FakeEditor(checker(width=64, height=48))
    settings, task = settings_for(server.url, "restora-test-slow-upscale", model="tiny-x2",
                                  options='{"tile": 16, "overlap": 8}')
    sink = TickingSink()
    run_action(Action.TASK, editor, settings, task, sink)
    assert sink.ticks >= 1  # between the backend's reports the elapsed time still moves
    assert sink.threads == {threading.current_thread().name}
    assert any(0 < fraction < 1 for fraction, _ in sink.calls), sink.calls


def test_upscale_scales_the_document_in_one_undo_group(server: fx.LiveServer) -> None:
    editor = FakeEditor(checker(width=32, height=24))
    settings, task = settings_for(server.url, "restora-upscale-image", model="tiny-x4",
                                  options='{"scale": 2.0}')
    assert task == "upscale"
    name = run_action(Action.TASK, editor, settings, task, Sink())
    assert name == "Upscale x2 - tiny-x4"
    assert editor.canvas().width == 64 and editor.canvas().height == 48
    group = "Upscale x2 - tiny-x4"
    assert editor.log == [("scale_canvas", (editor.canvas(), group)),
                          ("add_layer", (group, Bounds(0, 0, 64, 48), group)),
                          ("undo_group", group)]


def test_task_procedure_without_selection_runs_on_the_whole_layer(
        server: fx.LiveServer, tmp_path: Path) -> None:
    editor = FakeEditor(checker(width=16, height=16))
    settings, task = settings_for(server.url, "restora-upscale-image", model="tiny-x2")
    cache = str(tmp_path / task_cache.FILE_NAME)
    run_action(Action.TASK, editor, settings, task, Sink(), tasks_path=cache)
    assert editor.canvas().width == 32  # prepare_task: no selection, the whole image
    # the run cached the backend's tasks: GIMP registers them at its next start
    assert "test-split" in [t.task for t in task_cache.load(cache)]


def test_several_outputs_become_a_group(server: fx.LiveServer) -> None:
    editor = FakeEditor(checker(width=16, height=12))
    settings, task = settings_for(server.url, "restora-test-split")
    name = run_action(Action.TASK, editor, settings, task, Sink())
    assert name == "Split (test)"
    assert editor.log == [("add_layers", (name, ["Brighter", "Inverse"], name)),
                          ("undo_group", name)]


@pytest.mark.parametrize(("spec", "action", "values", "error", "words"), [
    ("restora-video-upscale", Action.TASK, {}, PluginError, "does not run 'Video upscale'"),
    ("restora-face-restore", Action.TASK, {}, PluginError,
     "Restore faces needs a model, and none is installed in facerestore_models/. Put a GFPGAN"),
    ("restora-upscale-image", Action.TASK, {"model": "nope"}, PluginError,
     "no model called 'nope'"),
    ("restora-restore-selection", Action.RESTORE, {}, NothingSelected, "Nothing is selected"),
])
def test_errors_leave_the_document_alone(server: fx.LiveServer, spec, action, values, error,
                                         words) -> None:
    editor = FakeEditor(checker(width=16, height=16))
    settings, task = settings_for(server.url, spec, **values)
    with pytest.raises(error) as caught:
        run_action(action, editor, settings, task, Sink())
    assert words in caught.value.text
    assert editor.log == [] and len(editor.layers) == 1


def test_backend_down_says_how_to_start_it() -> None:
    editor = FakeEditor(checker(width=16, height=16))
    settings, task = settings_for(f"http://127.0.0.1:{free_port()}", "restora-upscale-image")
    with pytest.raises(BackendUnavailable) as caught:
        run_action(Action.TASK, editor, settings, task, Sink())
    assert "Start backend" in caught.value.text
    assert editor.log == []


KILLED_PLUGIN = textwrap.dedent("""
    import sys
    from plugin.common.client import Client
    from plugin.common.job_runner import JobInput
    from plugin.common.pixels import PixelBuffer
    from plugin.gimp.flow import run_job
    from shared.geometry import Bounds, Extent
    from shared.protocol import PixelFormat

    size = 256
    pixels = PixelBuffer(bytes(range(256)) * (size * size * 4 // 256),
                         PixelFormat(size, size, 4, 8))
    job = JobInput("upscale", pixels, Bounds(0, 0, size, size), Extent(size, size),
                   model="tiny-x2", params={"tile": 16, "overlap": 8})

    class Sink:
        def progress(self, fraction, stage):
            print(fraction, stage, flush=True)

    run_job(Client(sys.argv[1]), job, Sink())
""")


def test_killed_plugin_cancels_its_job(server: fx.LiveServer) -> None:
    plugin = subprocess.Popen([sys.executable, "-c", KILLED_PLUGIN, server.url], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            deadline = time.monotonic() + 60
            while (job := http.get("/v1/health").json()["running"]) is None:
                assert plugin.poll() is None, plugin.stderr.read() if plugin.stderr else ""
                assert time.monotonic() < deadline, "the job never started"
                time.sleep(0.05)
            os.kill(plugin.pid, signal.SIGKILL)  # as GIMP does: no chance to clean up
            plugin.wait(10)
            killed = time.monotonic()
            while http.get(f"/v1/jobs/{job}").json()["state"] not in (
                    "cancelled", "finished", "failed"):
                assert time.monotonic() - killed < 10, "the job ran on after the kill"
                time.sleep(0.05)
            assert http.get(f"/v1/jobs/{job}").json()["state"] == "cancelled"
            assert time.monotonic() - killed < 5
    finally:
        if plugin.poll() is None:
            os.kill(plugin.pid, signal.SIGKILL)
            plugin.wait(10)
