"""The server against a hostile page or local client, on a real loopback server: rebinding Host
names, bodies that declare much and send little, chunked bodies past the limit, oversized ids,
other clients' jobs, and an API description that says what is true."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests import server_fixtures as fx
from tests.server_fixtures import Client, live_server, random_image

tiny_models = fx.tiny_models  # fixture

MiB = 1 << 20
BODY_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(tiny_models: fx.ModelsSetup) -> Iterator[fx.LiveServer]:
    """Uploads up to 600 MiB (so a declared 512 MiB passes the header check) and a short body
    timeout; one name configured in allowed_hosts."""
    settings = fx.test_settings(
        tiny_models,
        max_upload_bytes=600 * MiB,
        body_timeout_seconds=BODY_TIMEOUT,
        allowed_hosts=["restora.test"],
    )
    with live_server(settings) as live:
        yield live


@pytest.fixture
def client(server: fx.LiveServer) -> Iterator[Client]:
    c = Client(server.url, name="security")
    yield c
    c.close()


def address(server: fx.LiveServer) -> tuple[str, int]:
    parts = urlsplit(server.url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def rss_bytes() -> int:
    """This process's resident memory; the test server runs in it."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def read_response(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection (True) or `timeout`."""
    sock.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def status_and_body(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}


# --- 1. DNS rebinding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.attacker.example",
        "127.0.0.1.attacker.example",
        "localhost.attacker.example",
        "127.1",  # not an address ipaddress reads; a name a resolver could rebind
        "[::1",
        "[::2]",
    ],
)
def test_rebinding_names_are_refused_even_with_a_matching_origin(
    client: Client, server: fx.LiveServer, host: str
) -> None:
    port = address(server)[1]
    headers = {"Host": f"{host}:{port}", "Origin": f"http://{host}:{port}"}
    r = client.http.get("/v1/jobs", headers=headers)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "forbidden_host"


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.3.2.1", "localhost", "LOCALHOST", "[::1]", "restora.test"]
)
def test_loopback_addresses_localhost_and_allowed_hosts_pass(
    client: Client, server: fx.LiveServer, host: str
) -> None:
    port = address(server)[1]
    r = client.http.get("/v1/jobs", headers={"Host": f"{host}:{port}"})
    assert r.status_code == 200, r.text


# --- 2. a declared length is not an allocation; a silent body is dropped ---------------------


def test_declared_length_costs_nothing_and_silent_uploads_are_dropped(
    server: fx.LiveServer,
) -> None:
    host, port = address(server)
    before = rss_bytes()
    socks = []
    for _ in range(2):
        sock = socket.create_connection((host, port))
        sock.sendall(
            f"POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: image/png\r\nContent-Length: {512 * MiB}\r\n\r\n".encode()
            + b"\x89PNG"
        )
        socks.append(sock)
    time.sleep(BODY_TIMEOUT / 2)  # the server has read the 4 bytes and waits for more
    grown = rss_bytes() - before
    started = time.monotonic()
    answers = [read_response(sock, BODY_TIMEOUT + 10) for sock in socks]
    waited = time.monotonic() - started
    for sock in socks:
        sock.close()
    assert grown < 64 * MiB, f"two declared 512 MiB bodies took {grown / MiB:.0f} MiB"
    for data, closed in answers:
        assert closed, f"the connection stayed open: {data[:200]!r}"
        status, body = status_and_body(data)
        assert status == 408 and body["error"]["code"] == "body_timeout", data[:300]
    assert waited < BODY_TIMEOUT + 5


def test_a_slow_but_steady_upload_still_arrives(client: Client, server: fx.LiveServer) -> None:
    pixels = random_image(8, 8)
    fmt = "application/x-restora-pixels; width=8; height=8; channels=3; depth=8"
    data = pixels.tobytes()

    def slowly() -> Iterator[bytes]:
        for i in range(0, len(data), 64):
            time.sleep(BODY_TIMEOUT / 4)  # pauses shorter than the timeout
            yield data[i : i + 64]

    r = client.http.post("/v1/images", content=slowly(), headers={"Content-Type": fmt})
    assert r.status_code == 201, r.text


# --- 3. chunked bodies are counted as they stream ----------------------------------------------


