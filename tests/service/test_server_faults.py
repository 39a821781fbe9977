"""Faults on the real server: a server killed with -9 leaves no users' pixels behind for good,
ncnn-imported x2 models are sized as x2, and running out of memory really frees the models."""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import server_fixtures as fx
from tests.server_fixtures import Client, live_server, random_image

tiny_models, face_server = fx.tiny_models, fx.face_server  # fixtures

ROOT = Path(__file__).resolve().parents[2]


def spill_folders(home: Path) -> list[Path]:
    return sorted((home / "cache" / "results").glob("results-*"))


# --- 17. spilled results ---------------------------------------------------------------------


def _serve_spilling(models: fx.ModelsSetup, port: int) -> subprocess.Popen[str]:
    env = {
        **fx.env_without_restora(),
        "RESTORA_HOME": str(models.home),
        "RESTORA_MODELS": str(models.root),
        "RESTORA_RESULT_MEMORY_BYTES": "1000",  # every result goes to disk
    }
    return subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "serve", "--port", str(port), "--device", "cpu"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_spills_of_a_killed_server_are_removed_at_the_next_start(
    tiny_models: fx.ModelsSetup,
) -> None:
    before = set(Path(tempfile.gettempdir()).glob("restora-results-*"))
    port = fx.free_port()
    proc = _serve_spilling(tiny_models, port)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).json()["ready"]:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "restora serve did not start"
            time.sleep(0.1)
        c = Client(url, "killed")
        job = c.submit(random_image(10, 12))
        assert c.wait(job["id"])["state"] == "finished"
        c.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=20)
    stale = spill_folders(tiny_models.home)
    assert [p.name for p in stale] and any(stale[0].glob("*.npy")), "the result did not spill"
    assert stale[0].name.startswith(f"results-{proc.pid}-")
    assert set(Path(tempfile.gettempdir()).glob("restora-results-*")) == before

    settings = fx.test_settings(tiny_models, result_memory_bytes=1000)
    with live_server(settings) as first:
        assert not any(p.exists() for p in stale), "the dead server's pixels are still there"
        c = Client(first.url, "alive")
        image = random_image(10, 12, seed=5)
        job = c.submit(image)
        assert c.wait(job["id"])["state"] == "finished"
        (mine,) = spill_folders(tiny_models.home)
        # a second server starting does not take a running server's spills
        with live_server(settings):
            assert mine.exists()
        np.testing.assert_array_equal(c.result(job["id"]), fx.reference_upscale(tiny_models, image))
        c.close()
    assert not mine.exists(), "a server that stopped cleanly left its spills"


# --- 18. models whose output scale is not the network's -----------------------------------------


@pytest.fixture(scope="module")
def ncnn_x2_server(
    tiny_models: fx.ModelsSetup, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[fx.LiveServer]:
    """An x4 network that says it delivers x2, as `restora models import-ncnn` writes them."""
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("ncnn-models")
    path = fx.make_tiny_model(root / "upscale_models" / "ncnn-x2.safetensors", 4, seed=3)
    save_file(load_file(str(path)), str(path), metadata={"source": "ncnn", "output_scale": "2"})
    settings = fx.test_settings(fx.ModelsSetup(root, tiny_models.home), max_output_pixels=2000)
    with live_server(settings) as live:
        yield live


def test_an_x4_network_resized_to_x2_is_an_x2_model(ncnn_x2_server: fx.LiveServer) -> None:
    c = Client(ncnn_x2_server.url, "ncnn")
    try:
        (info,) = c.http.get("/v1/models", params={"task": "upscale"}).json()
        assert (info["name"], info["scale"], info["network_scale"]) == ("ncnn-x2", 2, 4)
        # 12x12 x2 is 576 pixels, within the limit of 2000; x4 would be 2304, beyond it
        job = c.submit(random_image(12, 12), model="ncnn-x2")
        status = c.wait(job["id"])
        assert status["state"] == "finished", status
        assert (status["result"]["width"], status["result"]["height"]) == (24, 24)
        r = c.http.post(
            "/v1/jobs",
            json={"task": "upscale", "model": "ncnn-x2", "image": c.upload(random_image(40, 40))},
        )
        assert r.status_code == 413 and "80x80" in r.json()["error"]["message"], r.text
    finally:
        c.close()


# --- 19. out of memory frees the models, helpers included ----------------------------------------


def test_out_of_memory_leaves_no_model_alive(face_server: fx.LiveServer) -> None:
    """Test-only face tasks (tests/extra_tasks.py) run out of memory once, and always."""
    from tests import extra_tasks

    manager = face_server.app.state.jobs
    extra_tasks.face_models_seen.clear()
    extra_tasks.loaded_at_retry.clear()
    body = {"model": fx.FACE_MODEL, "params": {"upscale_model": "tiny-x2"}}
    c = Client(face_server.url, "oom")
    try:
        job = c.submit(random_image(32, 32), task="test-faces-oom-first", **body)
        status = c.wait(job["id"])
        assert status["state"] == "finished", status
        # the retry found the first run's model and helper gone, and loaded them afresh
        (dead, loaded) = extra_tasks.loaded_at_retry[0]
        assert dead == [True, True]
        assert sorted(loaded) == [fx.FACE_MODEL, "tiny-x2"]

        extra_tasks.face_models_seen.clear()
        job = c.submit(random_image(32, 32, seed=1), task="test-faces-oom-always", **body)
        status = c.wait(job["id"])
        assert status["state"] == "failed" and status["error"]["code"] == "out_of_memory"
        gc.collect()
        seen = extra_tasks.face_models_seen
        assert len(seen) == 4 and all(r() is None for r in seen), "a model outlived the job"
        assert manager.models.loaded_names() == []
    finally:
        c.close()


def test_a_model_beyond_the_memory_budget_is_refused_with_what_it_needs(
    tiny_models: fx.ModelsSetup,
) -> None:
    settings = fx.test_settings(tiny_models, model_device_bytes=4096, model_host_bytes=4096)
    with fx.live_server(settings) as live:
        c = Client(live.url, "budget")
        try:
            status = c.wait(c.submit(random_image(8, 8))["id"])
        finally:
            c.close()
    assert status["state"] == "failed" and status["error"]["code"] == "out_of_memory"
    assert "MB" in status["error"]["message"], status["error"]
