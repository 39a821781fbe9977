"""The job server end to end: the real app under uvicorn on loopback, tiny random-weight models.

Submit, follow events, fetch; placement; selection restore; cancel; remove; idempotent
resubmit; many clients at once; reconnecting clients; failures and out-of-memory; expiry.
"""

from __future__ import annotations

import io
import statistics
import threading
import time

import numpy as np
import pytest
from PIL import Image

from backend.imaging import decode, encode
from shared.protocol import JobEvent, JobStatus
from tests import server_fixtures as fx
from tests.server_fixtures import Client, live_server, random_image, reference_upscale

server, tiny_models = fx.server, fx.tiny_models  # fixtures, one server for this module


@pytest.fixture
def client(server: fx.LiveServer, request: pytest.FixtureRequest):
    c = Client(server.url, name=request.node.name.replace("[", "-").replace("]", "")[:60])
    yield c
    c.close()


def slow_job_image() -> np.ndarray:
    # ~170 tiles of 32 px, each made to take 10 ms or more (see SLOW)
    return random_image(320, 320, seed=7)


#: the test-only task "test-slow-upscale" (tests/extra_tasks.py) makes each tile take 10 ms+
SLOW = {"task": "test-slow-upscale", "params": {"tile": 32, "overlap": 8}}


def test_submit_follow_events_and_fetch(client: Client, tiny_models: fx.ModelsSetup) -> None:
    image = random_image(40, 56, seed=1)
    status = client.submit(image)
    assert status["state"] in ("queued", "running")
    JobStatus.from_json(status)  # the server speaks the shared protocol

    events = client.events(lambda e: e["job"] == status["id"] and e["type"] == "finished")
    mine = [e for e in events if e["job"] == status["id"]]
    kinds = [e["type"] for e in mine]
    assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "finished"
    assert "progress" in kinds
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    fractions = [e["progress"] for e in mine if e["type"] == "progress"]
    assert fractions == sorted(fractions) and all(0 <= f <= 1 for f in fractions)
    # tiles are counted: "tile n of m" for the editors
    tiles = [(e["step"], e["steps"]) for e in mine if e["stage"] == "upscaling" and e["steps"]]
    assert tiles and all(1 <= n <= m for n, m in tiles)
    finished = JobEvent.from_json(mine[-1])
    assert finished.result is not None
    assert (finished.result.width, finished.result.height) == (112, 80)

    result = client.result(status["id"])
    np.testing.assert_array_equal(result, reference_upscale(tiny_models, image))
    assert client.status(status["id"])["state"] == "finished"