def test_a_chunked_json_body_past_one_mib_is_refused_while_streaming(
    server: fx.LiveServer,
) -> None:
    host, port = address(server)
    with socket.create_connection((host, port)) as sock:
        sock.sendall(
            f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b" " * (64 << 10)
        sent = 0
        sock.settimeout(5)
        try:
            while sent < 64 * MiB:  # far past the limit: the server must stop reading first
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass
        data, _closed = read_response(sock, 10)
    assert sent < 64 * MiB, "the server read 64 MiB of a JSON body"
    status, body = status_and_body(data)
    assert status == 413 and body["error"]["code"] == "upload_too_large", data[:300]
    assert "1 MiB" in body["error"]["message"]


def test_a_declared_json_body_past_one_mib_is_refused_before_reading(client: Client) -> None:
    r = client.http.post(
        "/v1/jobs", content=b" " * (MiB + 1), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"


# --- 4. ids are checked, and never echoed whole ----------------------------------------------


@pytest.mark.parametrize("field", ["image", "mask", "id", "client", "model"])
def test_oversized_ids_are_refused_with_a_short_message(client: Client, field: str) -> None:
    image_id = client.upload(random_image(8, 8))
    huge = "a" * 500_000
    body = {"task": "upscale", "image": image_id, field: huge}
    r = client.http.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text[:300]
    error = r.json()["error"]
    assert error["code"] == "invalid_parameter" and field in error["message"]
    assert "a" * 64 in error["message"] and len(r.content) < 1000


def test_ids_of_the_wrong_shape_are_refused(client: Client) -> None:
    for image in ("0" * 63, "0" * 64 + "\n", "G" * 64, "../" * 20):
        r = client.http.post("/v1/jobs", json={"task": "upscale", "image": image})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter", image
    r = client.http.get("/v1/jobs/" + "j" * 5000)
    assert r.status_code == 422 and len(r.content) < 1000


def test_a_long_host_header_is_not_echoed(client: Client) -> None:
    r = client.http.get("/v1/health", headers={"Host": "h" * 8000})
    assert r.status_code == 403 and len(r.content) < 1000


# --- 6. one client does not see another's jobs -------------------------------------------------


def test_listings_and_events_show_only_the_asking_clients_jobs(server: fx.LiveServer) -> None:
    alice, bob = Client(server.url, "alice"), Client(server.url, "bob")
    anonymous = Client(server.url, "unused")
    try:
        a = alice.submit(random_image(8, 8, seed=1))
        b = bob.submit(random_image(8, 8, seed=2))
        image = anonymous.upload(random_image(8, 8, seed=3))
        r = anonymous.http.post(
            "/v1/jobs", json={"task": "upscale", "model": "tiny-x2", "image": image}
        )
        nobody = r.json()
        for c, job in ((alice, a), (bob, b), (anonymous, nobody)):
            c.wait(job["id"])
        listed = {j["id"] for j in anonymous.http.get("/v1/jobs").json()}
        assert a["id"] not in listed and b["id"] not in listed and nobody["id"] in listed
        mine = {j["id"] for j in alice.http.get("/v1/jobs", params={"client": "alice"}).json()}
        assert a["id"] in mine and b["id"] not in mine and nobody["id"] not in mine
        # without a client id the stream carries only jobs sent without one
        events = fx.read_events(
            anonymous.http,
            {"after": 0},
            lambda e: e["job"] == nobody["id"] and e["state"] == "finished",
        )
        assert {e["client"] for e in events} == {None}
    finally:
        for c in (alice, bob, anonymous):
            c.close()


def test_a_token_holder_lists_every_job(tiny_models: fx.ModelsSetup) -> None:
    token = "a-token-of-sixteen-or-more"
    with live_server(fx.test_settings(tiny_models, token=token)) as live:
        alice = Client(live.url, "alice", token=token)
        try:
            job = alice.submit(random_image(8, 8))
            listed = alice.http.get("/v1/jobs").json()
            assert [j["id"] for j in listed] == [job["id"]]
        finally:
            alice.close()


# --- 7. the API description is true -----------------------------------------------------------


def test_the_api_description_declares_a_token_only_when_there_is_one(
    client: Client, tiny_models: fx.ModelsSetup
) -> None:
    open_doc = client.http.get("/openapi.json").json()
    assert "security" not in json.dumps(open_doc)
    assert "securitySchemes" not in open_doc.get("components", {})
    token = "a-token-of-sixteen-or-more"
    with live_server(fx.test_settings(tiny_models, token=token)) as live:
        doc = httpx.get(f"{live.url}/openapi.json").json()
    ops = doc["paths"]
    assert ops["/v1/jobs"]["get"]["security"] == [{"bearer": []}]
    assert "`unauthorized`" in ops["/v1/jobs"]["get"]["responses"]["401"]["description"]
    assert "security" not in ops["/v1/health"]["get"]


def test_the_api_description_lists_the_errors_routes_answer(client: Client) -> None:
    ops = client.http.get("/openapi.json").json()["paths"]
    upload = ops["/v1/images"]["post"]["responses"]
    assert "`image_too_small`" in upload["400"]["description"]
    assert "`image_decode`" in upload["400"]["description"]
    assert "`body_timeout`" in upload["408"]["description"]
    submit = ops["/v1/jobs"]["post"]["responses"]
    assert "`invalid_request`" in submit["400"]["description"]
    assert "`upload_too_large`" in submit["413"]["description"]
    for path, methods in ops.items():
        for method, op in methods.items():
            assert "`forbidden_host`" in op["responses"]["403"]["description"], (method, path)
            assert "HTTPValidationError" not in json.dumps(op["responses"]), (method, path)


def test_deeply_nested_json_is_a_documented_400(client: Client) -> None:
    r = client.http.post(
        "/v1/jobs", content=b"[" * 100_000, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text[:300]
    assert r.json()["error"]["code"] == "invalid_request"
