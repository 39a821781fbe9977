"""An automatic upscale on a CPU that would take long: from the job's start its status and
events carry the note naming the fast model that is installed (while there is time to cancel),
its result details carry it too, and a job that named its model gets none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend import speed_advice
from tests.server_fixtures import (
    Client,
    ModelsSetup,
    live_server,
    random_image,
    slow_photo_models,
    test_settings,
)


def slow_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, Any]:
    """Server settings over the slow default photo model and the fast one, with the shipped
    figures as they are whatever this machine's thread count; and the side of a square image
    that brings the note."""
    import torch

    side = slow_photo_models(tmp_path / "models" / "upscale_models")
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(speed_advice, "MEASURED_THREADS", torch.get_num_threads())
    return side, test_settings(ModelsSetup(tmp_path / "models", tmp_path / "home"))


def test_an_automatic_upscale_that_would_take_long_names_the_fast_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    side, settings = slow_backend(tmp_path, monkeypatch)
    with live_server(settings) as live:
        client = Client(live.url)
        try:
            image = random_image(side, side, seed=5)
            auto_id = client.submit(image, model=None)["id"]
            events = client.events(
                lambda e: e["job"] == auto_id and e["type"] in ("finished", "failed"), after=0
            )
            auto = client.wait(auto_id)
            named = client.wait(client.submit(image, model="realesrgan-x4plus")["id"])
        finally:
            client.close()
    assert auto["state"] == "finished", auto
    assert auto["model"] == "realesrgan-x4plus"  # advised, not switched
    note = auto["result"]["details"]["speed_note"]
    assert note["faster_model"] == "realesr-general-x4v3"
    assert note["seconds"] > 60 and note["faster_seconds"] < note["seconds"] / 3
    assert "realesr-general-x4v3" in note["message"]
    # said before the upscale's first tile: a progress event of the running job carries it
    running = [e for e in events if e["job"] == auto_id and e["state"] == "running"]
    assert note["brief"].startswith("Faster: realesr-general-x4v3, about ")
    noted = [k for k, e in enumerate(running) if e["note"] == note["brief"]]
    assert noted and any(e["stage"] == "upscaling" for e in running[noted[0]:]), running
    assert not any(e["stage"] == "upscaling" for e in running[: noted[0]])
    assert auto["note"] == note["brief"]
    assert named["state"] == "finished"
    assert "speed_note" not in named["result"]["details"] and named["note"] == ""


def test_the_editors_recommended_model_gets_the_note_while_it_runs_and_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plug-ins' own path: a job prepared with Recommended (no model chosen) names no
    model, so the backend advises; the progress the editors show carries the note after the
    time, and the result's words name the fast model."""
    from plugin.common.catalog import fetch_catalog
    from plugin.common.client import Client as PluginClient
    from plugin.common.job_runner import JobRunner, Outcome
    from plugin.common.operations import prepare_whole_image
    from plugin.common.progress import progress_line
    from plugin.common.result_words import result_notes
    from plugin.common.settings import Settings
    from tests.plugin_fixtures import FakeEditor, Recorder

    side, settings = slow_backend(tmp_path, monkeypatch)
    with live_server(settings) as live:
        client = PluginClient(live.url)
        catalog = fetch_catalog(client)
        image = random_image(side, side, seed=6)
        rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
        prepared = prepare_whole_image(FakeEditor(rgba), Settings(), "upscale", catalog)
        assert prepared.input.model is None  # Recommended: left to the backend
        rec = Recorder()
        runner = JobRunner(client, prepared.input, rec).start()
        assert runner.wait(120) and runner.outcome == Outcome.FINISHED, rec.failed
    result = rec.finished[0]
    assert result.model == catalog.default_model("upscale") == "realesrgan-x4plus"
    noted = [stage for _, stage in rec.progress if "realesr-general-x4v3" in stage]
    assert noted, rec.progress
    line = progress_line(noted[-1], None)
    assert line.startswith(noted[-1].split("\n")[0] + " · ") and "here against about" in line
    assert any(n.startswith("Faster: realesr-general-x4v3") for n in result_notes(result.details))
