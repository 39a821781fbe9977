"""Model downloads against a real HTTP server on 127.0.0.1: resume, retries, 416, checksums,
safe paths, and `restora models download / verify` end to end. Nothing leaves the machine."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from backend.models.catalog import CatalogEntry, UnsafePathError, check_file_name
from backend.models.download import (
    BASE_URL_ENV,
    ChecksumMismatchError,
    DownloadError,
    UnverifiedModelError,
    download_file,
    download_model,
    model_target,
    part_path,
    resolve_url,
)

# --- the test server --------------------------------------------------------------------------


@dataclass
class Served:
    """A file the server offers, and how badly it behaves."""

    data: bytes
    ignore_range: bool = False  # answer a Range request with the whole file (200)
    drop_after: int = 0  # close the connection after this many body bytes ...
    drops: int = 0  # ... on this many requests
    stall_s: float = 0.0  # wait this long before the body ...
    stalls: int = 0  # ... on this many requests
    fail_status: int = 503  # answer this status ...
    fails: int = 0  # ... to the first this many requests


@dataclass
class Hit:
    name: str
    range: str | None
    status: int
    sent: int


@dataclass
class ModelServer:
    files: dict[str, Served] = field(default_factory=dict)
    log: list[Hit] = field(default_factory=list)
    port: int = 0

    def url(self, name: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{urllib.parse.quote(name)}"

    def hits(self, name: str) -> list[Hit]:
        return [h for h in self.log if h.name == name]


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state: ModelServer = self.server.state  # type: ignore[attr-defined]
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path.lstrip("/"))
        rng = self.headers.get("Range")
        served = state.files.get(name)
        seen = len(state.hits(name))
        if served is None:
            self._empty(404, name, rng)
            return
        if seen < served.fails:
            self._empty(served.fail_status, name, rng)
            return
        data, total, start, status = served.data, len(served.data), 0, 200
        if rng and not served.ignore_range:
            match = re.fullmatch(r"bytes=(\d+)-", rng)
            assert match, rng
            start, status = int(match.group(1)), 206
            if start >= total:
                self._empty(416, name, rng, {"Content-Range": f"bytes */{total}"})
                return
        body = data[start:]
        limit = len(body)
        if seen < served.drops:
            limit = min(limit, served.drop_after)
        # logged before a byte is sent: the client may check the log as soon as it has them
        state.log.append(Hit(name, rng, status, limit))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.end_headers()
        if seen < served.stalls:
            time.sleep(served.stall_s)
        try:
            self.wfile.write(body[:limit])
            self.wfile.flush()
        except OSError:
            pass  # the client gave up (timeout test)
        self.close_connection = True

    def _empty(self, status: int, name: str, rng: str | None, headers: dict | None = None) -> None:
        self.server.state.log.append(Hit(name, rng, status, 0))  # type: ignore[attr-defined]
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    state = ModelServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = state  # type: ignore[attr-defined]
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def payload(n: int, seed: int = 1) -> bytes:
    """Deterministic bytes that differ everywhere, so a wrong offset changes the hash."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def no_sleep(_seconds: float) -> None:
    pass


DATA = payload(300_000)


# --- download_file ----------------------------------------------------------------------------


