"""An automatic upscale on a CPU that would take long: from the job's start its status and
events carry the note naming the fast model that is installed (while there is time to cancel),
its result details carry it too, and a job that named its model gets none."""

from __future__ import annotations

from pathlib import Path

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


def test_an_automatic_upscale_that_would_take_long_names_the_fast_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    side = slow_photo_models(tmp_path / "models" / "upscale_models")
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    # the shipped figures as they are, whatever this machine's thread count
    monkeypatch.setattr(speed_advice, "MEASURED_THREADS", torch.get_num_threads())
    settings = test_settings(ModelsSetup(tmp_path / "models", tmp_path / "home"))
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
    noted = [k for k, e in enumerate(running) if e["note"] == note["message"]]
    assert noted and any(e["stage"] == "upscaling" for e in running[noted[0]:]), running
    assert not any(e["stage"] == "upscaling" for e in running[: noted[0]])
    assert auto["note"] == note["message"]
    assert named["state"] == "finished"
    assert "speed_note" not in named["result"]["details"] and named["note"] == ""
