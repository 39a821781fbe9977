"""Bad requests get a 4xx whose message names the problem; browsers and strangers are refused."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from backend.imaging import encode
from shared.protocol import PROTOCOL_VERSION, RAW_PIXELS_MEDIA_TYPE, PixelFormat
from tests import server_fixtures as fx
from tests.images import png_header_only
from tests.server_fixtures import Client, live_server, random_image

server, tiny_models = fx.server, fx.tiny_models  # fixtures, one server for this module


@pytest.fixture
def client(server: fx.LiveServer):
    c = Client(server.url, name="errors")
    yield c
    c.close()


@pytest.fixture
def image_id(client: Client) -> str:
    return client.upload(random_image(16, 16))


def error_of(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code, body
    return body["message"]


png_with_size = png_header_only  # a PNG whose header claims a size, with almost no data


# --- uploads ---------------------------------------------------------------------------------


def test_corrupt_image(client: Client) -> None:
    for data in (b"\x89PNG\r\n\x1a\n garbage", b"certainly not an image"):
        r = client.http.post("/v1/images", content=data, headers={"Content-Type": "image/png"})
        assert "image" in error_of(r, 400, "image_decode").lower()


def test_truncated_png(client: Client) -> None:
    png = encode(random_image(64, 64, seed=1), "PNG", 1)
    r = client.http.post(
        "/v1/images", content=png[: len(png) // 2], headers={"Content-Type": "image/png"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "image_decode"


def test_wrong_content_type_for_an_image(client: Client) -> None:
    r = client.http.post("/v1/images", content=b"hello", headers={"Content-Type": "text/plain"})
    assert "text/plain" in error_of(r, 415, "unsupported_media_type")


def test_wrong_content_type_for_a_job(client: Client, image_id: str) -> None:
    r = client.http.post(
        "/v1/jobs",
        content=f'{{"task":"upscale","image":"{image_id}"}}',
        headers={"Content-Type": "text/plain"},
    )
    assert "application/json" in error_of(r, 415, "unsupported_media_type")


def test_huge_dimensions_refused_before_the_body(client: Client) -> None:
    fmt = PixelFormat(100_000, 100_000, 4, 8)
    r = client.http.post(
        "/v1/images", content=b"\0" * 16, headers={"Content-Type": fmt.media_type()}
    )
    assert "100000x100000" in error_of(r, 413, "image_too_large")


def test_decompression_bomb_refused_before_decoding(client: Client) -> None:
    for size in (60_000, 3_000):  # beyond Pillow's own limit, and beyond only the server's
        r = client.http.post(
            "/v1/images", content=png_with_size(size, size), headers={"Content-Type": "image/png"}
        )
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "image_too_large"


def test_upload_over_the_byte_limit(client: Client, server: fx.LiveServer) -> None:
    limit = server.settings.max_upload_bytes
    r = client.http.post(
        "/v1/images", content=b"\0" * (limit + 1), headers={"Content-Type": "image/png"}
    )
    assert "limit" in error_of(r, 413, "upload_too_large")


def test_upload_over_the_byte_limit_without_content_length(server: fx.LiveServer) -> None:
    limit = server.settings.max_upload_bytes

    def chunks():
        for _ in range(limit // (1 << 20) + 2):
            yield b"\0" * (1 << 20)

    with httpx.Client(base_url=server.url) as http:
        r = http.post("/v1/images", content=chunks(), headers={"Content-Type": "image/png"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"


def test_raw_pixels_of_the_wrong_length(client: Client) -> None:
    fmt = PixelFormat(4, 4, 3, 8)
    r = client.http.post(
        "/v1/images", content=b"\0" * 47, headers={"Content-Type": fmt.media_type()}
    )
    message = error_of(r, 422, "invalid_pixels")
    assert "47" in message and "48" in message


@pytest.mark.parametrize(
    "ctype, word",
    [
        (f"{RAW_PIXELS_MEDIA_TYPE}; width=4; height=4", "channels"),
        (f"{RAW_PIXELS_MEDIA_TYPE}; width=4; height=4; channels=5", "channels"),
        (f"{RAW_PIXELS_MEDIA_TYPE}; width=4; height=x; channels=3", "height"),
        (f"{RAW_PIXELS_MEDIA_TYPE}; width=4; height=4; channels=3; depth=12", "depth"),
    ],
)
def test_raw_pixels_with_a_bad_shape(client: Client, ctype: str, word: str) -> None:
    r = client.http.post("/v1/images", content=b"\0" * 48, headers={"Content-Type": ctype})
    assert word in error_of(r, 422, "invalid_pixels")


# --- jobs ------------------------------------------------------------------------------------


def test_missing_fields(client: Client, image_id: str) -> None:
    assert "image" in error_of(
        client.http.post("/v1/jobs", json={"task": "upscale"}), 422, "invalid_request"
    )
    assert "task" in error_of(
        client.http.post("/v1/jobs", json={"image": image_id}), 422, "invalid_request"
    )


def test_body_that_is_not_json(client: Client) -> None:
    r = client.http.post("/v1/jobs", content=b"{nope", headers={"Content-Type": "application/json"})
    assert "JSON" in error_of(r, 422, "invalid_request")


def test_unknown_task(client: Client, image_id: str) -> None:
    r = client.http.post("/v1/jobs", json={"task": "sharpen", "image": image_id})
    message = error_of(r, 422, "task_unavailable")
    assert "'sharpen'" in message
    assert "upscale" in r.json()["error"]["hint"]  # names the tasks it runs
    # a task id that is no task id is refused without being repeated in full
    r = client.http.post("/v1/jobs", json={"task": "Sharpen!" * 1000, "image": image_id})
    assert len(error_of(r, 422, "task_unavailable")) < 300


def test_task_of_a_later_version(client: Client, image_id: str) -> None:
    r = client.http.post("/v1/jobs", json={"task": "video-upscale", "image": image_id})
    assert "video-upscale" in error_of(r, 422, "task_unavailable")


def test_unknown_model(client: Client, image_id: str) -> None:
    r = client.http.post(
        "/v1/jobs", json={"task": "upscale", "image": image_id, "model": "no-such-model"}
    )
    message = error_of(r, 404, "model_not_found")
    assert "no-such-model" in message and "tiny-x2" in message


def test_model_names_are_never_paths(client: Client, image_id: str, tiny_models) -> None:
    path = str(tiny_models.root / "upscale_models" / "tiny-x2.safetensors")
    for name in (path, "../upscale_models/tiny-x2", "/etc/passwd"):
        r = client.http.post("/v1/jobs", json={"task": "upscale", "image": image_id, "model": name})
        assert r.status_code == 404, r.text


def test_broken_model_file(client: Client, image_id: str) -> None:
    r = client.http.post("/v1/jobs", json={"task": "upscale", "image": image_id, "model": "broken"})
    assert "broken" in error_of(r, 422, "model_format")


def test_unknown_image_id(client: Client) -> None:
    r = client.http.post("/v1/jobs", json={"task": "upscale", "image": "0" * 64})
    assert "0" * 64 in error_of(r, 404, "image_not_found")


@pytest.mark.parametrize(
    "params, word",
    [
        ({"sharpness": 3}, "sharpness"),
        ({"scale": "big"}, "scale"),
        ({"scale": 100}, "scale"),
        ({"tile": 3}, "tile"),
        ({"alpha": "magic"}, "alpha"),
        ({"max_output_pixels": 10**12}, "max_output_pixels"),
    ],
)
def test_bad_params(client: Client, image_id: str, params: dict, word: str) -> None:
    r = client.http.post(
        "/v1/jobs",
        json={"task": "upscale", "image": image_id, "model": "tiny-x2", "params": params},
    )
    assert word in error_of(r, 422, "invalid_parameter")


def test_output_too_large(client: Client, image_id: str) -> None:
    r = client.http.post(
        "/v1/jobs",
        json={
            "task": "upscale",
            "image": image_id,
            "model": "tiny-x2",
            "params": {"width": 60_000},
        },
    )
    assert "megapixels" in error_of(r, 413, "image_too_large")
    r = client.http.post(
        "/v1/jobs",
        json={"task": "upscale", "image": image_id, "params": {"width": 100_000}},
    )
    assert "between 1 and 65536 px" in error_of(r, 422, "invalid_parameter")


def test_mask_of_the_wrong_size(client: Client, image_id: str) -> None:
    mask_id = client.upload(np.full((8, 16, 1), 255, np.uint8))
    r = client.http.post(
        "/v1/jobs", json={"task": "upscale", "image": image_id, "model": "tiny-x2", "mask": mask_id}
    )
    message = error_of(r, 422, "invalid_parameter")
    assert "16x8" in message and "16x16" in message


def test_mask_with_colour(client: Client, image_id: str) -> None:
    mask_id = client.upload(random_image(16, 16, channels=3, seed=3))
    r = client.http.post(
        "/v1/jobs", json={"task": "upscale", "image": image_id, "model": "tiny-x2", "mask": mask_id}
    )
    assert "one (gray)" in error_of(r, 422, "invalid_parameter")


def test_empty_mask(client: Client, image_id: str) -> None:
    mask_id = client.upload(np.zeros((16, 16, 1), np.uint8))
    r = client.http.post(
        "/v1/jobs", json={"task": "upscale", "image": image_id, "model": "tiny-x2", "mask": mask_id}
    )
    assert "selects nothing" in error_of(r, 422, "invalid_parameter")


def test_bounds_that_do_not_fit_the_image(client: Client, image_id: str) -> None:
    r = client.http.post(
        "/v1/jobs",
        json={
            "task": "upscale",
            "image": image_id,
            "model": "tiny-x2",
            "bounds": {"x": 0, "y": 0, "width": 10, "height": 16},
        },
    )
    assert "bounds" in error_of(r, 422, "invalid_parameter")


def test_bad_ids(client: Client, image_id: str) -> None:
    r = client.http.post(
        "/v1/jobs",
        json={"task": "upscale", "image": image_id, "model": "tiny-x2", "id": "../../etc"},
    )
    assert "id" in error_of(r, 422, "invalid_parameter")
    r = client.http.get("/v1/jobs/a%20b")
    assert "job_id" in error_of(r, 422, "invalid_request")


def test_newer_protocol(client: Client, image_id: str) -> None:
    r = client.http.post(
        "/v1/jobs",
        json={"task": "upscale", "image": image_id, "model": "tiny-x2", "protocol_version": 99},
    )
    assert "99" in error_of(r, 400, "protocol_version")


def test_unknown_job(client: Client) -> None:
    for r in (
        client.http.get("/v1/jobs/nope"),
        client.http.post("/v1/jobs/nope/cancel"),
        client.http.delete("/v1/jobs/nope"),
        client.http.get("/v1/jobs/nope/result"),
    ):
        assert "nope" in error_of(r, 404, "job_not_found")


def test_unknown_endpoint_and_method(client: Client) -> None:
    error_of(client.http.get("/v2/things"), 404, "not_found")
    error_of(client.http.delete("/v1/health"), 405, "method_not_allowed")


# --- browsers, hosts and tokens --------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost:3000"},  # another local web app is another origin
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_browser_requests_from_other_origins_are_refused(client: Client, headers: dict) -> None:
    error_of(client.http.get("/v1/jobs", headers=headers), 403, "forbidden_origin")
    error_of(client.http.options("/v1/jobs", headers=headers), 403, "forbidden_origin")


def test_same_origin_requests_from_the_docs_page_work(
    client: Client, server: fx.LiveServer
) -> None:
    r = client.http.get("/v1/jobs", headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers


def test_dns_rebinding_host_is_refused(client: Client) -> None:
    r = client.http.get("/v1/health", headers={"Host": "attacker.example:8765"})
    assert "attacker.example" in error_of(r, 403, "forbidden_host")
    assert client.http.get("/v1/health", headers={"Host": "localhost:8765"}).status_code == 200


def test_token(tiny_models: fx.ModelsSetup) -> None:
    settings = fx.test_settings(tiny_models, token="s3cret")
    with live_server(settings) as live, httpx.Client(base_url=live.url) as http:
        error_of(http.get("/v1/jobs"), 401, "unauthorized")
        error_of(
            http.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized"
        )
        error_of(
            http.post("/v1/images", content=b"x", headers={"Authorization": "Basic s3cret"}),
            401,
            "unauthorized",
        )
        assert http.get("/v1/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        # health stays open, without details; the API description is open
        open_health = http.get("/v1/health").json()
        assert open_health["auth_required"] and open_health["instance"] is None
        assert open_health["device"] is None and open_health["protocol_version"] == PROTOCOL_VERSION
        full = http.get("/v1/health", headers={"Authorization": "Bearer s3cret"}).json()
        assert full["device"] == "cpu" and full["instance"]
        assert http.get("/openapi.json").status_code == 200
        assert http.get("/docs").status_code == 200
        r = http.get("/v1/events", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