def test_full_download(server: ModelServer, tmp_path: Path) -> None:
    server.files["m.pth"] = Served(DATA)
    seen: list[tuple[int, int | None]] = []
    target = tmp_path / "upscale_models" / "m.pth"
    digest = download_file(
        server.url("m.pth"),
        target,
        sha256=sha(DATA),
        size=len(DATA),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert digest == sha(DATA)
    assert target.read_bytes() == DATA
    assert not part_path(target).exists()
    assert seen[-1] == (len(DATA), len(DATA))
    assert [(h.range, h.status) for h in server.log] == [(None, 200)]


def test_resume_from_existing_part_sends_only_the_rest(server: ModelServer, tmp_path: Path) -> None:
    server.files["m.pth"] = Served(DATA)
    target = tmp_path / "m.pth"
    part_path(target).write_bytes(DATA[:100_000])
    digest = download_file(server.url("m.pth"), target, sha256=sha(DATA), size=len(DATA))
    assert digest == sha(DATA)  # the hash covers the resumed prefix too
    assert target.read_bytes() == DATA
    [hit] = server.log
    assert (hit.range, hit.status, hit.sent) == ("bytes=100000-", 206, len(DATA) - 100_000)


def test_dropped_connection_is_resumed_on_retry(server: ModelServer, tmp_path: Path) -> None:
    server.files["m.pth"] = Served(DATA, drop_after=70_000, drops=1)
    sleeps: list[float] = []
    target = tmp_path / "m.pth"
    download_file(
        server.url("m.pth"), target, sha256=sha(DATA), size=len(DATA), sleep=sleeps.append
    )
    assert target.read_bytes() == DATA
    assert [(h.range, h.status, h.sent) for h in server.log] == [
        (None, 200, 70_000),
        ("bytes=70000-", 206, len(DATA) - 70_000),
    ]
    assert sleeps == [1.0]


def test_retries_back_off_on_a_busy_server(server: ModelServer, tmp_path: Path) -> None:
    server.files["m.pth"] = Served(DATA, fail_status=503, fails=2)
    sleeps: list[float] = []
    target = tmp_path / "m.pth"
    download_file(server.url("m.pth"), target, sha256=sha(DATA), backoff=0.5, sleep=sleeps.append)
    assert target.read_bytes() == DATA
    assert sleeps == [0.5, 1.0]
    assert [h.status for h in server.log] == [503, 503, 200]


def test_a_timeout_is_retried(server: ModelServer, tmp_path: Path) -> None:
    server.files["m.pth"] = Served(DATA, stall_s=1.5, stalls=1)
    target = tmp_path / "m.pth"
    download_file(server.url("m.pth"), target, sha256=sha(DATA), timeout=0.3, sleep=no_sleep)
    assert target.read_bytes() == DATA
    assert len(server.log) == 2


def test_giving_up_keeps_the_part_for_later(server: ModelServer, tmp_path: Path) -> None:
    server.files["m.pth"] = Served(DATA, drop_after=1000, drops=100)
    target = tmp_path / "m.pth"
    with pytest.raises(DownloadError) as err:
        download_file(server.url("m.pth"), target, sha256=sha(DATA), retries=2, sleep=no_sleep)
    assert "after 2 retries" in err.value.message and "resume" in err.value.hint
    assert len(server.log) == 3
    assert part_path(target).read_bytes() == DATA[:3000]  # three dropped requests, each resumed
    assert not target.exists()


def test_wrong_checksum_installs_nothing(server: ModelServer, tmp_path: Path) -> None:
    server.files["m.pth"] = Served(DATA)
    target = tmp_path / "m.pth"
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError) as err:
        download_file(server.url("m.pth"), target, sha256=wrong, size=len(DATA))
    message = err.value.message
    assert wrong in message and sha(DATA) in message and server.url("m.pth") in message
    assert not target.exists()
    assert not part_path(target).exists()


def test_wrong_checksum_never_touches_an_existing_file(server: ModelServer, tmp_path: Path) -> None:
    server.files["m.pth"] = Served(DATA)
    target = tmp_path / "m.pth"
    target.write_bytes(b"the file that was here")
    with pytest.raises(ChecksumMismatchError):
        download_file(server.url("m.pth"), target, sha256="1" * 64)
    assert target.read_bytes() == b"the file that was here"
    assert not part_path(target).exists()


def test_size_different_from_the_catalog_is_refused_before_streaming(
    server: ModelServer, tmp_path: Path
) -> None:
    server.files["m.pth"] = Served(DATA)
    target = tmp_path / "m.pth"
    with pytest.raises(ChecksumMismatchError) as err:
        download_file(server.url("m.pth"), target, sha256=sha(DATA), size=len(DATA) + 1)
    assert str(len(DATA)) in err.value.message and str(len(DATA) + 1) in err.value.message
    assert not target.exists() and not part_path(target).exists()


