"""Model downloads through the server: /v1/catalog and /v1/downloads against a local mirror.

The server starts with no upscale model; its catalog (the `catalog` setting) names real tiny
upscalers and a few files that go wrong, all served by a local HTTP server (tests/model_mirror.py)
that `catalog_base_url` points at. A finished download is in the registry at once: /v1/models
lists it with its catalog label and traits, /v1/tasks offers the task, and a job runs with it.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import server_fixtures as fx
from tests.model_mirror import (
    DownloadServer,
    Mirror,
    MirrorModel,
    download_server,
    noise,
    tiny_model_bytes,
)

SLOW_BYTES = 2 << 20  # sent in 16 KiB pieces 50 ms apart: about six seconds


@dataclass
class Setup:
    server: DownloadServer
    http: httpx.Client

    @property
    def live(self) -> fx.LiveServer:
        return self.server.live

    @property
    def mirror(self) -> Mirror:
        return self.server.mirror

    def target(self, folder: str, file: str) -> Path:
        return self.server.target(folder, file)


def catalog_models(tmp: Path) -> list[MirrorModel]:
    photo = tiny_model_bytes(tmp, 2, seed=11)
    return [
        MirrorModel(
            "tiny-photo",
            "tiny-photo-x2.safetensors",
            photo,
            label="Tiny Photo",
            traits=["photo", "fast"],
            recommended=True,
        ),
        MirrorModel(
            "tiny-nc",
            "tiny-nc-x4.safetensors",
            tiny_model_bytes(tmp, 4, seed=12),
            licence="CC-BY-NC-4.0",
            non_commercial=True,
            label="Tiny NC",
        ),
        MirrorModel(
            "tiny-bad",
            "tiny-bad-x2.safetensors",
            tiny_model_bytes(tmp, 2, seed=13),
            sha256="0" * 64,
        ),
        MirrorModel("tiny-full", "tiny-full-x2.safetensors", tiny_model_bytes(tmp, 2, seed=14)),
        MirrorModel("tiny-offline", "tiny-offline.safetensors", photo[:-1] + b"\0"),
        MirrorModel("tiny-loose", "tiny-loose.safetensors", photo, sha256=""),
        # no model: a large file on its way, to cancel (in a folder no task loads)
        MirrorModel(
            "slow-file",
            "slow.safetensors",
            noise(SLOW_BYTES),
            task="instruct-edit",
            folder="text_encoders",
        ),
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with (
        download_server(tmp_path_factory, catalog_models) as server,
        httpx.Client(base_url=server.live.url, timeout=60) as http,
    ):
        yield Setup(server, http)


def start(setup: Setup, name: str, accept: bool = False, status: int = 202) -> dict[str, Any]:
    r = setup.http.post("/v1/downloads", json={"name": name, "accept_licence": accept})
    assert r.status_code == status, r.text
    return r.json()


def wait(setup: Setup, download_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = setup.http.get(f"/v1/downloads/{download_id}")
        assert r.status_code == 200, r.text
        info = r.json()
        if info["state"] in ("finished", "failed", "cancelled"):
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.05)


def catalog(setup: Setup, task: str | None = None) -> dict[str, dict[str, Any]]:
    r = setup.http.get("/v1/catalog", params={"task": task} if task else {})
    assert r.status_code == 200, r.text
    return {m["name"]: m for m in r.json()}


def task(setup: Setup, task_id: str) -> dict[str, Any]:
    return next(t for t in setup.http.get("/v1/tasks").json() if t["task"] == task_id)


def test_a_download_installs_the_model_and_the_task_can_run(setup: Setup) -> None:
    before = catalog(setup, "upscale")
    photo = before["tiny-photo"]
    assert not photo["installed"] and photo["verified"] and photo["recommended"]
    assert (photo["label"], photo["traits"], photo["licence"]) == (
        "Tiny Photo",
        ["photo", "fast"],
        "MIT",
    )
    assert photo["size_bytes"] == len(setup.mirror.files["tiny-photo-x2.safetensors"])
    assert "slow-file" not in before  # another task's
    assert task(setup, "upscale")["needs_model"]

    info = start(setup, "tiny-photo")
    assert info["name"] == "tiny-photo" and info["state"] in ("queued", "downloading", "verifying")
    done = wait(setup, info["id"])
    assert done["state"] == "finished", done
    assert done["bytes_done"] == done["bytes_total"] == photo["size_bytes"]
    assert done["model"] == "tiny-photo-x2" and done["label"] == "Tiny Photo"
    assert setup.target("upscale_models", "tiny-photo-x2.safetensors").is_file()

    models = {m["name"]: m for m in setup.http.get("/v1/models?task=upscale").json()}
    model = models["tiny-photo-x2"]
    assert model["usable"] and model["scale"] == 2
    assert (model["label"], model["traits"], model["catalog_name"]) == (
        "Tiny Photo",
        ["photo", "fast"],
        "tiny-photo",
    )
    upscale = task(setup, "upscale")
    assert upscale["available"] and not upscale["needs_model"]
    assert upscale["default_model"] == "tiny-photo-x2"
    assert catalog(setup)["tiny-photo"]["installed"]

    client = fx.Client(setup.live.url)
    try:
        job = client.submit(fx.random_image(8, 8), model="tiny-photo-x2")
        assert client.wait(job["id"])["state"] == "finished"
        assert client.result(job["id"]).shape == (16, 16, 3)
    finally:
        client.close()

    # asked again: the intact file is kept, nothing is fetched
    fetched = len(setup.mirror.asked_for("tiny-photo-x2.safetensors"))
    again = wait(setup, start(setup, "tiny-photo")["id"])
    assert again["state"] == "finished" and again["model"] == "tiny-photo-x2"
    assert len(setup.mirror.asked_for("tiny-photo-x2.safetensors")) == fetched
    listed = [d["id"] for d in setup.http.get("/v1/downloads").json()]
    assert info["id"] in listed and again["id"] in listed


def test_a_non_commercial_model_needs_its_licence_accepted(setup: Setup) -> None:
    r = setup.http.post("/v1/downloads", json={"name": "tiny-nc"})
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "licence_not_accepted"
    assert "CC-BY-NC-4.0" in error["message"] and "non-commercial" in error["message"]
    assert not setup.target("upscale_models", "tiny-nc-x4.safetensors").exists()
    assert setup.mirror.asked_for("tiny-nc-x4.safetensors") == []

    done = wait(setup, start(setup, "tiny-nc", accept=True)["id"])
    assert done["state"] == "finished" and done["model"] == "tiny-nc-x4"
    assert setup.target("upscale_models", "tiny-nc-x4.safetensors").is_file()


def test_a_checksum_mismatch_fails_and_installs_nothing(setup: Setup) -> None:
    done = wait(setup, start(setup, "tiny-bad")["id"])
    assert done["state"] == "failed" and done["error"]["code"] == "checksum_mismatch"
    assert "sha256" in done["error"]["message"] and done["model"] == ""
    target = setup.target("upscale_models", "tiny-bad-x2.safetensors")
    assert not target.exists() and not target.with_name(target.name + ".part").exists()
    assert not catalog(setup)["tiny-bad"]["installed"]


def test_an_unreachable_host_fails_naming_it(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    queue = setup.live.app.state.downloads
    port = fx.free_port()  # nothing listens there
    monkeypatch.setattr(queue, "base_url", f"http://127.0.0.1:{port}/")
    monkeypatch.setattr(queue, "backoff", 0.0)
    done = wait(setup, start(setup, "tiny-offline")["id"])
    assert done["state"] == "failed" and done["error"]["code"] == "download_failed"
    assert f"127.0.0.1:{port} could not be reached" in done["error"]["message"]
    target = setup.target("upscale_models", "tiny-offline.safetensors")
    assert not target.exists() and not target.with_name(target.name + ".part").exists()


def test_a_full_disk_fails_and_installs_nothing(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.models import download

    def no_space(self: Any, f: Any, chunk: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download._Part, "append", no_space)  # the server runs in this process
    done = wait(setup, start(setup, "tiny-full")["id"])
    assert done["state"] == "failed" and done["error"]["code"] == "disk_full"
    assert "disk is full" in done["error"]["message"]
    assert not setup.target("upscale_models", "tiny-full-x2.safetensors").exists()


def test_a_cancel_stops_the_download_and_a_new_one_resumes(setup: Setup) -> None:
    file = "slow.safetensors"
    target = setup.target("text_encoders", file)
    part = target.with_name(file + ".part")
    setup.mirror.slow[file] = 0.05
    first = start(setup, "slow-file")
    same = start(setup, "slow-file", status=200)  # on its way already: the same download
    assert same["id"] == first["id"]
    deadline = time.monotonic() + 30
    while setup.http.get(f"/v1/downloads/{first['id']}").json()["bytes_done"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    asked = time.monotonic()
    r = setup.http.delete(f"/v1/downloads/{first['id']}")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "cancelled" and time.monotonic() - asked < 2.0
    assert 0 < r.json()["bytes_done"] < SLOW_BYTES
    assert not target.exists() and 0 < part.stat().st_size < SLOW_BYTES
    time.sleep(0.3)  # nothing more arrives, and the file never appears
    assert not target.exists()
    # cancelling again changes nothing
    again = setup.http.delete(f"/v1/downloads/{first['id']}").json()
    assert again["state"] == "cancelled"

    setup.mirror.slow.pop(file)
    kept = part.stat().st_size
    done = wait(setup, start(setup, "slow-file")["id"])
    assert done["state"] == "finished", done
    assert setup.mirror.asked_for(file)[-1] == f"bytes={kept}-"  # resumed, not started over
    assert target.read_bytes() == setup.mirror.files[file] and not part.exists()


def test_names_and_ids_that_are_refused(setup: Setup) -> None:
    r = setup.http.post("/v1/downloads", json={"name": "no-such-model"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert "no-such-model" in r.json()["error"]["message"]
    r = setup.http.post("/v1/downloads", json={"name": "tiny-loose"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "unverified_model"
    assert "tiny-loose" in r.json()["error"]["message"]
    r = setup.http.post("/v1/downloads", json={"name": "x" * 300})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter"
    r = setup.http.post("/v1/downloads", json={"accept_licence": True})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = setup.http.post(
        "/v1/downloads", content=b"tiny-photo", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    for method in ("GET", "DELETE"):
        r = setup.http.request(method, "/v1/downloads/dl-unknown")
        assert r.status_code == 404 and r.json()["error"]["code"] == "download_not_found"
        r = setup.http.request(method, "/v1/downloads/not%20an%20id")
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = setup.http.get("/v1/catalog", params={"task": "Not A Task"})
    assert r.status_code == 422
    assert catalog(setup, "video-upscale") == {}  # a task the catalog has nothing for


def test_the_routes_are_guarded_like_the_others(setup: Setup) -> None:
    for method, path in (("GET", "/v1/catalog"), ("POST", "/v1/downloads")):
        r = setup.http.request(method, path, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_origin"
        r = setup.http.request(method, path, headers={"Host": "evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_host"
    big = {"name": "tiny-photo", "pad": "x" * (2 << 20)}
    r = setup.http.post("/v1/downloads", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"


def test_a_server_with_a_token_asks_for_it(tiny_models: fx.ModelsSetup) -> None:
    token = "a-token-long-enough-to-use"
    with fx.live_server(fx.test_settings(tiny_models, token=token)) as live:
        assert httpx.get(f"{live.url}/v1/catalog").status_code == 401
        r = httpx.post(f"{live.url}/v1/downloads", json={"name": "realesrgan-x4plus"})
        assert r.status_code == 401
        r = httpx.get(f"{live.url}/v1/catalog", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and any(m["name"] == "realesrgan-x4plus" for m in r.json())


tiny_models = fx.tiny_models
