"""Face restoration through the real server on loopback: the task's form, the result layer and
what the result says about the faces found."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests import server_fixtures as fx
from tests.server_fixtures import Client

# two servers: one with upscalers and a face model, one with upscalers only
server, tiny_models, face_server = fx.server, fx.tiny_models, fx.face_server


@pytest.fixture
def client(face_server: fx.LiveServer) -> Iterator[Client]:
    c = Client(face_server.url, name="faces")
    yield c
    c.close()


def test_the_task_is_offered_with_its_parameters(client: Client) -> None:
    tasks = {t["task"]: t for t in client.http.get("/v1/tasks").json()}
    info = tasks["face-restore"]
    assert info["available"] and info["mask"] == "optional" and info["title"] == "Restore faces"
    assert info["default_model"] == "random-restoreformer"
    params = {p["name"]: p for p in info["params"]}
    assert params["fidelity"]["default"] == 0.5 and params["strength"]["type"] == "float"
    assert params["fidelity"]["applies_to"] == ["CodeFormer"]  # shown for CodeFormer only
    assert params["upscale_model"]["widget"] == "model"
    assert params["upscale_model"]["purposes"] == ["SR", "Restoration"]
    assert params["upscale_model"]["optional"] and "max_output_pixels" not in params
    models = client.http.get("/v1/models", params={"task": "face-restore"}).json()
    assert [m["name"] for m in models] == ["random-restoreformer"]


def test_a_photo_comes_back_as_a_layer_of_its_faces(client: Client, astronaut: np.ndarray) -> None:
    job = client.submit(astronaut, task="face-restore", model=None)
    status = client.wait(job["id"], timeout=120)
    assert status["state"] == "finished", status
    result = status["result"]
    assert result["channels"] == 4 and (result["width"], result["height"]) == (512, 512)
    details = result["details"]
    assert details["restored"] == 1 and details["message"] == "Restored 1 face."
    (face,) = details["faces"]
    x0, y0, x1, y1 = face["box"]
    assert 165 < (x0 + x1) / 2 < 255 and 55 < (y0 + y1) / 2 < 160
    assert len(face["landmarks"]) == 5 and face["restored"]
    layer = client.result(job["id"])
    alpha = layer[..., 3]
    ys, xs = np.nonzero(alpha)
    assert 0.02 < (alpha > 0).mean() < 0.25  # the face, transparent elsewhere
    assert x0 - 40 < xs.mean() < x1 + 40 and y0 - 40 < ys.mean() < y1 + 40
    assert not layer[..., :3][alpha == 0].any()


def test_no_face_is_news_not_an_error(client: Client) -> None:
    from skimage import data

    job = client.submit(np.ascontiguousarray(data.coffee()), task="face-restore", model=None)
    status = client.wait(job["id"], timeout=120)
    assert status["state"] == "finished", status
    result = status["result"]
    assert result["details"] == {
        "faces": [],
        "restored": 0,
        "message": "No face found in the image.",
    }
    # nothing to add: no output, and the result says so
    assert result["nothing_found"] and result["message"] == "No face found in the image."
    assert result["outputs"] == []
    r = client.http.get(f"/v1/jobs/{job['id']}/result")
    assert r.status_code == 409 and r.json()["error"]["hint"] == "No face found in the image."


def test_background_upscale_in_the_same_job(client: Client, astronaut: np.ndarray) -> None:
    small = np.ascontiguousarray(astronaut[::2, ::2])
    job = client.submit(
        small,
        task="face-restore",
        model="random-restoreformer",
        params={"upscale_model": "tiny-x2"},
        bounds={"x": 0, "y": 0, "width": 256, "height": 256},
        canvas={"width": 256, "height": 256},
    )
    status = client.wait(job["id"], timeout=120)
    assert status["state"] == "finished", status
    placement = status["result"]["placement"]
    assert placement["scale_x"] == 2 and placement["canvas"] == {"width": 512, "height": 512}
    assert status["result"]["details"]["restored"] == 1
    assert client.result(job["id"]).shape == (512, 512, 3)  # the whole photo, upscaled


def test_an_unknown_upscale_model_is_refused_before_queueing(
    client: Client, astronaut: np.ndarray
) -> None:
    body = {
        "task": "face-restore",
        "image": client.upload(astronaut),
        "params": {"upscale_model": "no-such-model"},
    }
    r = client.http.post("/v1/jobs", json=body)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert "no-such-model" in r.json()["error"]["message"]


def test_a_face_model_is_not_an_upscaler(client: Client, astronaut: np.ndarray) -> None:
    body = {
        "task": "face-restore",
        "image": client.upload(astronaut),
        "params": {"upscale_model": "random-restoreformer"},
    }
    r = client.http.post("/v1/jobs", json=body)
    assert r.status_code == 422 and "needs a SR or Restoration model" in r.text


def test_without_a_face_model_the_error_says_what_to_install(
    server: fx.LiveServer, astronaut: np.ndarray
) -> None:
    c = Client(server.url, name="no-faces")
    try:
        body = {"task": "face-restore", "image": c.upload(astronaut[:64, :64].copy())}
        r = c.http.post("/v1/jobs", json=body)
    finally:
        c.close()
    error = r.json()["error"]
    assert r.status_code == 404 and error["code"] == "model_not_found"
    assert "No model for Restore faces is installed" in error["message"]
    assert "facerestore_models" in error["hint"]


def test_without_a_face_model_the_task_is_unavailable_and_says_what_to_install(
    server: fx.LiveServer,
) -> None:
    tasks = {t["task"]: t for t in httpx.get(f"{server.url}/v1/tasks", timeout=30).json()}
    info = tasks["face-restore"]
    assert not info["available"] and info["needs_model"] and info["default_model"] is None
    assert "needs a model" in info["reason"] and "facerestore_models" in info["reason"]
    assert "restora models download gfpgan-v1.4" in info["hint"]
    assert "GFPGAN" in info["hint"] and "facerestore_models" in info["hint"]
    upscale = tasks["upscale"]
    assert upscale["available"] and not upscale["needs_model"] and upscale["reason"] == ""