def test_a_job_with_two_outputs_returns_both_each_with_its_placement(client: Client) -> None:
    image = random_image(24, 32, seed=3)
    job = client.submit(
        image,
        task="test-split",
        model=None,
        params={"gain": 2.0},
        bounds={"x": 10, "y": 20, "width": 32, "height": 24},
        canvas={"width": 100, "height": 80},
    )
    status = client.wait(job["id"])
    assert status["state"] == "finished", status
    result = status["result"]
    assert [(o["name"], o["title"]) for o in result["outputs"]] == [
        ("bright", "Brighter"),
        ("inverse", "Inverse"),
    ]
    for out in result["outputs"]:
        assert out["placement"]["bounds"] == {"x": 10, "y": 20, "width": 32, "height": 24}
        assert (out["width"], out["height"], out["channels"]) == (32, 24, 3)
    expected = np.clip(image.astype(np.float32) * 2.0, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(client.result(job["id"], "bright"), expected)
    np.testing.assert_array_equal(client.result(job["id"], "inverse"), 255 - image)
    np.testing.assert_array_equal(client.result(job["id"]), expected)  # default: the first
    r = client.http.get(f"/v1/jobs/{job['id']}/result", params={"output": "nope"})
    assert r.status_code == 404 and "bright, inverse" in r.json()["error"]["hint"]


def test_a_running_job_offers_its_preview(client: Client) -> None:
    image = random_image(16, 16, seed=4)
    job = client.submit(image, task="test-split", model=None, params={"gain": 2.0, "hold": 3.0})
    events = client.events(lambda e: e["job"] == job["id"] and e.get("preview"), timeout=20)
    preview_id = next(e["preview"] for e in events if e["job"] == job["id"] and e["preview"])
    assert preview_id.startswith(job["id"])
    r = client.http.get(f"/v1/jobs/{job['id']}/preview")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    from backend.imaging import decode

    expected = np.clip(image.astype(np.float32) * 2, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(decode(r.content), expected)
    client.http.post(f"/v1/jobs/{job['id']}/cancel")
    assert client.wait(job["id"])["state"] == "cancelled"
    r = client.http.get(f"/v1/jobs/{job['id']}/preview")  # gone with the job's end
    assert r.status_code == 409


def test_a_client_of_another_protocol_is_told_which_side_to_update(client: Client) -> None:
    image_id = client.upload(random_image(8, 8))
    body = {"task": "upscale", "image": image_id, "protocol_version": 1}
    error = client.http.post("/v1/jobs", json=body).json()["error"]
    assert error["code"] == "protocol_version" and "plug-in" in error["hint"]
    body["protocol_version"] = 99
    error = client.http.post("/v1/jobs", json=body).json()["error"]
    assert error["code"] == "protocol_version" and "backend" in error["hint"]


def test_named_inputs_a_task_does_not_take_are_refused(client: Client) -> None:
    image_id = client.upload(random_image(8, 8))
    body = {"task": "upscale", "image": image_id, "images": {"reference": image_id}}
    r = client.http.post("/v1/jobs", json=body)
    assert r.status_code == 422
    assert "no image named 'reference'" in r.json()["error"]["message"]


def test_png_16bit_rgba_travels_losslessly(client: Client, tiny_models: fx.ModelsSetup) -> None:
    image = random_image(24, 32, channels=4, depth=16, seed=3)
    png = encode(image, "PNG", 1)
    r = client.http.post("/v1/images", content=png, headers={"Content-Type": "image/png"})
    assert r.status_code == 201, r.text
    info = r.json()
    assert (info["width"], info["height"], info["channels"], info["depth"]) == (32, 24, 4, 16)
    assert info["id"] == client.upload(image)  # the same pixels have the same id, PNG or raw

    job = client.http.post(
        "/v1/jobs",
        json={"task": "upscale", "model": "tiny-x2", "image": info["id"], "client": client.name},
    ).json()
    assert client.wait(job["id"])["state"] == "finished"
    r = client.http.get(f"/v1/jobs/{job['id']}/result")  # PNG by default
    assert r.headers["content-type"] == "image/png"
    got = decode(r.content)
    assert got.dtype == np.uint16 and got.shape == (48, 64, 4)
    np.testing.assert_array_equal(got, reference_upscale(tiny_models, image))
    raw = client.result(job["id"])
    np.testing.assert_array_equal(raw, got)


def test_gray_and_gray_alpha(client: Client, tiny_models: fx.ModelsSetup) -> None:
    for channels in (1, 2):
        image = random_image(16, 20, channels=channels, seed=channels)
        job = client.submit(image)
        assert client.wait(job["id"])["state"] == "finished"
        np.testing.assert_array_equal(
            client.result(job["id"]), reference_upscale(tiny_models, image)
        )


def test_whole_layer_placement_scales_with_the_canvas(client: Client) -> None:
    image = random_image(30, 40, seed=4)
    job = client.submit(
        image,
        bounds={"x": 10, "y": 20, "width": 40, "height": 30},
        canvas={"width": 100, "height": 80},
        params={"scale": 1.5},
    )
    status = client.wait(job["id"])
    placement = status["result"]["placement"]
    assert placement["bounds"] == {"x": 15, "y": 30, "width": 60, "height": 45}
    assert placement["canvas"] == {"width": 150, "height": 120}
    assert placement["scale_x"] == placement["scale_y"] == 1.5


def test_selection_restore_is_feathered_inside_the_selection(client: Client) -> None:
    image = random_image(64, 64, seed=5)
    mask = np.zeros((64, 64, 1), np.uint8)
    mask[16:48, 12:52] = 255
    job = client.submit(
        image,
        mask=mask,
        model="tiny-x4",
        bounds={"x": 100, "y": 200, "width": 64, "height": 64},
        canvas={"width": 500, "height": 400},
        feather=6,
    )
    status = client.wait(job["id"])
    assert status["state"] == "finished", status
    placement = status["result"]["placement"]
    # a selection is restored in place: same place, same canvas, scale 1
    assert placement["bounds"] == {"x": 100, "y": 200, "width": 64, "height": 64}
    assert placement["canvas"] == {"width": 500, "height": 400}
    out = client.result(job["id"])
    assert out.shape == (64, 64, 4)
    alpha = out[:, :, 3]
    assert (alpha[mask[:, :, 0] == 0] == 0).all()  # nothing outside the selection
    assert (alpha[22:42, 18:46] == 255).all()  # deep inside: fully opaque
    assert 0 < alpha[16, 30] < 255  # the edge is soft


def test_cancel_stops_a_running_job_and_the_next_one_runs(client: Client) -> None:
    job = client.submit(slow_job_image(), **SLOW)
    events = client.events(
        lambda e: (
            e["job"] == job["id"]
            and e["type"] == "progress"
            and e["stage"] == "upscaling"
            and e["progress"] > 0
        )
    )
    after = events[-1]["seq"]
    r = client.http.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] in ("running", "cancelled")
    asked = time.monotonic()
    events = client.events(
        lambda e: e["job"] == job["id"] and e["type"] in ("cancelled", "finished", "failed"),
        after=after,
    )
    assert events[-1]["type"] == "cancelled"
    assert time.monotonic() - asked < 2.0
    assert client.status(job["id"])["state"] == "cancelled"
    r = client.http.get(f"/v1/jobs/{job['id']}/result")
    assert r.status_code == 409 and "cancelled" in r.json()["error"]["message"]

    nxt = client.submit(random_image(8, 8))
    assert client.wait(nxt["id"])["state"] == "finished"


def test_remove_a_queued_job(client: Client) -> None:
    blocker = client.submit(slow_job_image(), **SLOW)
    queued = client.submit(random_image(8, 8, seed=9))
    assert client.status(queued["id"])["state"] == "queued"
    assert client.http.delete(f"/v1/jobs/{queued['id']}").status_code == 204
    assert client.http.get(f"/v1/jobs/{queued['id']}").status_code == 404
    r = client.http.delete(f"/v1/jobs/{blocker['id']}")
    assert r.status_code == 409 and "cancel" in r.json()["error"]["hint"].lower()
    client.http.post(f"/v1/jobs/{blocker['id']}/cancel")
    events = client.events(lambda e: e["job"] == blocker["id"] and e["type"] == "cancelled")
    removed = [e for e in events if e["job"] == queued["id"]]
    assert [e["type"] for e in removed] == ["queued", "removed"]


def test_cancel_a_queued_job(client: Client) -> None:
    blocker = client.submit(slow_job_image(), **SLOW)
    queued = client.submit(random_image(8, 8, seed=10))
    assert client.http.post(f"/v1/jobs/{queued['id']}/cancel").json()["state"] == "cancelled"
    client.http.post(f"/v1/jobs/{blocker['id']}/cancel")
    assert client.wait(blocker["id"])["state"] == "cancelled"
    assert client.status(queued["id"])["started"] is None


def test_resubmitting_the_same_job_id_is_harmless(client: Client) -> None:
    image = random_image(12, 12, seed=11)
    image_id = client.upload(image)
    body = {
        "task": "upscale",
        "model": "tiny-x2",
        "image": image_id,
        "id": "job-resubmit-1",
        "client": client.name,
    }
    first = client.http.post("/v1/jobs", json=body)
    again = client.http.post("/v1/jobs", json=body)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == "job-resubmit-1"
    other = client.http.post("/v1/jobs", json={**body, "params": {"scale": 1}})
    assert other.status_code == 409 and "job-resubmit-1" in other.json()["error"]["message"]
    assert client.wait("job-resubmit-1")["state"] == "finished"
    # a client that lost the answer resubmits later, after its upload was forgotten
    assert client.http.delete(f"/v1/images/{image_id}").status_code == 204
    late = client.http.post("/v1/jobs", json=body)
    assert late.status_code == 200 and late.json()["state"] == "finished"
    jobs = client.http.get("/v1/jobs", params={"client": client.name}).json()
    assert [j["id"] for j in jobs].count("job-resubmit-1") == 1


def test_fifty_jobs_from_ten_clients(server: fx.LiveServer, tiny_models: fx.ModelsSetup) -> None:
    images = [random_image(20 + i, 24, seed=100 + i) for i in range(5)]
    expected = [reference_upscale(tiny_models, im) for im in images]
    failures: list[str] = []

    def one_client(n: int) -> None:
        c = Client(server.url, name=f"crowd-{n}")
        try:
            submitted = [(c.submit(images[(n + k) % 5])["id"], (n + k) % 5) for k in range(5)]
            ids = {job_id for job_id, _ in submitted}
            done: set[str] = set()

            def all_done(e: dict) -> bool:
                if e["type"] in ("finished", "failed", "cancelled"):
                    done.add(e["job"])
                return ids <= done

            c.events(all_done, timeout=60)
            for job_id, which in submitted:
                got = c.result(job_id)
                if not np.array_equal(got, expected[which]):
                    failures.append(f"{job_id}: wrong pixels")
        except Exception as exc:  # collected and reported by the main thread
            failures.append(f"client {n}: {exc!r}")
        finally:
            c.close()

    threads = [threading.Thread(target=one_client, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not failures, failures
    assert not any(t.is_alive() for t in threads)


def test_reconnecting_client_misses_nothing(client: Client, tiny_models: fx.ModelsSetup) -> None:
    image = random_image(18, 18, seed=12)
    job = client.submit(image)
    # the client reads up to the queued event, then "crashes" (drops the stream)
    seen = client.events(lambda e: e["job"] == job["id"] and e["type"] == "queued")
    last = seen[-1]["seq"]
    time.sleep(0.3)  # the job runs and finishes while nobody listens
    # it comes back, says where it stopped, and is sent the rest
    rest = fx.read_events(
        client.http,
        {"client": client.name},
        lambda e: e["job"] == job["id"] and e["type"] == "finished",
        headers={"Last-Event-ID": str(last)},
    )
    assert all(e["seq"] > last for e in rest)
    assert next(e["type"] for e in rest if e["job"] == job["id"]) == "started"
    # a new process of the plug-in finds its jobs by client id and fetches the result
    mine = client.http.get("/v1/jobs", params={"client": client.name}).json()
    assert job["id"] in [j["id"] for j in mine]
    np.testing.assert_array_equal(client.result(job["id"]), reference_upscale(tiny_models, image))
    # fetching again (a broken download) still works
    np.testing.assert_array_equal(client.result(job["id"]), reference_upscale(tiny_models, image))


def test_a_failing_job_reports_a_typed_error_and_the_next_runs(client: Client) -> None:
    bad = client.submit(random_image(8, 8), task="test-fail")
    good = client.submit(random_image(8, 8))
    status = client.wait(bad["id"])
    assert status["state"] == "failed"
    assert status["error"] == {
        "code": "invalid_parameter",
        "message": "This image upsets the model.",
        "hint": "Try another one.",
    }
    assert client.wait(good["id"])["state"] == "finished"
    r = client.http.get(f"/v1/jobs/{bad['id']}/result")
    assert r.status_code == 409 and "upsets" in r.json()["error"]["message"]


def test_a_bug_in_a_task_fails_one_job_only(client: Client) -> None:
    bad = client.submit(random_image(8, 8), task="test-crash")
    status = client.wait(bad["id"])
    assert status["state"] == "failed" and status["error"]["code"] == "internal"
    good = client.submit(random_image(8, 8))
    assert client.wait(good["id"])["state"] == "finished"


def test_out_of_memory_unloads_models_and_retries(
    client: Client, server: fx.LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests import extra_tasks

    unloads: list[object] = []
    manager = server.app.state.jobs
    real_unload = manager.models.unload_all

    def unload_all(keep: object = None) -> int:
        unloads.append(keep)
        return real_unload(keep)

    monkeypatch.setattr(manager.models, "unload_all", unload_all)  # counts the real calls
    extra_tasks.calls.clear()
    job = client.submit(random_image(8, 8), task="test-oom-once")
    assert client.wait(job["id"])["state"] == "finished"
    assert extra_tasks.calls == ["oom-once", "oom-once"] and len(unloads) == 1

    job = client.submit(random_image(8, 8), task="test-oom-always")
    status = client.wait(job["id"])
    assert status["state"] == "failed" and status["error"]["code"] == "out_of_memory"
    assert client.wait(client.submit(random_image(8, 8))["id"])["state"] == "finished"


def test_health_stays_fast_during_a_heavy_job(client: Client) -> None:
    job = client.submit(
        random_image(384, 384, seed=13), model="tiny-x4", params={"tile": 64, "overlap": 8}
    )
    client.events(
        lambda e: e["job"] == job["id"] and e["type"] == "progress" and e["stage"] == "upscaling"
    )
    timings = []
    for _ in range(30):
        start = time.perf_counter()
        r = client.http.get("/v1/health")
        timings.append(time.perf_counter() - start)
        assert r.status_code == 200
        if r.json()["running"] != job["id"]:
            break
        time.sleep(0.01)
    client.http.post(f"/v1/jobs/{job['id']}/cancel")
    client.wait(job["id"])
    assert len(timings) >= 5, "the job ended before health could be measured"
    assert statistics.median(timings) < 0.05, timings
    assert sorted(timings)[int(len(timings) * 0.9)] < 0.1, timings


def test_models_and_tasks_describe_what_runs(client: Client) -> None:
    models = client.http.get("/v1/models", params={"task": "upscale"}).json()
    assert {m["name"] for m in models} == {"tiny-x2", "tiny-x4"}
    # the test servers also serve the test-only tasks, which take the same models
    product = {"upscale", "face-restore", "denoise"}
    assert all(set(m["tasks"]) & product == {"upscale"} and m["scale"] in (2, 4) for m in models)
    everything = client.http.get("/v1/models").json()
    broken = next(m for m in everything if m["name"] == "broken")
    assert not broken["usable"] and broken["reason"]
    listed = client.http.get("/v1/tasks").json()
    tasks = {t["task"]: t for t in listed}
    assert [t["order"] for t in listed] == sorted(t["order"] for t in listed)
    upscale = tasks["upscale"]
    assert upscale["available"] and upscale["title"] == "Upscale" and upscale["resizes"]
    assert upscale["mask"] == "optional" and upscale["group"] == "upscale"
    assert [o["name"] for o in upscale["outputs"]] == ["result"]
    # no face model on this server: the task says so and what to install, instead of failing
    faces = tasks["face-restore"]
    assert not faces["available"] and faces["default_model"] is None
    assert "needs a model" in faces["reason"] and "facerestore_models" in faces["hint"]
    params = {p["name"]: p for p in upscale["params"]}
    scale = params["scale"]
    assert scale["type"] == "float" and scale["optional"] and scale["unit"] == "x"
    assert (scale["minimum"], scale["maximum"]) == (0.05, 16.0) and scale["label"] == "Scale"
    assert scale["none_label"] == "the model's own" and scale["help"]
    assert params["tile"]["advanced"] and params["tile"]["unit"] == "px"
    assert params["alpha"]["choices"] == ["model", "resize"]
    assert params["alpha"]["widget"] == "choice" and len(params["alpha"]["choice_labels"]) == 2
    assert "max_output_pixels" not in params  # the server sets it
    assert [o["name"] for o in tasks["test-split"]["outputs"]] == ["bright", "inverse"]


def test_results_expire_and_spill_to_disk(tiny_models: fx.ModelsSetup) -> None:
    settings = fx.test_settings(
        tiny_models, result_ttl=0.6, fetched_result_ttl=0.6, result_memory_bytes=1000
    )
    with live_server(settings) as live:
        c = Client(live.url, "expiry")
        images = [random_image(10, 12, seed=20 + i) for i in range(3)]
        jobs = [c.submit(im)["id"] for im in images]
        for job_id in jobs:
            assert c.wait(job_id)["state"] == "finished"
        # over the memory budget, unfetched results went to disk and still come back whole
        for job_id, im in zip(jobs, images):
            np.testing.assert_array_equal(c.result(job_id), reference_upscale(tiny_models, im))
        time.sleep(0.8)
        r = c.http.get(f"/v1/jobs/{jobs[0]}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
        c.close()


def test_png_result_is_a_valid_png(client: Client) -> None:
    job = client.submit(random_image(10, 10, channels=4, seed=14))
    client.wait(job["id"])
    r = client.http.get(f"/v1/jobs/{job['id']}/result", headers={"Accept": "image/png"})
    im = Image.open(io.BytesIO(r.content))
    assert im.format == "PNG" and im.mode == "RGBA" and im.size == (20, 20)
    r = client.http.get(
        f"/v1/jobs/{job['id']}/result", headers={"Accept": "application/x-restora-pixels"}
    )
    assert r.headers["content-type"].startswith("application/x-restora-pixels; width=20;")
    assert len(r.content) == 20 * 20 * 4


def test_urllib_alone_can_drive_the_server(server: fx.LiveServer) -> None:
    """What the plug-ins have: urllib and json, no numpy or httpx."""
    import json
    import urllib.request

    from shared.protocol import JobRequest, PixelFormat

    fmt = PixelFormat(4, 3, 3, 8)
    data = bytes(range(36))
    req = urllib.request.Request(
        f"{server.url}/v1/images",
        data=data,
        method="POST",
        headers={"Content-Type": fmt.media_type()},
    )
    with urllib.request.urlopen(req) as resp:
        image_id = json.load(resp)["id"]
    assert image_id == fmt.content_id(data)
    body = JobRequest(task="upscale", image=image_id, model="tiny-x2", client="urllib")
    req = urllib.request.Request(
        f"{server.url}/v1/jobs",
        data=json.dumps(body.to_json()).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        job = JobStatus.from_json(json.load(resp))
    with urllib.request.urlopen(f"{server.url}/v1/events?client=urllib", timeout=30) as stream:
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                event = JobEvent.from_json(json.loads(line[6:]))
                if event.job == job.id and event.state.done:
                    break
    assert event.type.value == "finished" and event.result is not None
    with urllib.request.urlopen(f"{server.url}/v1/jobs/{job.id}/result?format=raw") as resp:
        out = PixelFormat.parse(resp.headers["Content-Type"])
        assert (out.width, out.height, len(resp.read())) == (8, 6, out.nbytes)