def test_416_with_a_complete_part_installs_it(server: ModelServer, tmp_path: Path) -> None:
    server.files["m.pth"] = Served(DATA)
    target = tmp_path / "m.pth"
    part_path(target).write_bytes(DATA)
    download_file(server.url("m.pth"), target, sha256=sha(DATA), size=len(DATA))
    assert target.read_bytes() == DATA
    assert [(h.range, h.status, h.sent) for h in server.log] == [(f"bytes={len(DATA)}-", 416, 0)]


def test_416_with_a_wrong_part_restarts_from_zero(server: ModelServer, tmp_path: Path) -> None:
    server.files["m.pth"] = Served(DATA)
    target = tmp_path / "m.pth"
    part_path(target).write_bytes(payload(len(DATA), seed=2))  # right length, wrong bytes
    download_file(server.url("m.pth"), target, sha256=sha(DATA), size=len(DATA))
    assert target.read_bytes() == DATA
    assert [(h.range, h.status) for h in server.log] == [(f"bytes={len(DATA)}-", 416), (None, 200)]


def test_server_ignoring_range_means_start_over(server: ModelServer, tmp_path: Path) -> None:
    server.files["m.pth"] = Served(DATA, ignore_range=True)
    target = tmp_path / "m.pth"
    part_path(target).write_bytes(DATA[:50_000])
    download_file(server.url("m.pth"), target, sha256=sha(DATA), size=len(DATA))
    assert target.read_bytes() == DATA  # not the prefix twice
    assert [(h.range, h.status, h.sent) for h in server.log] == [("bytes=50000-", 200, len(DATA))]


def test_missing_file_is_not_retried(server: ModelServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as err:
        download_file(server.url("nope.pth"), tmp_path / "nope.pth", sleep=no_sleep)
    assert "404" in err.value.message
    assert len(server.log) == 1


# --- catalog entries: safe paths, mirrors, unverified files -----------------------------------


def entry(file: str, data: bytes | None, folder: str = "upscale_models", **kw) -> CatalogEntry:
    values = dict(
        name="test-model",
        task="upscale",
        family="test",
        file=file,
        size=len(data) if data is not None else None,
        sha256=sha(data) if data is not None else None,
        sha256_source="computed by the test",
        licence="MIT",
        non_commercial=False,
        restricted_use=False,
        url="https://example.invalid/never-used",
        folder=folder,
        description="A test model.",
    )
    values.update(kw)
    return CatalogEntry(**values)


@pytest.mark.parametrize(
    "name", ["../evil.pth", "..", ".", "/etc/passwd", "sub/dir.pth", "a\\b.pth", "C:evil.pth", ""]
)
def test_file_names_with_paths_are_rejected(name: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError):
        check_file_name(name)
    with pytest.raises(UnsafePathError):
        model_target(tmp_path / "models", entry(name, DATA))


def test_traversal_in_the_catalog_never_writes_outside(server: ModelServer, tmp_path: Path) -> None:
    server.files["evil.pth"] = Served(DATA)
    root = tmp_path / "models"
    for bad in (entry("../../evil.pth", DATA), entry("evil.pth", DATA, folder="../..")):
        with pytest.raises(UnsafePathError):
            download_model(bad, root, base_url=server.url())
    assert server.log == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_mirror_url_keeps_the_catalog_hash(
    server: ModelServer, tmp_path: Path, monkeypatch
) -> None:
    name = "RestoreFormer++.ckpt"
    server.files[name] = Served(DATA)
    monkeypatch.setenv(BASE_URL_ENV, server.url())
    model = entry(name, DATA, folder="facerestore_models")
    assert resolve_url(model) == server.url() + "RestoreFormer%2B%2B.ckpt"
    result = download_model(model, tmp_path / "models", backoff=0)
    assert result.status == "downloaded"
    assert result.path == tmp_path / "models" / "facerestore_models" / name
    assert result.path.read_bytes() == DATA
    # a mirror serving other bytes under the same name is caught by the catalog's hash
    server.files[name] = Served(payload(len(DATA), seed=3))
    with pytest.raises(ChecksumMismatchError):
        download_model(model, tmp_path / "other", backoff=0)
    assert not (tmp_path / "other" / "facerestore_models" / name).exists()


def test_a_good_installed_file_is_kept(server: ModelServer, tmp_path: Path) -> None:
    server.files["m.pth"] = Served(payload(len(DATA), seed=4))
    model = entry("m.pth", DATA)
    elsewhere = tmp_path / "comfyui" / "models"
    (elsewhere / "upscale_models").mkdir(parents=True)
    (elsewhere / "upscale_models" / "m.pth").write_bytes(DATA)
    result = download_model(
        model, tmp_path / "models", search_roots=[elsewhere], base_url=server.url()
    )
    assert (result.status, result.path) == ("present", elsewhere / "upscale_models" / "m.pth")
    assert server.log == []


def test_unverified_entry_needs_explicit_consent(server: ModelServer, tmp_path: Path) -> None:
    server.files["u.pth"] = Served(DATA)
    model = entry("u.pth", None)
    with pytest.raises(UnverifiedModelError):
        download_model(model, tmp_path, base_url=server.url())
    assert server.log == []
    result = download_model(model, tmp_path, base_url=server.url(), allow_unverified=True)
    assert result.sha256 == sha(DATA) and result.path.read_bytes() == DATA


# --- the CLI ----------------------------------------------------------------------------------

BIN = Path(sys.executable).parent / "restora"
CLI = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "backend.cli"]


def restora(*args: str | Path, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        env={**os.environ, **env},
    )


@pytest.fixture
def cli_catalog(server: ModelServer, tmp_path: Path) -> dict[str, str]:
    """A catalog of three test files served by the local server; the env that uses them."""
    files = {
        "free": ("free-x4.pth", payload(200_000, seed=10), "upscale_models", False, True),
        "nc": ("nc-face.pth", payload(120_000, seed=11), "facerestore_models", True, True),
        "loose": ("loose.pth", payload(50_000, seed=12), "upscale_models", False, False),
    }
    models = []
    for name, (file, data, folder, non_commercial, verified) in files.items():
        server.files[file] = Served(data)
        models.append(
            entry(
                file,
                data if verified else None,
                folder=folder,
                name=name,
                non_commercial=non_commercial,
                licence="CC-BY-NC-4.0" if non_commercial else "MIT",
                sha256_source="computed by the test",
                description="Test file." + ("" if verified else " Needs --allow-unverified."),
            ).to_dict()
        )
        if not verified:
            models[-1]["size"] = None
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"version": 1, "models": models}))
    return {
        "RESTORA_CATALOG": str(path),
        BASE_URL_ENV: server.url(),
        "RESTORA_MODELS": "",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def test_cli_download_then_verify_then_corrupt(
    server: ModelServer, cli_catalog: dict[str, str], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    result = restora("models", "download", "free", "--dest", models, env=cli_catalog)
    assert result.returncode == 0, result.stderr
    installed = models / "upscale_models" / "free-x4.pth"
    assert installed.read_bytes() == server.files["free-x4.pth"].data
    assert "downloaded" in result.stdout and str(installed) in result.stdout
    assert "100.0%" in result.stderr  # the progress bar

    again = restora("models", "download", "free", "--dest", models, env=cli_catalog)
    assert again.returncode == 0 and again.stdout.startswith("present")
    assert len(server.hits("free-x4.pth")) == 1

    listing = restora("models", "catalog", "--models-dir", models, env=cli_catalog)
    assert re.search(r"free\s+upscale\s+200\.0 kB\s+MIT\s+yes", listing.stdout), listing.stdout
    assert re.search(r"nc\s+upscale\s+120\.0 kB\s+CC-BY-NC-4.0 \(NC\)\s+-", listing.stdout)

    (models / "upscale_models" / "mine.safetensors").write_bytes(b"user model")
    ok = restora("models", "verify", "--models-dir", models, env=cli_catalog)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert re.search(r"^ok\s+free\s+.*free-x4\.pth$", ok.stdout, re.M)
    assert re.search(r"^unknown\s+-\s+.*mine\.safetensors", ok.stdout, re.M)

    data = bytearray(installed.read_bytes())
    data[1234] ^= 0xFF  # same size, one byte wrong
    installed.write_bytes(bytes(data))
    bad = restora("models", "verify", "--models-dir", models, env=cli_catalog)
    assert bad.returncode == 1
    assert re.search(r"^CORRUPT\s+free\s+", bad.stdout, re.M)
    assert sha(server.files["free-x4.pth"].data) in bad.stdout and sha(bytes(data)) in bad.stdout

    named = restora("models", "verify", "nc", "--models-dir", models, env=cli_catalog)
    assert named.returncode == 1 and re.search(r"^MISSING\s+nc", named.stdout, re.M)


def test_cli_asks_before_a_non_commercial_licence(
    server: ModelServer, cli_catalog: dict[str, str], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    declined = restora("models", "download", "nc", "--dest", models, env=cli_catalog, stdin="n\n")
    assert declined.returncode == 1
    assert "CC-BY-NC-4.0 (non-commercial use only)" in declined.stderr
    assert "skipped" in declined.stderr and server.log == []

    accepted = restora("models", "download", "nc", "--dest", models, env=cli_catalog, stdin="y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert (models / "facerestore_models" / "nc-face.pth").is_file()

    quiet = restora(
        "models", "download", "nc", "--yes", "-q", "--dest", tmp_path / "m2", env=cli_catalog
    )
    assert quiet.returncode == 0 and "[y/N]" not in quiet.stderr and "%" not in quiet.stderr


def test_cli_refuses_unknown_and_unverified_names(
    server: ModelServer, cli_catalog: dict[str, str], tmp_path: Path
) -> None:
    unknown = restora("models", "download", "fre", "--dest", tmp_path, env=cli_catalog)
    assert unknown.returncode == 2
    assert "No model named 'fre'" in unknown.stderr and "Did you mean: free" in unknown.stderr

    refused = restora("models", "download", "loose", "--dest", tmp_path, env=cli_catalog)
    assert refused.returncode == 2 and "--allow-unverified" in refused.stderr
    assert server.log == []

    allowed = restora(
        "models", "download", "loose", "--allow-unverified", "--dest", tmp_path, env=cli_catalog
    )
    assert allowed.returncode == 0, allowed.stderr
    assert sha(server.files["loose.pth"].data) in allowed.stderr


def test_cli_base_url_option_overrides_the_env(
    server: ModelServer, cli_catalog: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_catalog, BASE_URL_ENV: "http://127.0.0.1:9/unreachable"}
    result = restora(
        "models", "download", "free", "--base-url", server.url(), "--dest", tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "upscale_models" / "free-x4.pth").is_file()


def test_cli_offline_says_the_host_is_unreachable_and_leaves_nothing(
    cli_catalog: dict[str, str], tmp_path: Path
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**cli_catalog, BASE_URL_ENV: f"http://127.0.0.1:{port}"}
    dest = tmp_path / "fresh-models"
    result = restora("models", "download", "free", "--dest", dest, "--retries", "0", env=env)
    assert result.returncode == 2
    assert f"127.0.0.1:{port} could not be reached" in result.stderr
    assert "--base-url" in result.stderr and "resume" not in result.stderr
    assert not dest.exists()  # no .part, no empty folders


def test_catalog_and_verify_recognise_the_imported_defaults(real_models: Path) -> None:
    env = {"RESTORA_MODELS": ""}
    listing = restora(
        "models", "catalog", "--task", "upscale", "--models-dir", real_models, env=env
    )
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"^realesrgan-x4plus\s.*\sdefault\s+the offline default", listing.stdout, re.M)
    verify = restora("models", "verify", "--models-dir", real_models, env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert re.search(
        r"^ok\s+realesrgan-x4plus\s+.*realesrgan-x4plus\.safetensors", verify.stdout, re.M
    )
    assert "unknown" not in verify.stdout and "0 unknown" in verify.stderr
    named = restora("models", "verify", "realesrgan-x4plus", "--models-dir", real_models, env=env)
    assert named.returncode == 0 and "MISSING" not in named.stdout
